package dispatch

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// upErr is an upstream error as the gateway reports it.
type upErr struct {
	o  pool.Outcome
	ra time.Duration
}

func (e *upErr) Error() string             { return "upstream: " + e.o.String() }
func (e *upErr) Outcome() pool.Outcome     { return e.o }
func (e *upErr) RetryAfter() time.Duration { return e.ra }

func fail(o pool.Outcome) error { return &upErr{o: o} }

func specs(n, limit int) []pool.Spec {
	out := make([]pool.Spec, n)
	for i := range out {
		id := fmt.Sprintf("c%02d", i)
		out[i] = pool.Spec{Credential: pool.Credential{ID: id, Email: id + "@example.com", Token: "token-" + id},
			Enabled: true, MaxConcurrency: limit}
	}
	return out
}

// env is a running pool with a dispatcher over it.
type env struct {
	p    *pool.Pool
	d    *Dispatcher
	stop func()
}

func newEnv(t testing.TB, creds []pool.Spec, cfg Config, deps Deps) *env {
	t.Helper()
	return newPoolEnv(t, creds, pool.Deps{}, cfg, deps)
}

// newPoolEnv is newEnv with the pool's own collaborators (a Checker).
func newPoolEnv(t testing.TB, creds []pool.Spec, pd pool.Deps, cfg Config, deps Deps) *env {
	t.Helper()
	p, err := pool.New(pool.Config{}, pd)
	if err != nil {
		t.Fatal(err)
	}
	p.Sync(creds, nil)
	d, err := New(cfg, p, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var once sync.Once
	e := &env{p: p, d: d, stop: func() { once.Do(func() { cancel(); <-done }) }}
	t.Cleanup(e.stop)
	return e
}

func (e *env) status(t testing.TB, id string) pool.CredentialStatus {
	t.Helper()
	for _, c := range e.p.Status().Credentials {
		if c.ID == id {
			return c
		}
	}
	t.Fatalf("no credential %s", id)
	return pool.CredentialStatus{}
}

// script answers attempts in order with its errors (nil beyond them) and
// records which credential each attempt used, and when.
type script struct {
	mu    sync.Mutex
	errs  []error
	ids   []string
	times []time.Time
}

func (s *script) call(ctx context.Context, cred pool.Credential) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := len(s.ids)
	s.ids = append(s.ids, cred.ID)
	s.times = append(s.times, time.Now())
	if i < len(s.errs) {
		return s.errs[i]
	}
	return nil
}

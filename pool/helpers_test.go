package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

func spec(id string, limit int) Spec {
	return Spec{Credential: Credential{ID: id, Email: id + "@example.com", Token: "secret-token-" + id}, Enabled: true, MaxConcurrency: limit}
}

func specs(n, limit int) []Spec {
	out := make([]Spec, n)
	for i := range out {
		out[i] = spec(fmt.Sprintf("c%03d", i), limit)
	}
	return out
}

func newPool(t testing.TB, cfg Config, deps Deps) *Pool {
	t.Helper()
	p, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// start runs p and returns a stop function that cancels it and waits for Run.
func start(t testing.TB, p *Pool) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitRunning spins until Run has started the actors (outside synctest).
func waitRunning(t testing.TB, p *Pool) {
	t.Helper()
	for i := 0; p.phase.Load() != phaseRunning; i++ {
		if i > 1000 {
			t.Fatal("pool did not start")
		}
		time.Sleep(time.Millisecond)
	}
}

func mustAcquire(t testing.TB, p *Pool, exclude ...string) *Lease {
	t.Helper()
	l, err := p.Acquire(exclude, 1)
	if err != nil {
		t.Fatalf("Acquire(%v): %v", exclude, err)
	}
	return l
}

func statusOf(t testing.TB, p *Pool, id string) CredentialStatus {
	t.Helper()
	for _, c := range p.Status().Credentials {
		if c.ID == id {
			return c
		}
	}
	t.Fatalf("no status for %s", id)
	return CredentialStatus{}
}

// memStates is an in-memory StateStore.
type memStates struct {
	mu     sync.Mutex
	states map[string]store.CredentialState
	writes int
}

func newMemStates() *memStates { return &memStates{states: map[string]store.CredentialState{}} }

func (m *memStates) SetCredentialState(_ context.Context, s store.CredentialState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states[s.CredentialID] = s
	m.writes++
	return nil
}

func (m *memStates) get(id string) (store.CredentialState, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.states[id]
	return s, ok
}

func (m *memStates) list() []store.CredentialState {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.CredentialState
	for _, s := range m.states {
		out = append(out, s)
	}
	return out
}

// scriptedChecker answers credits checks with a settable outcome and
// records when it was called.
type scriptedChecker struct {
	mu      sync.Mutex
	outcome Outcome
	err     error
	calls   []time.Time
}

func (c *scriptedChecker) Check(ctx context.Context, cred Credential) (Outcome, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, time.Now())
	return c.outcome, c.err
}

func (c *scriptedChecker) set(o Outcome) {
	c.mu.Lock()
	c.outcome = o
	c.mu.Unlock()
}

func (c *scriptedChecker) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}

// retryErr is an upstream error with a retry-after.
type retryErr struct{ d time.Duration }

func (e retryErr) Error() string             { return "429 from upstream" }
func (e retryErr) RetryAfter() time.Duration { return e.d }

var errBoom = errors.New("boom")

// settle waits until every actor has run and handled a no-op message.
func settle(t testing.TB, p *Pool) {
	t.Helper()
	waitRunning(t, p)
	for _, e := range p.snap.Load().list {
		ack := make(chan struct{}, 1)
		if e.a.send(message{kind: msgControl, ctl: &control{ev: event{kind: evTick}, ack: ack}}) {
			<-ack
		}
	}
}

package dispatch

import (
	"context"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

type upErr struct {
	o  pool.Outcome
	ra time.Duration
}

func (e *upErr) Error() string             { return "upstream " + e.o.String() }
func (e *upErr) Outcome() pool.Outcome     { return e.o }
func (e *upErr) RetryAfter() time.Duration { return e.ra }

func TestSmoke(t *testing.T) {
	p, err := pool.New(pool.Config{}, pool.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	p.Sync([]pool.Spec{{Credential: pool.Credential{ID: "a", Email: "a@x", Token: "t"}, Enabled: true},
		{Credential: pool.Credential{ID: "b", Email: "b@x", Token: "t"}, Enabled: true}}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	d, err := New(Config{}, p, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	l, err := d.Do(ctx, func(ctx context.Context, c pool.Credential) error {
		seen = append(seen, c.ID)
		if len(seen) == 1 {
			return &upErr{o: pool.OutcomeRateLimited, ra: time.Minute}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	l.Done(pool.OutcomeSuccess, pool.Usage{InputTokens: 3, OutputTokens: 4})
	t.Logf("seen %v attempts %d", seen, l.Attempts())
	time.Sleep(10 * time.Millisecond)
	t.Logf("%+v", p.Status())
	_, err = d.Do(ctx, func(ctx context.Context, c pool.Credential) error {
		return &upErr{o: pool.OutcomeRateLimited, ra: 41 * time.Second}
	})
	t.Logf("err: %v", err)
	cancel()
	<-done
}

package pool

import (
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/internal/redistest"
	"github.com/atlassian-proxy/atlassian-proxy/store"
	redisstore "github.com/atlassian-proxy/atlassian-proxy/store/redis"
)

// A state write that fails while the shared store is away is tried again
// once it answers: other replicas learn of cooldowns only from the store.
func TestStateWriteRetriedAfterStoreOutage(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	rs, err := redisstore.Open(ctx, redisstore.Options{URL: srv.URL(), OpTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	a := spec("a", 4)
	if err := rs.CreateCredential(ctx, store.Credential{ID: a.ID, Email: a.Email, Token: []byte("sealed"), Enabled: true}); err != nil {
		t.Fatal(err)
	}
	p := newPool(t, Config{}, Deps{States: rs})
	p.Sync([]Spec{a}, nil)
	start(t, p)
	waitRunning(t, p)

	// Writes hang for 2 s (the commands time out after 300 ms).
	if err := rs.Client().Do(ctx, "CLIENT", "PAUSE", "2000", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	mustAcquire(t, p).Finish(Result{Outcome: OutcomeRateLimited, RetryAfter: time.Hour})
	deadline := time.Now().Add(15 * time.Second)
	for {
		states, err := rs.ListCredentialStates(ctx)
		if err == nil && len(states) == 1 && states[0].State == store.StateCooling {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cooldown never reached the store after it came back: %+v, %v", states, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

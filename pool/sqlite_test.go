package pool

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
	"github.com/atlassian-proxy/atlassian-proxy/store/sqlite"
)

// TestStatesInSQLite persists cooldowns through the real embedded store and
// restores them in a second pool, as a restart would.
func TestStatesInSQLite(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "proxy.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	all := []Spec{spec("a", 4), spec("b", 4), spec("c", 4)}
	for _, s := range all {
		if err := db.CreateCredential(ctx, store.Credential{ID: s.ID, Email: s.Email, Token: []byte("sealed"), Enabled: true}); err != nil {
			t.Fatal(err)
		}
	}

	p := newPool(t, Config{}, Deps{States: db})
	p.Sync(all, nil)
	stop := start(t, p)
	waitRunning(t, p)
	mustAcquire(t, p, "b", "c").Finish(Result{Outcome: OutcomeQuotaExhausted, RetryAfter: time.Hour})
	mustAcquire(t, p, "a", "c").Done(OutcomeUnauthorized, Usage{})
	stop() // flushes pending writes

	states, err := db.ListCredentialStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 2 {
		t.Fatalf("got %d persisted states (%+v), want 2", len(states), states)
	}

	q := newPool(t, Config{}, Deps{States: db})
	q.Sync(all, states)
	start(t, q)
	waitRunning(t, q)
	want := map[string]string{"a": StateCooling, "b": StateInvalid, "c": StateReady}
	for id, w := range want {
		if st := statusOf(t, q, id); st.State != w {
			t.Errorf("%s after restart: got %s, want %s", id, st.State, w)
		}
	}
	// Our own states, read back by a later Sync, change nothing (no echo
	// re-applied) and a reset is written through.
	if err := q.Reset("a"); err != nil {
		t.Fatal(err)
	}
	q.Sync(all, states)
	settle(t, q)
	if st := statusOf(t, q, "a"); st.State != StateReady {
		t.Errorf("a: a stale stored state undid the reset: %s", st.State)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		states, err = db.ListCredentialStates(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(states) == 2 && states[0].State == store.StateReady || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(states) != 2 || states[0].CredentialID != "a" || states[0].State != store.StateReady || states[1].State != store.StateInvalid {
		t.Errorf("after resetting a: got %+v, want a ready and b invalid", states)
	}
}

package pool

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// flakyStates is a StateStore whose writes fail with err (nil: they succeed
// into memStates).
type flakyStates struct {
	memStates
	errMu sync.Mutex
	err   error
	tries int
}

func (f *flakyStates) setErr(err error) {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	f.err = err
}

func (f *flakyStates) attempts() int {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	return f.tries
}

func (f *flakyStates) SetCredentialState(ctx context.Context, s store.CredentialState) error {
	f.errMu.Lock()
	f.tries++
	err := f.err
	f.errMu.Unlock()
	if err != nil {
		return err
	}
	return f.memStates.SetCredentialState(ctx, s)
}

// A state write that fails is tried again every persistRetry until the
// store takes it, with one warning per outage; a write refused because the
// credential was removed meanwhile is dropped, without a warning.
func TestStateWriteRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &gatedHandler{attr: map[string]int64{}}
		states := &flakyStates{memStates: *newMemStates()}
		p := newPool(t, Config{}, Deps{States: states, Logger: slog.New(h)})
		p.Sync([]Spec{spec("a", 1), spec("b", 1)}, nil)
		start(t, p)
		synctest.Wait()
		const warning = "pool: persisting a credential state failed"

		// The store is away: the cooldown is kept and written once it is back.
		states.setErr(errors.New("store away"))
		mustAcquire(t, p, "b").Finish(Result{Outcome: OutcomeRateLimited, RetryAfter: time.Hour})
		synctest.Wait()
		time.Sleep(3 * persistRetry)
		synctest.Wait()
		if n := states.attempts(); n < 3 {
			t.Errorf("%d write attempts during the outage, want one every %s", n, persistRetry)
		}
		if _, ok := states.get("a"); ok {
			t.Fatal("a state was stored while the store failed")
		}
		states.setErr(nil)
		time.Sleep(persistRetry)
		synctest.Wait()
		if s, ok := states.get("a"); !ok || s.State != store.StateCooling {
			t.Errorf("a after the outage: stored %+v, want cooling", s)
		}
		if n := h.count(warning); n != 1 {
			t.Errorf("%d warnings for one outage, want 1", n)
		}

		// A second outage is reported again.
		states.setErr(errors.New("store away again"))
		if err := p.Reset("a"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n := h.count(warning); n != 2 {
			t.Errorf("%d warnings after a second outage, want 2", n)
		}
		states.setErr(nil)
		time.Sleep(persistRetry)
		synctest.Wait()
		if s, ok := states.get("a"); !ok || s.State != store.StateReady {
			t.Errorf("a after the reset: stored %+v, want ready", s)
		}

		// The credential is gone from the store: not tried again, not logged.
		states.setErr(store.ErrNotFound)
		before := states.attempts()
		mustAcquire(t, p, "a").Finish(Result{Outcome: OutcomeRateLimited, RetryAfter: time.Hour})
		synctest.Wait()
		time.Sleep(3 * persistRetry)
		synctest.Wait()
		if n := states.attempts() - before; n != 1 {
			t.Errorf("%d write attempts for a removed credential, want 1", n)
		}
		if n := h.count(warning); n != 2 {
			t.Errorf("%d warnings, want still 2: a removed credential is not a store failure", n)
		}
	})
}

package pool

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// TestSyncWhileLeasesRun adds, changes and removes credentials while
// requests lease them. Run it with -race: Sync once read a new actor's state
// after starting its goroutine, which an admission had already changed.
func TestSyncWhileLeasesRun(t *testing.T) {
	p := newPool(t, Config{}, Deps{})
	p.Sync(specs(2, 2), nil)
	start(t, p)
	waitRunning(t, p)

	stop := make(chan struct{})
	var leased atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				l, err := p.Acquire(nil, 1)
				switch {
				case err == nil:
					leased.Add(1)
					l.Done(OutcomeSuccess, Usage{})
				case errors.Is(err, ErrBusy), errors.Is(err, ErrUnavailable):
					time.Sleep(10 * time.Microsecond)
				default:
					t.Errorf("Acquire: %v", err)
					return
				}
			}
		})
	}
	for round := range 50 {
		// Grow by four new credentials each round (new actors start while
		// the workers pick them at once: they are the least loaded), change
		// a limit and drop the oldest now and then.
		n := 2 + 4*(round+1)
		sp := specs(n, 2)
		sp[0].MaxConcurrency = 1 + round%3
		if round%5 == 4 {
			sp = sp[1:]
		}
		p.Sync(sp, nil)
	}
	close(stop)
	wg.Wait()
	if leased.Load() == 0 {
		t.Fatal("no lease was granted")
	}
	settle(t, p)
	for _, c := range p.Status().Credentials {
		if c.InFlight != 0 {
			t.Errorf("%s: %d in flight after every lease ended", c.ID, c.InFlight)
		}
	}
}

// TestSyncUnchanged checks that a resync that changes nothing messages no
// actor and keeps the snapshot, while real changes still apply.
func TestSyncUnchanged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool(t, Config{}, Deps{})
		sp := specs(1000, 4)
		p.Sync(sp, nil)
		start(t, p)
		synctest.Wait()

		snap := p.snap.Load()
		allocs := testing.AllocsPerRun(10, func() { p.Sync(sp, nil) })
		if allocs > 2 {
			t.Errorf("an unchanged resync of 1,000 credentials allocated %v times, want at most 2 (no message, no new snapshot)", allocs)
		}
		if p.snap.Load() != snap {
			t.Error("an unchanged resync published a new snapshot")
		}

		// A changed limit and a new secret reach their actors.
		sp2 := append([]Spec(nil), sp...)
		sp2[3].MaxConcurrency = 1
		sp2[7].Token = "a-new-secret-token"
		p.Sync(sp2, nil)
		synctest.Wait()
		if got := statusOf(t, p, "c003").Limit; got != 1 {
			t.Errorf("c003 limit: got %d, want 1", got)
		}
		if p.snap.Load() != snap {
			t.Error("a resync with the same credentials in the same order published a new snapshot")
		}
		l := mustAcquire(t, p, idsExcept(sp2, "c007")...)
		if got := l.Credential().Token; got != "a-new-secret-token" {
			t.Errorf("c007 token: got %q, want the new one", got)
		}
		l.Done(OutcomeSuccess, Usage{})

		// A stored state is offered once, and again only when newer.
		cooling := store.CredentialState{CredentialID: "c005", State: store.StateCooling,
			Reason: OutcomeRateLimited.String(), Until: time.Now().Add(time.Minute), UpdatedAt: time.Now()}
		p.Sync(sp2, []store.CredentialState{cooling})
		synctest.Wait()
		if st := statusOf(t, p, "c005"); st.State != StateCooling {
			t.Fatalf("c005: got %s, want cooling from the stored state", st.State)
		}
		if err := p.Reset("c005"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		allocs = testing.AllocsPerRun(10, func() { p.Sync(sp2, []store.CredentialState{cooling}) })
		if allocs > 3 {
			t.Errorf("a resync with an already offered state allocated %v times, want at most 3", allocs)
		}
		synctest.Wait()
		if st := statusOf(t, p, "c005"); st.State != StateReady {
			t.Errorf("c005: got %s, want ready (the stored state was already offered)", st.State)
		}
		newer := cooling
		newer.UpdatedAt, newer.Until = time.Now(), time.Now().Add(time.Minute)
		p.Sync(sp2, []store.CredentialState{newer})
		synctest.Wait()
		if st := statusOf(t, p, "c005"); st.State != StateCooling {
			t.Errorf("c005: got %s, want cooling from the newer stored state", st.State)
		}

		// Reordering publishes a new snapshot in the new order.
		rev := make([]Spec, len(sp2))
		for i, s := range sp2 {
			rev[len(sp2)-1-i] = s
		}
		p.Sync(rev, nil)
		if p.snap.Load() == snap {
			t.Error("a reorder kept the old snapshot")
		}
		if got := p.Status().Credentials[0].ID; got != "c999" {
			t.Errorf("first credential after the reorder: got %s, want c999", got)
		}
	})
}

// TestSyncDuplicatesAndRemovals covers the bookkeeping of the cheap path:
// duplicate and empty ids are ignored, removals are found without a spec
// map, and a removed credential's slot is reused.
func TestSyncDuplicatesAndRemovals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool(t, Config{}, Deps{})
		start(t, p)
		p.Sync([]Spec{spec("a", 1), spec("b", 1), spec("a", 2), {}, spec("c", 1), spec("c", 3)}, nil)
		synctest.Wait()
		var got []string
		for _, c := range p.Status().Credentials {
			got = append(got, fmt.Sprintf("%s/%d", c.ID, c.Limit))
		}
		if fmt.Sprint(got) != "[a/1 b/1 c/1]" {
			t.Errorf("got %v, want [a/1 b/1 c/1] (first of each id wins)", got)
		}
		p.Sync([]Spec{spec("c", 1), spec("a", 1), spec("a", 5)}, nil) // b removed, reordered
		synctest.Wait()
		got = got[:0]
		for _, c := range p.Status().Credentials {
			got = append(got, fmt.Sprintf("%s/%d", c.ID, c.Limit))
		}
		if fmt.Sprint(got) != "[c/1 a/1]" {
			t.Errorf("got %v, want [c/1 a/1]", got)
		}
		p.Sync([]Spec{spec("c", 1), spec("a", 1), spec("d", 1)}, nil)
		synctest.Wait()
		if n := len(p.snap.Load().slots); n != 3 {
			t.Errorf("%d slots, want 3 (d reuses b's)", n)
		}
		leases := map[string]bool{}
		for range 3 {
			leases[mustAcquire(t, p).Credential().ID] = true
		}
		if len(leases) != 3 || !leases["d"] {
			t.Errorf("leased %v, want a, c and d", leases)
		}
	})
}

func idsExcept(sp []Spec, keep string) []string {
	var out []string
	for _, s := range sp {
		if s.ID != keep {
			out = append(out, s.ID)
		}
	}
	return out
}

// TestSyncAppliedOnReturn: once Sync returns, what it brought (a stored
// cooldown, a recovery, a new limit, a disabled credential) shows in the
// pool's status at once, without waiting for the actors to catch up.
// (It used to be sent to the actors and applied a moment later, which a
// status read right after a resync could miss on a busy machine.)
func TestSyncAppliedOnReturn(t *testing.T) {
	p := newPool(t, Config{}, Deps{})
	sp := specs(1, 4)
	p.Sync(sp, nil)
	start(t, p)
	waitRunning(t, p)
	id := sp[0].Credential.ID
	at := time.Now()
	for i := range 300 {
		at = at.Add(time.Millisecond)
		sp[0].MaxConcurrency = 1 + i%4
		sp[0].Enabled = i%7 != 6
		var st store.CredentialState
		wantCooling := i%2 == 0
		if wantCooling {
			st = store.CredentialState{CredentialID: id, State: "cooling", Reason: "rate_limited", Until: time.Now().Add(time.Hour), UpdatedAt: at}
		} else {
			st = store.CredentialState{CredentialID: id, State: store.StateReady, Reason: "success", UpdatedAt: at}
		}
		p.Sync(sp, []store.CredentialState{st})
		got := p.Status().Credentials[0]
		switch {
		case got.Enabled != sp[0].Enabled || got.Limit != sp[0].MaxConcurrency:
			t.Fatalf("round %d: enabled %v limit %d, want %v and %d", i, got.Enabled, got.Limit, sp[0].Enabled, sp[0].MaxConcurrency)
		case !sp[0].Enabled:
			// a disabled credential shows as disabled, whatever its cooldown
		case wantCooling && got.State != StateCooling:
			t.Fatalf("round %d: state %s after a stored cooldown, want cooling", i, got.State)
		case !wantCooling && got.State == StateCooling:
			t.Fatalf("round %d: still cooling after a stored recovery", i)
		}
	}
}

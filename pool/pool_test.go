package pool

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/atlassian-proxy/atlassian-proxy/internal/metrictest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

func TestAcquireLeastInFlightRoundRobin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool(t, Config{}, Deps{})
		p.Sync([]Spec{spec("a", 2), spec("b", 2), spec("c", 2)}, nil)
		start(t, p)
		synctest.Wait()

		var leases []*Lease
		count := map[string]int{}
		for i := range 6 {
			l := mustAcquire(t, p)
			leases = append(leases, l)
			count[l.Credential().ID]++
			// Least in flight first: the first three go to three different credentials.
			if i == 2 && len(count) != 3 {
				t.Fatalf("after 3 picks: got %v, want one each", count)
			}
		}
		if count["a"] != 2 || count["b"] != 2 || count["c"] != 2 {
			t.Fatalf("got %v, want 2 each", count)
		}
		if _, err := p.Acquire(nil, 1); !errors.Is(err, ErrBusy) {
			t.Fatalf("all full: got %v, want ErrBusy", err)
		}
		freed := leases[3].Credential().ID
		leases[3].Done(OutcomeSuccess, Usage{})
		synctest.Wait()
		if l := mustAcquire(t, p); l.Credential().ID != freed {
			t.Errorf("got %s, want the one with a free slot, %s", l.Credential().ID, freed)
		}
		// Round robin over ties: with nothing in flight, successive picks rotate.
		for _, l := range leases {
			l.Done(OutcomeSuccess, Usage{})
		}
		synctest.Wait()
	})
}

func TestAcquireRotatesOverTies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool(t, Config{}, Deps{})
		p.Sync(specs(5, 4), nil)
		start(t, p)
		synctest.Wait()
		var got []string
		for range 10 {
			l := mustAcquire(t, p)
			got = append(got, l.Credential().ID)
			l.Done(OutcomeSuccess, Usage{})
			synctest.Wait()
		}
		want := "c000 c001 c002 c003 c004 c000 c001 c002 c003 c004"
		if g := strings.Join(got, " "); g != want {
			t.Errorf("got  %s\nwant %s", g, want)
		}
	})
}

func TestAcquireExcludes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool(t, Config{}, Deps{})
		p.Sync([]Spec{spec("a", 1), spec("b", 1)}, nil)
		start(t, p)
		synctest.Wait()
		l := mustAcquire(t, p, "a")
		if l.Credential().ID != "b" {
			t.Fatalf("got %s, want b", l.Credential().ID)
		}
		// b is full and a is excluded: nothing that could free up for this request.
		if _, err := p.Acquire([]string{"a"}, 2); !errors.Is(err, ErrBusy) {
			t.Errorf("b full, a excluded: got %v, want ErrBusy (b will free)", err)
		}
		if _, err := p.Acquire([]string{"a", "b"}, 2); !errors.Is(err, ErrUnavailable) {
			t.Errorf("all excluded: got %v, want ErrUnavailable", err)
		}
		if l.Attempts() != 1 {
			t.Errorf("attempts: got %d, want 1", l.Attempts())
		}
		l.Done(OutcomeSuccess, Usage{})
	})
}

func TestAcquireBeforeRunAndAfterStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool(t, Config{}, Deps{})
		p.Sync([]Spec{spec("a", 1)}, nil)
		var notified atomic.Int64
		p.OnCapacity(func(n int) { notified.Add(int64(n)) })
		if _, err := p.Acquire(nil, 1); !errors.Is(err, ErrBusy) {
			t.Fatalf("before Run: got %v, want ErrBusy", err)
		}
		stop := start(t, p)
		synctest.Wait()
		if notified.Load() != 1 {
			t.Errorf("Run announced %d free slots, want 1", notified.Load())
		}
		l := mustAcquire(t, p)
		stop()
		if _, err := p.Acquire(nil, 1); !errors.Is(err, ErrClosed) {
			t.Errorf("after stop: got %v, want ErrClosed", err)
		}
		l.Done(OutcomeSuccess, Usage{}) // harmless after stop
		l.Done(OutcomeSuccess, Usage{}) // and twice
	})
}

func TestCooldownExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool(t, Config{}, Deps{})
		p.Sync([]Spec{spec("a", 4)}, nil)
		var freed atomic.Int64
		p.OnCapacity(func(n int) { freed.Add(int64(n)) })
		start(t, p)
		synctest.Wait()
		freed.Store(0)

		l := mustAcquire(t, p)
		l.Finish(Result{Outcome: OutcomeRateLimited, RetryAfter: 10 * time.Second, Err: retryErr{10 * time.Second}})
		synctest.Wait()
		st := statusOf(t, p, "a")
		if st.State != StateCooling || st.Reason != "rate_limited" || !st.CooldownUntil.Equal(time.Now().Add(10*time.Second)) {
			t.Fatalf("got %+v, want cooling for 10 s", st)
		}
		if st.LastError != "429 from upstream" {
			t.Errorf("last error: got %q", st.LastError)
		}
		if _, err := p.Acquire(nil, 1); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("while cooling: got %v, want ErrUnavailable", err)
		}
		time.Sleep(10*time.Second - time.Millisecond)
		synctest.Wait()
		if _, err := p.Acquire(nil, 1); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("1 ms before the end: got %v, want ErrUnavailable", err)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if freed.Load() != 4 {
			t.Errorf("expiry announced %d free slots, want 4", freed.Load())
		}
		mustAcquire(t, p).Done(OutcomeSuccess, Usage{})
		if st := statusOf(t, p, "a"); st.State != StateReady {
			t.Errorf("got %s, want ready", st.State)
		}
	})
}

func TestBackoffCooldowns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool(t, Config{}, Deps{})
		p.Sync([]Spec{spec("a", 4)}, nil)
		start(t, p)
		synctest.Wait()
		for i, base := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 16 * time.Second} {
			begin := time.Now()
			mustAcquire(t, p).Finish(Result{Outcome: OutcomeServerError, Err: errBoom})
			synctest.Wait()
			st := statusOf(t, p, "a")
			d := st.CooldownUntil.Sub(begin)
			if lo, hi := base*8/10, base*12/10; d < lo || d > hi {
				t.Fatalf("failure %d: cooldown %v, want %v ±20%%", i+1, d, base)
			}
			if st.ConsecutiveFailures != i+1 {
				t.Errorf("consecutive failures: got %d, want %d", st.ConsecutiveFailures, i+1)
			}
			time.Sleep(d)
			synctest.Wait()
		}
		mustAcquire(t, p).Done(OutcomeSuccess, Usage{})
		synctest.Wait()
		if st := statusOf(t, p, "a"); st.ConsecutiveFailures != 0 {
			t.Errorf("after a success: %d consecutive failures, want 0", st.ConsecutiveFailures)
		}
	})
}

// TestServerErrorRetryAfter: a 5xx or 529 that says when to come back
// cools the credential for that long (when longer than its own back-off),
// at most 5 minutes.
func TestServerErrorRetryAfter(t *testing.T) {
	tests := []struct {
		name       string
		outcome    Outcome
		retryAfter time.Duration
		lo, hi     time.Duration // the cooldown's bounds
	}{
		{"503 Retry-After 30 s", OutcomeServerError, 30 * time.Second, 30 * time.Second, 30 * time.Second},
		{"529 Retry-After 2 h is capped", OutcomeServerError, 2 * time.Hour, 5 * time.Minute, 5 * time.Minute},
		{"shorter than the back-off", OutcomeServerError, 100 * time.Millisecond, 400 * time.Millisecond, 600 * time.Millisecond},
		{"none: the back-off", OutcomeServerError, 0, 400 * time.Millisecond, 600 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := newPool(t, Config{}, Deps{})
				p.Sync([]Spec{spec("a", 4)}, nil)
				start(t, p)
				synctest.Wait()
				begin := time.Now()
				mustAcquire(t, p).Finish(Result{Outcome: tt.outcome, RetryAfter: tt.retryAfter, Err: errBoom})
				st := statusOf(t, p, "a")
				if d := st.CooldownUntil.Sub(begin); st.State != StateCooling || d < tt.lo || d > tt.hi {
					t.Fatalf("got %s for %v, want cooling for %v to %v", st.State, d, tt.lo, tt.hi)
				}
				if st.Reason != tt.outcome.String() || st.ConsecutiveFailures != 1 {
					t.Errorf("got reason %s and %d failures, want %s and 1", st.Reason, st.ConsecutiveFailures, tt.outcome)
				}
				time.Sleep(st.CooldownUntil.Sub(time.Now()))
				synctest.Wait()
				mustAcquire(t, p).Done(OutcomeSuccess, Usage{})
			})
		})
	}
}

func TestInvalidRecheckCadence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		checker := &scriptedChecker{outcome: OutcomeUnauthorized}
		states := newMemStates()
		p := newPool(t, Config{}, Deps{Checker: checker, States: states})
		p.Sync([]Spec{spec("a", 4), spec("b", 4)}, nil)
		start(t, p)
		synctest.Wait()

		mustAcquire(t, p, "b").Done(OutcomeUnauthorized, Usage{})
		synctest.Wait()
		if st := statusOf(t, p, "a"); st.State != StateInvalid || st.Reason != "unauthorized" {
			t.Fatalf("got %+v, want invalid", st)
		}
		if s, ok := states.get("a"); !ok || s.State != "invalid" {
			t.Fatalf("persisted: got %+v %v, want invalid", s, ok)
		}
		begin := time.Now()
		time.Sleep(5*time.Minute - time.Second)
		synctest.Wait()
		if n := checker.count(); n != 0 {
			t.Fatalf("checked %d times within 5 minutes", n)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if n := checker.count(); n != 1 {
			t.Fatalf("after 5 minutes: %d checks, want 1", n)
		}
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		if n := checker.count(); n != 2 {
			t.Fatalf("after 10 minutes: %d checks, want 2", n)
		}
		for i, c := range checker.calls {
			if want := begin.Add(time.Duration(i+1) * 5 * time.Minute); !c.Equal(want) {
				t.Errorf("check %d at %v, want %v", i, c.Sub(begin), want.Sub(begin))
			}
		}
		checker.set(OutcomeSuccess)
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		if st := statusOf(t, p, "a"); st.State != StateReady {
			t.Fatalf("after a good check: got %s, want ready", st.State)
		}
		if st, ok := states.get("a"); !ok || st.State != store.StateReady {
			t.Errorf("after a good check the stored state is %+v, want ready (so other replicas learn of it)", st)
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := checker.count(); n != 3 {
			t.Errorf("a ready credential was checked: %d checks, want 3", n)
		}
		if st := statusOf(t, p, "b"); st.State != StateReady {
			t.Errorf("b: got %s, want ready", st.State)
		}
	})
}

func TestForbiddenCheck(t *testing.T) {
	tests := []struct {
		check Outcome
		want  string
	}{
		{OutcomeForbidden, StateInvalid},
		{OutcomeUnauthorized, StateInvalid},
		{OutcomeSuccess, StateReady},
		{OutcomeServerError, StateCooling}, // inconclusive: the 403 cooldown runs on
	}
	for _, tt := range tests {
		t.Run(tt.check.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				checker := &scriptedChecker{outcome: tt.check, err: errBoom}
				p := newPool(t, Config{}, Deps{Checker: checker})
				p.Sync([]Spec{spec("a", 4)}, nil)
				start(t, p)
				synctest.Wait()
				mustAcquire(t, p).Done(OutcomeForbidden, Usage{})
				synctest.Wait()
				if n := checker.count(); n != 1 {
					t.Fatalf("a 403 ran %d checks, want 1 at once", n)
				}
				if st := statusOf(t, p, "a"); st.State != tt.want {
					t.Errorf("got %s (%s), want %s", st.State, st.Reason, tt.want)
				}
				time.Sleep(time.Minute)
				synctest.Wait()
				if tt.want == StateCooling {
					if st := statusOf(t, p, "a"); st.State != StateReady {
						t.Errorf("after the 403 cooldown: got %s, want ready", st.State)
					}
				}
			})
		})
	}
}

func TestStatesPersistAndRestore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		states := newMemStates()
		p := newPool(t, Config{}, Deps{States: states})
		all := []Spec{spec("a", 4), spec("b", 4), spec("c", 4)}
		p.Sync(all, nil)
		stop := start(t, p)
		synctest.Wait()
		mustAcquire(t, p, "b", "c").Finish(Result{Outcome: OutcomeQuotaExhausted, RetryAfter: 3 * time.Hour})
		mustAcquire(t, p, "a", "c").Done(OutcomeUnauthorized, Usage{})
		mustAcquire(t, p, "a", "b").Done(OutcomeServerError, Usage{}) // short back-off: not persisted
		synctest.Wait()
		if s, ok := states.get("a"); !ok || s.State != "cooling" || s.Reason != "quota_exhausted" || !s.Until.Equal(time.Now().Add(3*time.Hour)) {
			t.Errorf("a: got %+v", s)
		}
		if s, ok := states.get("b"); !ok || s.State != "invalid" {
			t.Errorf("b: got %+v", s)
		}
		if _, ok := states.get("c"); ok {
			t.Error("c: a back-off cooldown was persisted")
		}
		stop()

		// A restart restores them.
		time.Sleep(time.Hour)
		q := newPool(t, Config{}, Deps{States: states})
		q.Sync(all, states.list())
		start(t, q)
		synctest.Wait()
		if st := statusOf(t, q, "a"); st.State != StateCooling || !st.CooldownUntil.Equal(time.Now().Add(2*time.Hour)) {
			t.Errorf("a after restart: got %+v", st)
		}
		if st := statusOf(t, q, "b"); st.State != StateInvalid {
			t.Errorf("b after restart: got %s", st.State)
		}
		if l := mustAcquire(t, q); l.Credential().ID != "c" {
			t.Errorf("got %s, want c", l.Credential().ID)
		} else {
			l.Done(OutcomeSuccess, Usage{})
		}
		// Reset replaces the persisted state with a ready one.
		if err := q.Reset("b"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if st, ok := states.get("b"); !ok || st.State != store.StateReady {
			t.Errorf("b: stored state after a reset is %+v, want ready", st)
		}
		// A later Sync with the (now stale) states does not undo the reset.
		q.Sync(all, []store.CredentialState{{CredentialID: "b", State: "invalid", Reason: "unauthorized", UpdatedAt: time.Now().Add(-time.Hour)}})
		synctest.Wait()
		if st := statusOf(t, q, "b"); st.State != StateReady {
			t.Errorf("b after a stale Sync: got %s, want ready", st.State)
		}
	})
}

func TestReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool(t, Config{}, Deps{})
		p.Sync([]Spec{spec("a", 4)}, nil)
		if err := p.Reset("nope"); !errors.Is(err, ErrUnknownCredential) {
			t.Errorf("got %v, want ErrUnknownCredential", err)
		}
		if err := p.Reset("a"); err != nil { // before Run
			t.Errorf("before Run: %v", err)
		}
		start(t, p)
		synctest.Wait()
		mustAcquire(t, p).Done(OutcomeUnauthorized, Usage{})
		synctest.Wait()
		if err := p.Reset("a"); err != nil {
			t.Fatal(err)
		}
		if st := statusOf(t, p, "a"); st.State != StateReady {
			t.Errorf("got %s, want ready at once", st.State)
		}
	})
}

func TestSyncLive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool(t, Config{DefaultMaxConcurrency: 2}, Deps{})
		p.Sync([]Spec{spec("a", 0), spec("b", 0)}, nil)
		start(t, p)
		synctest.Wait()

		la := mustAcquire(t, p, "b")
		lb := mustAcquire(t, p, "a")
		// Remove a while its lease is out, disable b, add c with limit 1.
		bOff := spec("b", 0)
		bOff.Enabled = false
		p.Sync([]Spec{bOff, spec("c", 1)}, nil)
		synctest.Wait()
		st := p.Status()
		if len(st.Credentials) != 2 || st.Credentials[0].ID != "b" || st.Credentials[1].ID != "c" {
			t.Fatalf("got %+v", st.Credentials)
		}
		if st.Credentials[0].State != StateDisabled || st.Credentials[0].InFlight != 1 {
			t.Errorf("b: got %+v, want disabled with its request still in flight", st.Credentials[0])
		}
		lc := mustAcquire(t, p)
		if lc.Credential().ID != "c" {
			t.Errorf("got %s, want c", lc.Credential().ID)
		}
		if _, err := p.Acquire(nil, 1); !errors.Is(err, ErrBusy) {
			t.Errorf("got %v, want ErrBusy (c full, b disabled)", err)
		}
		if _, err := p.Acquire([]string{"c"}, 1); !errors.Is(err, ErrUnavailable) {
			t.Errorf("got %v, want ErrUnavailable (c excluded, b disabled)", err)
		}
		lc.Done(OutcomeSuccess, Usage{})
		la.Done(OutcomeSuccess, Usage{InputTokens: 1}) // after removal: harmless
		lb.Done(OutcomeSuccess, Usage{})
		synctest.Wait()
		if n := st.Totals.Credentials; n != 2 {
			t.Errorf("totals: %d credentials, want 2", n)
		}
		// Re-enable b with a higher limit; a's slot number is reused by d.
		p.Sync([]Spec{spec("b", 3), spec("c", 1), spec("d", 1)}, nil)
		synctest.Wait()
		got := map[string]int{}
		for range 5 {
			got[mustAcquire(t, p).Credential().ID]++
		}
		if got["b"] != 3 || got["c"] != 1 || got["d"] != 1 {
			t.Errorf("got %v, want b×3, c×1 and d×1", got)
		}
		if _, err := p.Acquire(nil, 1); !errors.Is(err, ErrBusy) {
			t.Errorf("got %v, want ErrBusy", err)
		}
	})
}

func TestGoroutinesAfterRun(t *testing.T) {
	before := runtime.NumGoroutine()
	checker := &scriptedChecker{outcome: OutcomeForbidden}
	p := newPool(t, Config{}, Deps{Checker: checker, States: newMemStates()})
	p.Sync(specs(50, 2), nil)
	stop := start(t, p)
	waitRunning(t, p)
	var leases []*Lease
	for range 60 {
		leases = append(leases, mustAcquire(t, p))
	}
	for i, l := range leases {
		l.Done(Outcomes()[i%len(Outcomes())], Usage{})
	}
	p.Sync(specs(10, 2), nil) // removes 40
	stop()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after Run returned, %d before\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestConcurrentAcquireNeverExceedsLimits(t *testing.T) {
	p := newPool(t, Config{}, Deps{})
	p.Sync(specs(20, 3), nil)
	start(t, p)
	waitRunning(t, p)
	var mu sync.Mutex
	inFlight, peak := map[string]int{}, map[string]int{}
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			for range 200 {
				l, err := p.Acquire(nil, 1)
				if err != nil {
					runtime.Gosched()
					continue
				}
				id := l.Credential().ID
				mu.Lock()
				inFlight[id]++
				peak[id] = max(peak[id], inFlight[id])
				mu.Unlock()
				runtime.Gosched()
				mu.Lock()
				inFlight[id]--
				mu.Unlock()
				l.Done(OutcomeSuccess, Usage{})
			}
		})
	}
	wg.Wait()
	for id, n := range peak {
		if n > 3 {
			t.Errorf("%s: %d in flight, limit 3", id, n)
		}
	}
	if len(peak) != 20 {
		t.Errorf("%d credentials used, want 20", len(peak))
	}
}

func TestStatusHasNoSecret(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool(t, Config{}, Deps{})
		s := spec("a", 4)
		s.Label = "team"
		p.Sync([]Spec{s}, nil)
		start(t, p)
		synctest.Wait()
		l := mustAcquire(t, p)
		if l.Credential().Token != s.Token {
			t.Error("the lease lacks the token")
		}
		l.Finish(Result{Outcome: OutcomeServerError, Err: fmt.Errorf("upstream said %s", s.Token)})
		synctest.Wait()
		st := p.Status()
		b, _ := json.Marshal(st)
		if strings.Contains(string(b), s.Token) || strings.Contains(fmt.Sprintf("%+v %#v %v", st, s.Credential, s.Credential), s.Token) {
			t.Errorf("the token leaked: %s", b)
		}
		c := st.Credentials[0]
		if c.Label != "team" || c.Email != "a@example.com" || c.Requests != 1 || c.Failures != 1 || c.LastError == "" {
			t.Errorf("got %+v", c)
		}
	})
}

func TestMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		p := newPool(t, Config{}, Deps{Registerer: reg})
		p.Sync([]Spec{spec("a", 4), spec("b", 4)}, nil)
		start(t, p)
		synctest.Wait()
		l := mustAcquire(t, p)
		mustAcquire(t, p).Finish(Result{Outcome: OutcomeRateLimited, RetryAfter: time.Minute})
		synctest.Wait()
		got := metrictest.Values(t, reg)
		for key, want := range map[string]float64{
			"atlassian_proxy_upstream_attempts_total,credential=b,outcome=rate_limited": 1,
			"atlassian_proxy_pool_cooldowns_total,reason=rate_limited":                  1,
			"atlassian_proxy_pool_credentials,state=ready":                              1,
			"atlassian_proxy_pool_credentials,state=cooling":                            1,
			"atlassian_proxy_pool_in_flight":                                            1,
			"atlassian_proxy_pool_capacity":                                             4,
		} {
			if got[key] != want {
				t.Errorf("%s: got %v, want %v", key, got[key], want)
			}
		}
		l.Done(OutcomeSuccess, Usage{})
		if _, err := New(Config{}, Deps{Registerer: reg}); err == nil {
			t.Error("a second pool on the same registry: want an error")
		}
	})
}

func TestConfigValidate(t *testing.T) {
	tests := map[string]Config{
		"negative limit":   {DefaultMaxConcurrency: -1},
		"max below base":   {BackoffBase: time.Second, BackoffMax: time.Millisecond},
		"jitter too big":   {BackoffJitter: 1},
		"negative recheck": {RecheckInterval: -1},
	}
	for name, cfg := range tests {
		t.Run(name, func(t *testing.T) {
			if err := cfg.Validate(); err == nil {
				t.Error("want an error")
			}
			if _, err := New(cfg, Deps{}); err == nil {
				t.Error("New: want an error")
			}
		})
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
}

// A recovery decided elsewhere (another replica's reset or passing check)
// reaches this pool as a stored "ready" state newer than what it knows;
// an older one changes nothing.
func TestRestoreReadyFromAnotherReplica(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPool(t, Config{}, Deps{States: newMemStates()})
		all := []Spec{spec("a", 4), spec("b", 4)}
		p.Sync(all, nil)
		start(t, p)
		synctest.Wait()
		mustAcquire(t, p, "b").Done(OutcomeUnauthorized, Usage{})
		mustAcquire(t, p, "a").Finish(Result{Outcome: OutcomeRateLimited, RetryAfter: time.Hour})
		synctest.Wait()
		if st := statusOf(t, p, "a"); st.State != StateInvalid {
			t.Fatalf("a: got %s, want invalid", st.State)
		}
		stale := time.Now().Add(-time.Minute)
		p.Sync(all, []store.CredentialState{{CredentialID: "a", State: store.StateReady, UpdatedAt: stale}})
		synctest.Wait()
		if st := statusOf(t, p, "a"); st.State != StateInvalid {
			t.Errorf("a after an older ready state: got %s, want invalid", st.State)
		}
		time.Sleep(time.Second)
		p.Sync(all, []store.CredentialState{
			{CredentialID: "a", State: store.StateReady, UpdatedAt: time.Now()},
			{CredentialID: "b", State: store.StateReady, UpdatedAt: time.Now()},
		})
		synctest.Wait()
		for _, id := range []string{"a", "b"} {
			if st := statusOf(t, p, id); st.State != StateReady {
				t.Errorf("%s after a newer ready state: got %s, want ready", id, st.State)
			}
		}
	})
}

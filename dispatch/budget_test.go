package dispatch

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// spent is the number of retries the budget holds in its window ending now.
func spent(d *Dispatcher) int64 {
	d.budget.mu.Lock()
	defer d.budget.mu.Unlock()
	sec, n := time.Now().Unix(), int64(len(d.budget.buckets))
	var retries int64
	for _, bk := range d.budget.buckets {
		if bk.sec > sec-n && bk.sec <= sec {
			retries += bk.retries
		}
	}
	return retries
}

// oneRetry allows one retry in the window whatever the number of requests.
var oneRetry = Config{RetryBudgetRatio: 1e-9, RetryBudgetPerSecond: 0.1}

// TestRetryBudgetChargedOnlyForRetriesMade: a request whose failure leaves
// nothing to try costs the budget nothing and, with the budget spent, still
// gets the answer that says why nothing could serve it; retries that are
// made are charged and still make requests fail fast once it is spent.
func TestRetryBudgetChargedOnlyForRetriesMade(t *testing.T) {
	failures := []struct {
		name string
		err  error
		want string // resultOf the request on the only credential
	}{
		{"5xx", fail(pool.OutcomeServerError), "upstream_failed"},
		{"transport", errors.New("connection reset"), "upstream_failed"},
		{"timeout", context.DeadlineExceeded, "upstream_failed"},
		{"401", fail(pool.OutcomeUnauthorized), "credentials_invalid"},
		{"429", &upErr{pool.OutcomeRateLimited, 30 * time.Second}, "all_rate_limited"},
		{"403", fail(pool.OutcomeForbidden), "forbidden"},
	}
	for _, f := range failures {
		t.Run("only credential, "+f.name+": no charge, then one real retry, then fail fast", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, specs(1, 4), oneRetry, Deps{})
				sc := &script{errs: []error{f.err}}
				begin := time.Now()
				_, err := e.d.Do(t.Context(), sc.call)
				if got := resultOf(err); got != f.want {
					t.Fatalf("got %s (%v), want %s", got, err, f.want)
				}
				if len(sc.ids) != 1 || time.Since(begin) != 0 {
					t.Errorf("got %d attempts in %v, want 1 at once", len(sc.ids), time.Since(begin))
				}
				if n := spent(e.d); n != 0 {
					t.Errorf("budget: %d retries charged, want 0 (no retry was made)", n)
				}
				// Two more credentials: the one retry the budget allows is still there.
				e.p.Sync(specs(3, 4), nil)
				synctest.Wait()
				rl := &upErr{pool.OutcomeRateLimited, time.Minute}
				sc = &script{errs: []error{rl}}
				lease, err := e.d.Do(t.Context(), sc.call)
				if err != nil {
					t.Fatalf("a request that fails over: got %v, want success on its second attempt", err)
				}
				lease.Done(pool.OutcomeSuccess, pool.Usage{})
				if n := spent(e.d); n != 1 || len(sc.ids) != 2 {
					t.Errorf("got %d retries charged after %d attempts, want 1 after 2", n, len(sc.ids))
				}
				// The budget is spent: a request that could retry fails fast.
				synctest.Wait()
				for _, id := range []string{"c00", "c01", "c02"} {
					_ = e.p.Reset(id)
				}
				sc = &script{errs: []error{rl}}
				_, err = e.d.Do(t.Context(), sc.call)
				var de *Error
				if !errors.As(err, &de) || de.Kind != AllRateLimited || len(sc.ids) != 1 {
					t.Errorf("with the budget spent: got %v after %d attempts, want AllRateLimited after 1", err, len(sc.ids))
				}
				if n := spent(e.d); n != 1 {
					t.Errorf("a refused retry was charged: %d retries, want 1", n)
				}
			})
		})
	}

	t.Run("spent budget, 5xx with others ready: fails fast without the back-off", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t, specs(3, 4), oneRetry, Deps{})
			if _, err := e.d.Do(t.Context(), (&script{errs: []error{fail(pool.OutcomeServerError)}}).call); err != nil {
				t.Fatalf("first request: %v, want success after one retry", err)
			}
			sc := &script{errs: []error{fail(pool.OutcomeServerError)}}
			begin := time.Now()
			_, err := e.d.Do(t.Context(), sc.call)
			var de *Error
			if !errors.As(err, &de) || de.Kind != BudgetExhausted {
				t.Fatalf("got %v, want BudgetExhausted", err)
			}
			if len(sc.ids) != 1 || time.Since(begin) != 0 {
				t.Errorf("got %d attempts in %v, want 1 and no back-off", len(sc.ids), time.Since(begin))
			}
		})
	})

	t.Run("spent budget, 401 and the rest cooling: the pool's state", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t, specs(2, 4), Config{RetryBudgetRatio: 1e-9, RetryBudgetPerSecond: 1e-9}, Deps{})
			rateLimit(t, e, "c01", 9*time.Second)
			_, err := e.d.Do(t.Context(), (&script{errs: []error{fail(pool.OutcomeUnauthorized)}}).call)
			var de *Error
			want := "all 1 credential is rate limited; earliest retry in 9 s (1 more is invalid)"
			if !errors.As(err, &de) || de.Kind != AllRateLimited || de.Message != want || de.RetryAfter != 9*time.Second {
				t.Errorf("got %v, want AllRateLimited %q with a Retry-After of 9 s", err, want)
			}
		})
	})

	t.Run("refunded when nothing is left to lease", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t, specs(2, 4), oneRetry, Deps{})
			rateLimit(t, e, "c01", 9*time.Second)
			_, err := e.d.Do(t.Context(), (&script{errs: []error{fail(pool.OutcomeUnauthorized)}}).call)
			var de *Error
			if !errors.As(err, &de) || de.Kind != AllRateLimited {
				t.Errorf("got %v, want AllRateLimited", err)
			}
			if n := spent(e.d); n != 0 {
				t.Errorf("budget: %d retries charged, want 0", n)
			}
		})
	})

	t.Run("refunded while waiting for a busy credential, charged once when the retry is made", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t, specs(2, 1), oneRetry, Deps{})
			synctest.Wait()
			holder, err := e.d.Do(t.Context(), (&script{}).call)
			if err != nil {
				t.Fatal(err)
			}
			type result struct {
				lease *pool.Lease
				err   error
			}
			done := make(chan result, 1)
			sc := &script{errs: []error{&upErr{pool.OutcomeRateLimited, time.Minute}}}
			go func() {
				l, err := e.d.Do(t.Context(), sc.call)
				done <- result{l, err}
			}()
			synctest.Wait() // failed on the free credential, queued for the held one
			if n := spent(e.d); n != 0 {
				t.Errorf("while waiting: %d retries charged, want 0", n)
			}
			time.Sleep(time.Second)
			holder.Done(pool.OutcomeSuccess, pool.Usage{})
			r := <-done
			if r.err != nil {
				t.Fatalf("got %v, want success on the freed credential", r.err)
			}
			r.lease.Done(pool.OutcomeSuccess, pool.Usage{})
			if n := spent(e.d); n != 1 || len(sc.ids) != 2 || sc.ids[1] != holder.Credential().ID {
				t.Errorf("got %d retries charged, attempts %v; want 1 retry, on %s", n, sc.ids, holder.Credential().ID)
			}
		})
	})
}

// TestRetryBudgetDefaults: with the defaults, retries stay within 20% of
// the requests over the last 10 s plus 10 per second: of 200 requests in
// one second that each need a retry, 0.2 × 200 + 10 × 10 = 140 get it and
// the other 60 fail fast; 10 s later the window is empty again.
func TestRetryBudgetDefaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, specs(2, 4), Config{}, Deps{})
		run := func() (ok, exhausted int) {
			for range 200 {
				sc := &script{errs: []error{fail(pool.OutcomeUnauthorized)}}
				lease, err := e.d.Do(t.Context(), sc.call)
				var de *Error
				switch {
				case err == nil:
					ok++
					lease.Done(pool.OutcomeSuccess, pool.Usage{})
				case errors.As(err, &de) && de.Kind == BudgetExhausted:
					exhausted++
				default:
					t.Fatalf("got %v, want success or BudgetExhausted", err)
				}
				_ = e.p.Reset(sc.ids[0])
			}
			return ok, exhausted
		}
		if ok, exhausted := run(); ok != 140 || exhausted != 60 {
			t.Errorf("got %d retried and %d failing fast, want 140 and 60", ok, exhausted)
		}
		time.Sleep(10 * time.Second)
		if ok, exhausted := run(); ok != 140 || exhausted != 60 {
			t.Errorf("10 s later: got %d retried and %d failing fast, want 140 and 60", ok, exhausted)
		}
	})
}

// rateLimit leaves credential id cooling after a 429 with retry-after d.
func rateLimit(t *testing.T, e *env, id string, d time.Duration) {
	t.Helper()
	synctest.Wait() // the pool is running
	var others []string
	for _, c := range e.p.Status().Credentials {
		if c.ID != id {
			others = append(others, c.ID)
		}
	}
	l, err := e.p.Acquire(others, 1)
	if err != nil {
		t.Fatalf("acquire %s: %v", id, err)
	}
	l.Finish(pool.Result{Outcome: pool.OutcomeRateLimited, RetryAfter: d})
	if st := e.status(t, id); st.State != pool.StateCooling {
		t.Fatalf("%s: got %s, want cooling", id, st.State)
	}
}

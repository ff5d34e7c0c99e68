package dispatch

import (
	"context"
	"errors"
	"fmt"
	"github.com/atlassian-proxy/atlassian-proxy/internal/metrictest"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

func TestDoFailover(t *testing.T) {
	s := time.Second
	tests := []struct {
		name     string
		errs     []error
		wantErr  string // "" for success; else an error Kind, or "upstream" for the upstream error itself
		attempts int
		elapsed  time.Duration
		states   []string // states of c00, c01, c02 afterwards
	}{
		{"success", nil, "", 1, 0, []string{"ready", "ready", "ready"}},
		{"429 moves on at once", []error{&upErr{pool.OutcomeRateLimited, 30 * s}}, "", 2, 0, []string{"cooling", "ready", "ready"}},
		{"quota moves on at once", []error{&upErr{pool.OutcomeQuotaExhausted, 5 * time.Hour}}, "", 2, 0, []string{"cooling", "ready", "ready"}},
		{"401 moves on at once", []error{fail(pool.OutcomeUnauthorized)}, "", 2, 0, []string{"invalid", "ready", "ready"}},
		{"one 403 moves on", []error{fail(pool.OutcomeForbidden)}, "", 2, 0, []string{"cooling", "ready", "ready"}},
		{"5xx waits 0.5 s", []error{fail(pool.OutcomeServerError)}, "", 2, s / 2, []string{"", "ready", "ready"}},
		{"transport then timeout: 0.5 s + 1 s", []error{fail(pool.OutcomeTransport), context.DeadlineExceeded}, "", 3, 3 * s / 2, nil},
		{"broken stream waits", []error{fail(pool.OutcomeStreamBroken)}, "", 2, s / 2, nil},
		{"plain error is a transport error", []error{errors.New("connection reset")}, "", 2, s / 2, nil},
		{"client error returns at once, no penalty", []error{fail(pool.OutcomeClientError)}, "upstream", 1, 0, []string{"ready", "ready", "ready"}},
		{"second 403 is the client's answer", []error{fail(pool.OutcomeForbidden), fail(pool.OutcomeForbidden)}, "upstream", 2, 0, nil},
		{"403, 429, 403 still stops", []error{fail(pool.OutcomeForbidden), &upErr{pool.OutcomeRateLimited, s}, fail(pool.OutcomeForbidden)}, "upstream", 3, 0, nil},
		{"all 5xx: upstream failed", []error{fail(pool.OutcomeServerError), fail(pool.OutcomeServerError), fail(pool.OutcomeServerError)}, "upstream_failed", 3, 3 * s / 2, nil},
		{"all 429: all rate limited", []error{&upErr{pool.OutcomeRateLimited, 41 * s}, &upErr{pool.OutcomeRateLimited, 50 * s}, &upErr{pool.OutcomeRateLimited, 60 * s}}, "all_rate_limited", 3, 0, []string{"cooling", "cooling", "cooling"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, specs(3, 4), Config{}, Deps{})
				sc := &script{errs: tt.errs}
				begin := time.Now()
				lease, err := e.d.Do(t.Context(), sc.call)
				elapsed := time.Since(begin)
				switch {
				case tt.wantErr == "" && err != nil:
					t.Fatalf("got error %v, want success", err)
				case tt.wantErr == "upstream":
					var ue *upErr
					if !errors.As(err, &ue) || ue != tt.errs[len(tt.errs)-1] {
						t.Fatalf("got %v, want the upstream error itself", err)
					}
				case tt.wantErr != "":
					var de *Error
					if !errors.As(err, &de) || de.Kind.String() != tt.wantErr {
						t.Fatalf("got %v, want an *Error of kind %s", err, tt.wantErr)
					}
				}
				if err == nil {
					if lease.Attempts() != tt.attempts {
						t.Errorf("lease attempts: got %d, want %d", lease.Attempts(), tt.attempts)
					}
					lease.Done(pool.OutcomeSuccess, pool.Usage{InputTokens: 10, OutputTokens: 5})
				}
				if len(sc.ids) != tt.attempts {
					t.Errorf("attempts: got %d (%v), want %d", len(sc.ids), sc.ids, tt.attempts)
				}
				seen := map[string]bool{}
				for _, id := range sc.ids {
					if seen[id] {
						t.Errorf("credential %s tried twice: %v", id, sc.ids)
					}
					seen[id] = true
				}
				if elapsed != tt.elapsed {
					t.Errorf("elapsed: got %v, want %v", elapsed, tt.elapsed)
				}
				synctest.Wait()
				for i, want := range tt.states {
					if want == "" {
						continue // depends on the jitter
					}
					if got := e.status(t, fmt.Sprintf("c%02d", i)).State; got != want {
						t.Errorf("c%02d: got %s, want %s", i, got, want)
					}
				}
			})
		})
	}
}

func TestAllRateLimitedMessage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, specs(12, 4), Config{}, Deps{})
		for i := range 12 {
			ra := time.Duration(41+i) * time.Second
			if i == 5 {
				ra = 40*time.Second + 300*time.Millisecond // rounds up to 41 s
			}
			_, _ = e.d.Do(t.Context(), (&script{errs: []error{&upErr{pool.OutcomeRateLimited, ra}, context.Canceled}}).call)
		}
		synctest.Wait()
		_, err := e.d.Do(t.Context(), (&script{}).call)
		var de *Error
		if !errors.As(err, &de) || de.Kind != AllRateLimited {
			t.Fatalf("got %v, want AllRateLimited", err)
		}
		if want := "all 12 credentials are rate limited; earliest retry in 41 s"; de.Message != want {
			t.Errorf("message: got %q, want %q", de.Message, want)
		}
		if de.RetryAfter != 41*time.Second {
			t.Errorf("retry after: got %v, want 41s", de.RetryAfter)
		}
	})
}

func TestNoneCanServe(t *testing.T) {
	disabled := specs(2, 4)
	disabled[0].Enabled, disabled[1].Enabled = false, false
	tests := []struct {
		name  string
		creds []pool.Spec
		prep  []error // attempts made by an earlier request
		kind  Kind
		msg   string
		retry time.Duration
	}{
		{"none configured", nil, nil, NoCredentials, "no credentials are configured or enabled", 0},
		{"all disabled", disabled, nil, NoCredentials, "no credentials are configured or enabled", 0},
		{"all invalid", specs(2, 4), []error{fail(pool.OutcomeUnauthorized), fail(pool.OutcomeUnauthorized)}, CredentialsInvalid,
			"all 2 credentials are invalid (the upstream refused their tokens); an administrator must re-enable or replace them", 0},
		{"invalid and cooling: cooling", specs(2, 4), []error{fail(pool.OutcomeUnauthorized), fail(pool.OutcomeServerError)}, AllCooling,
			"all 1 credential is cooling down; earliest retry in 1 s (1 more is invalid)", time.Second},
		{"all cooling", specs(1, 4), []error{&upErr{pool.OutcomeForbidden, 0}}, AllCooling, "all 1 credential is cooling down; earliest retry in 60 s", time.Minute},
		{"rate limited and invalid", specs(2, 4), []error{&upErr{pool.OutcomeRateLimited, 9 * time.Second}, fail(pool.OutcomeUnauthorized)}, AllRateLimited, "all 1 credential is rate limited; earliest retry in 9 s (1 more is invalid)", 9 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, tt.creds, Config{}, Deps{})
				if tt.prep != nil {
					_, _ = e.d.Do(t.Context(), (&script{errs: tt.prep}).call)
					synctest.Wait()
				}
				_, err := e.d.Do(t.Context(), (&script{}).call)
				var de *Error
				if !errors.As(err, &de) {
					t.Fatalf("got %v, want an *Error", err)
				}
				if de.Kind != tt.kind || de.Message != tt.msg || de.RetryAfter != tt.retry {
					t.Errorf("got %v %q %v, want %v %q %v", de.Kind, de.Message, de.RetryAfter, tt.kind, tt.msg, tt.retry)
				}
			})
		})
	}
}

func TestLimits(t *testing.T) {
	serverErrors := func(n int) []error {
		errs := make([]error, n)
		for i := range errs {
			errs[i] = fail(pool.OutcomeServerError)
		}
		return errs
	}
	tests := []struct {
		name     string
		cfg      Config
		ctxLimit time.Duration
		attempts int
		elapsed  time.Duration
	}{
		{"max attempts", Config{}, 0, 5, 7500 * time.Millisecond},                // waits 0.5+1+2+4
		{"max attempts 2", Config{MaxAttempts: 2}, 0, 2, 500 * time.Millisecond}, //
		{"retry deadline", Config{RetryDeadline: 2 * time.Second}, 0, 3, 1500 * time.Millisecond},
		{"request deadline", Config{}, 2 * time.Second, 3, 1500 * time.Millisecond},
		{"back-off capped", Config{MaxAttempts: 8, BackoffMax: 3 * time.Second}, 0, 8, (500 + 1000 + 2000 + 4*3000) * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, specs(10, 4), tt.cfg, Deps{})
				ctx := t.Context()
				if tt.ctxLimit > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.ctxLimit)
					defer cancel()
				}
				sc := &script{errs: serverErrors(10)}
				begin := time.Now()
				_, err := e.d.Do(ctx, sc.call)
				var de *Error
				if !errors.As(err, &de) || de.Kind != UpstreamFailed {
					t.Fatalf("got %v, want UpstreamFailed", err)
				}
				if de.Last != sc.errs[tt.attempts-1] {
					t.Errorf("last: got %v, want the last upstream error", de.Last)
				}
				if len(sc.ids) != tt.attempts {
					t.Errorf("attempts: got %d, want %d", len(sc.ids), tt.attempts)
				}
				if got := time.Since(begin); got != tt.elapsed {
					t.Errorf("elapsed: got %v, want %v", got, tt.elapsed)
				}
			})
		})
	}
}

func TestCancel(t *testing.T) {
	t.Run("during the call: no penalty", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t, specs(1, 4), Config{}, Deps{})
			ctx, cancel := context.WithCancel(t.Context())
			_, err := e.d.Do(ctx, func(ctx context.Context, _ pool.Credential) error {
				cancel()
				return fmt.Errorf("read body: %w", ctx.Err())
			})
			var de *Error
			if !errors.As(err, &de) || de.Kind != Canceled || !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want Canceled wrapping context.Canceled", err)
			}
			synctest.Wait()
			if st := e.status(t, "c00"); st.State != pool.StateReady || st.Failures != 0 || st.Requests != 1 {
				t.Errorf("got %+v, want a ready credential with no failure", st)
			}
		})
	})
	t.Run("during the back-off: returns at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t, specs(2, 4), Config{}, Deps{})
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(100*time.Millisecond, cancel)
			begin := time.Now()
			_, err := e.d.Do(ctx, (&script{errs: []error{fail(pool.OutcomeServerError)}}).call)
			if !errors.Is(err, context.Canceled) || time.Since(begin) != 100*time.Millisecond {
				t.Errorf("got %v after %v, want Canceled after 100ms", err, time.Since(begin))
			}
		})
	})
}

func TestPanicReleasesTheLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, specs(1, 1), Config{}, Deps{})
		func() {
			defer func() {
				if r := recover(); r != http.ErrAbortHandler {
					t.Errorf("recovered %v, want http.ErrAbortHandler to go on", r)
				}
			}()
			_, _ = e.d.Do(t.Context(), func(context.Context, pool.Credential) error { panic(http.ErrAbortHandler) })
		}()
		if st := e.status(t, "c00"); st.InFlight != 0 || st.Failures != 0 {
			t.Errorf("got %+v, want the slot back and no penalty", st)
		}
	})
}

func TestRetryBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Allowance: 0.2 × requests + 0.1/s × 10 s = 1 + requests/5.
		e := newEnv(t, specs(30, 4), Config{RetryBudgetPerSecond: 0.1}, Deps{})
		run := func() []string {
			var got []string
			for range 10 {
				_, err := e.d.Do(t.Context(), (&script{errs: []error{fail(pool.OutcomeUnauthorized)}}).call)
				var de *Error
				switch {
				case err == nil:
					got = append(got, "ok")
				case errors.As(err, &de):
					got = append(got, de.Kind.String())
				default:
					got = append(got, err.Error())
				}
			}
			return got
		}
		want := "ok budget_exhausted budget_exhausted budget_exhausted ok budget_exhausted budget_exhausted budget_exhausted budget_exhausted ok"
		if got := strings.Join(run(), " "); got != want {
			t.Errorf("got  %s\nwant %s", got, want)
		}
		e.p.Sync(specs(30, 4), nil)
		time.Sleep(10 * time.Second) // the window slides on
		// The first 10 requests of the old window are gone: same pattern again.
		for i := range 30 {
			_ = e.p.Reset(fmt.Sprintf("c%02d", i))
		}
		if got := strings.Join(run(), " "); got != want {
			t.Errorf("after the window: got  %s\nwant %s", got, want)
		}
	})
}

func TestQueue(t *testing.T) {
	t.Run("burst of 40 over 2 credentials with limit 4", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t, specs(2, 4), Config{}, Deps{})
			var inFlight, peak = map[string]int{}, map[string]int{}
			mu := make(chan struct{}, 1)
			errs := make(chan error, 40)
			for range 40 {
				go func() {
					l, err := e.d.Do(t.Context(), func(ctx context.Context, c pool.Credential) error { return nil })
					if err != nil {
						errs <- err
						return
					}
					id := l.Credential().ID
					mu <- struct{}{}
					inFlight[id]++
					peak[id] = max(peak[id], inFlight[id])
					<-mu
					time.Sleep(100 * time.Millisecond) // the streamed response
					mu <- struct{}{}
					inFlight[id]--
					<-mu
					l.Done(pool.OutcomeSuccess, pool.Usage{})
					errs <- nil
				}()
			}
			begin := time.Now()
			for range 40 {
				if err := <-errs; err != nil {
					t.Errorf("got %v, want success", err)
				}
			}
			if d := time.Since(begin); d != 500*time.Millisecond {
				t.Errorf("took %v, want 5 rounds of 100 ms", d)
			}
			if peak["c00"] != 4 || peak["c01"] != 4 {
				t.Errorf("peak in flight: got %v, want 4 each", peak)
			}
		})
	})
	t.Run("first in, first out", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t, specs(1, 1), Config{}, Deps{})
			synctest.Wait()
			holder, err := e.d.Do(t.Context(), (&script{}).call)
			if err != nil {
				t.Fatal(err)
			}
			order := make(chan int, 5)
			var wg sync.WaitGroup
			defer wg.Wait()
			for i := range 5 {
				wg.Go(func() {
					l, err := e.d.Do(t.Context(), (&script{}).call)
					if err != nil {
						t.Error(err)
						return
					}
					order <- i
					time.Sleep(time.Second)
					l.Done(pool.OutcomeSuccess, pool.Usage{})
				})
				synctest.Wait() // queued in this order
			}
			holder.Done(pool.OutcomeSuccess, pool.Usage{})
			for want := range 5 {
				if got := <-order; got != want {
					t.Errorf("got waiter %d, want %d", got, want)
				}
			}
		})
	})
	t.Run("full and timed out", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t, specs(1, 1), Config{QueueMax: 2, QueueTimeout: 30 * time.Second}, Deps{})
			synctest.Wait()
			holder, err := e.d.Do(t.Context(), (&script{}).call)
			if err != nil {
				t.Fatal(err)
			}
			results := make(chan error, 2)
			for range 2 {
				go func() {
					_, err := e.d.Do(t.Context(), (&script{}).call)
					results <- err
				}()
			}
			synctest.Wait()
			_, err = e.d.Do(t.Context(), (&script{}).call)
			var de *Error
			if !errors.As(err, &de) || de.Kind != QueueFull || de.RetryAfter != 5*time.Second {
				t.Fatalf("third waiter: got %v, want QueueFull with a Retry-After", err)
			}
			begin := time.Now()
			for range 2 {
				err := <-results
				if !errors.As(err, &de) || de.Kind != QueueTimeout || de.RetryAfter != 5*time.Second {
					t.Errorf("got %v, want QueueTimeout with a Retry-After", err)
				}
			}
			if d := time.Since(begin); d != 30*time.Second {
				t.Errorf("timed out after %v, want 30s", d)
			}
			holder.Done(pool.OutcomeSuccess, pool.Usage{})
		})
	})
	t.Run("requests before Run wait for it", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p, err := pool.New(pool.Config{}, pool.Deps{})
			if err != nil {
				t.Fatal(err)
			}
			p.Sync(specs(1, 4), nil)
			d, err := New(Config{}, p, Deps{})
			if err != nil {
				t.Fatal(err)
			}
			result := make(chan error, 1)
			go func() {
				l, err := d.Do(t.Context(), (&script{}).call)
				l.Done(pool.OutcomeSuccess, pool.Usage{})
				result <- err
			}()
			synctest.Wait()
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() { defer close(done); _ = p.Run(ctx) }()
			if err := <-result; err != nil {
				t.Errorf("got %v, want success once Run started", err)
			}
			cancel()
			<-done
		})
	})
	t.Run("a waiter that tried the freed credential passes the wake-up on", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t, specs(2, 1), Config{}, Deps{})
			synctest.Wait()
			h1, err := e.d.Do(t.Context(), (&script{errs: []error{nil}}).call) // holds c00
			if err != nil {
				t.Fatal(err)
			}
			h1.Done(pool.OutcomeSuccess, pool.Usage{})
			var wg sync.WaitGroup
			defer wg.Wait()
			got := make(chan string, 2)
			run := func(name string, sc *script, hold time.Duration) {
				wg.Go(func() {
					l, err := e.d.Do(t.Context(), sc.call)
					if err != nil {
						got <- name + ": " + err.Error()
						return
					}
					got <- name + ": " + l.Credential().ID
					time.Sleep(hold)
					l.Done(pool.OutcomeSuccess, pool.Usage{})
				})
				synctest.Wait()
			}
			// H takes c01 for 10 s. A tries c00, gets a 429 for 1 s and
			// queues for c01. B queues behind A.
			run("H", &script{}, 10*time.Second)
			if g := <-got; g != "H: c01" {
				t.Fatalf("got %s, want H on c01", g)
			}
			run("A", &script{errs: []error{&upErr{pool.OutcomeRateLimited, time.Second}}}, 0)
			run("B", &script{}, 0)
			// c00 cools down after 1 s: A is woken first, cannot use c00 and
			// must hand the wake-up to B at once, not leave B waiting for c01.
			time.Sleep(time.Second)
			synctest.Wait()
			if g := <-got; g != "B: c00" {
				t.Errorf("got %s, want B on c00 after 1 s", g)
			}
			time.Sleep(9 * time.Second)
			if g := <-got; g != "A: c01" {
				t.Errorf("got %s, want A on c01 once H is done", g)
			}
		})
	})
}

func TestMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		e := newEnv(t, specs(2, 4), Config{}, Deps{Registerer: reg})
		l, err := e.d.Do(t.Context(), (&script{errs: []error{fail(pool.OutcomeRateLimited)}}).call)
		if err != nil {
			t.Fatal(err)
		}
		l.Done(pool.OutcomeSuccess, pool.Usage{})
		_, _ = e.d.Do(t.Context(), (&script{errs: []error{fail(pool.OutcomeClientError)}}).call)
		got := metrictest.Values(t, reg)
		for key, want := range map[string]float64{
			"atlassian_proxy_dispatch_requests_total,result=success":      1,
			"atlassian_proxy_dispatch_requests_total,result=client_error": 1,
			"atlassian_proxy_dispatch_retries_total,outcome=rate_limited": 1,
			"atlassian_proxy_dispatch_failovers_total":                    1,
			"atlassian_proxy_dispatch_queue_waiting":                      0,
			// every kind's series exists from the start
			"atlassian_proxy_dispatch_requests_total,result=credentials_invalid": 0,
			"atlassian_proxy_dispatch_requests_total,result=no_credentials":      0,
		} {
			if v, ok := got[key]; !ok || v != want {
				t.Errorf("%s: got %v (present %v), want %v", key, v, ok, want)
			}
		}
	})
}

func TestClassify(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want pool.Outcome
	}{
		{"nil", context.Background(), nil, pool.OutcomeSuccess},
		{"typed", context.Background(), fail(pool.OutcomeQuotaExhausted), pool.OutcomeQuotaExhausted},
		{"wrapped typed", context.Background(), fmt.Errorf("call: %w", fail(pool.OutcomeUnauthorized)), pool.OutcomeUnauthorized},
		{"typed success is not", context.Background(), fail(pool.OutcomeSuccess), pool.OutcomeTransport},
		{"canceled", context.Background(), context.Canceled, pool.OutcomeCanceled},
		{"deadline", context.Background(), fmt.Errorf("x: %w", context.DeadlineExceeded), pool.OutcomeTimeout},
		{"other", context.Background(), errors.New("EOF"), pool.OutcomeTransport},
		{"request gone", canceled, fail(pool.OutcomeServerError), pool.OutcomeCanceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.ctx, tt.err); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for name, cfg := range map[string]Config{
		"negative attempts": {MaxAttempts: -1},
		"negative queue":    {QueueMax: -1},
		"max below base":    {BackoffBase: time.Second, BackoffMax: time.Millisecond},
		"short window":      {RetryBudgetWindow: time.Millisecond},
	} {
		t.Run(name, func(t *testing.T) {
			if err := cfg.Validate(); err == nil {
				t.Error("want an error")
			}
		})
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
}

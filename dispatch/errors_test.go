package dispatch

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// TestGiveUp: what a request that made attempts and may make no more gets
// back: the last 403 itself, AllRateLimited when every failure was a 429,
// BudgetExhausted, the pool's state when nothing is left and the last
// failure was about a credential, UpstreamFailed when attempts or time ran
// out on upstream failures.
func TestGiveUp(t *testing.T) {
	s := time.Second
	rl := func(d time.Duration) error { return &upErr{pool.OutcomeRateLimited, d} }
	tinyBudget := Config{RetryBudgetRatio: 1e-9, RetryBudgetPerSecond: 1e-9}
	tests := []struct {
		name  string
		creds int
		cfg   Config
		errs  []error
		// want: "upstream" for the last upstream error itself, else a Kind
		want     string
		msg      string
		retry    time.Duration
		attempts int
	}{
		{"one credential, 403: the 403", 1, Config{}, []error{fail(pool.OutcomeForbidden)}, "upstream", "", 0, 1},
		{"403 last, the rest invalid: the 403", 2, Config{}, []error{fail(pool.OutcomeUnauthorized), fail(pool.OutcomeForbidden)}, "upstream", "", 0, 2},
		{"attempts run out on a 403: the 403", 5, Config{MaxAttempts: 2}, []error{fail(pool.OutcomeServerError), fail(pool.OutcomeForbidden)}, "upstream", "", 0, 2},
		{"budget spent after a 403: the 403", 3, tinyBudget, []error{fail(pool.OutcomeForbidden)}, "upstream", "", 0, 1},

		{"one credential, 429", 1, Config{}, []error{rl(41 * s)}, "all_rate_limited",
			"all 1 credential is rate limited; earliest retry in 41 s", 41 * s, 1},
		{"every credential 429 and quota", 3, Config{}, []error{rl(50 * s), &upErr{pool.OutcomeQuotaExhausted, 2 * time.Hour}, rl(41*s + s/3)}, "all_rate_limited",
			"all 3 credentials are rate limited; earliest retry in 42 s", 42 * s, 3},
		{"attempts run out on 429s, others untried", 5, Config{MaxAttempts: 2}, []error{rl(30 * s), rl(20 * s)}, "all_rate_limited",
			"all 2 credentials tried are rate limited; earliest retry in 20 s", 20 * s, 2},
		{"budget spent on a 429", 3, tinyBudget, []error{rl(7 * s)}, "all_rate_limited",
			"the credential tried is rate limited; earliest retry in 7 s", 7 * s, 1},
		{"429 then 401, nothing left: the pool's state", 2, Config{}, []error{rl(9 * s), fail(pool.OutcomeUnauthorized)}, "all_rate_limited",
			"all 1 credential is rate limited; earliest retry in 9 s (1 more is invalid)", 9 * s, 2},

		{"one credential, 401: all invalid", 1, Config{}, []error{fail(pool.OutcomeUnauthorized)}, "credentials_invalid",
			"all 1 credential is invalid (the upstream refused its token); an administrator must re-enable or replace it", 0, 1},
		{"one credential, 401, budget spent: all invalid", 1, tinyBudget, []error{fail(pool.OutcomeUnauthorized)}, "credentials_invalid",
			"all 1 credential is invalid", 0, 1},
		{"401 while another is ready, budget spent", 2, tinyBudget, []error{fail(pool.OutcomeUnauthorized)}, "budget_exhausted",
			"the upstream is failing; the retry budget is spent", 0, 1},
		{"budget spent on a 5xx", 3, tinyBudget, []error{fail(pool.OutcomeServerError)}, "budget_exhausted",
			"the upstream is failing; the retry budget is spent", 0, 1},
		{"one credential, 5xx", 1, Config{}, []error{fail(pool.OutcomeServerError)}, "upstream_failed",
			"the upstream failed on 1 attempt", 0, 1},
		{"attempts run out on 5xx and 429", 5, Config{MaxAttempts: 2}, []error{fail(pool.OutcomeServerError), rl(20 * s)}, "upstream_failed",
			"the upstream failed on 2 attempts", 0, 2},
		{"429 then a timeout, nothing left", 2, Config{}, []error{rl(20 * s), fail(pool.OutcomeTimeout)}, "upstream_failed",
			"the upstream failed on 2 attempts", 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, specs(tt.creds, 4), tt.cfg, Deps{})
				sc := &script{errs: tt.errs}
				_, err := e.d.Do(t.Context(), sc.call)
				if len(sc.ids) != tt.attempts {
					t.Errorf("attempts: got %d (%v), want %d", len(sc.ids), sc.ids, tt.attempts)
				}
				if tt.want == "upstream" {
					var ue *upErr
					if !errors.As(err, &ue) || ue != tt.errs[len(tt.errs)-1] {
						t.Fatalf("got %v, want the last upstream error itself", err)
					}
					if resultOf(err) != "forbidden" {
						t.Errorf("result label: got %s, want forbidden", resultOf(err))
					}
					return
				}
				var de *Error
				if !errors.As(err, &de) {
					t.Fatalf("got %v, want an *Error", err)
				}
				if de.Kind.String() != tt.want || de.RetryAfter != tt.retry {
					t.Errorf("got %s with Retry-After %v, want %s with %v", de.Kind, de.RetryAfter, tt.want, tt.retry)
				}
				if len(de.Message) < len(tt.msg) || de.Message[:len(tt.msg)] != tt.msg {
					t.Errorf("message: got %q, want it to start with %q", de.Message, tt.msg)
				}
				if de.Last != tt.errs[len(tt.errs)-1] {
					t.Errorf("last: got %v, want the last upstream error", de.Last)
				}
			})
		})
	}
}

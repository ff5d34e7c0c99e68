package pool

import (
	"fmt"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

var (
	t0        = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	testRules = rules{
		backoffBase: 500 * time.Millisecond, backoffMax: 16 * time.Second, jitter: 0.2,
		rateLimitCooldown: 10 * time.Second, quotaCooldown: time.Hour,
		forbiddenCooldown: time.Minute, recheck: 5 * time.Minute,
		serverRetryAfterMax: 5 * time.Minute,
	}
)

// startStates are the states every outcome is applied to; each has one
// request in flight (the one whose outcome arrives) and limit 4.
func startStates() map[string]state {
	base := state{enabled: true, health: healthReady, inFlight: 1, limit: 4}
	with := func(f func(*state)) state { s := base; f(&s); return s }
	return map[string]state{
		"ready": base,
		"full":  with(func(s *state) { s.inFlight = 4 }),
		"cooling-backoff": with(func(s *state) {
			s.health, s.until, s.reason, s.failures = healthCooling, t0.Add(10*time.Second), OutcomeServerError, 3
		}),
		"cooling-rate-limited": with(func(s *state) {
			s.health, s.until, s.reason = healthCooling, t0.Add(30*time.Second), OutcomeRateLimited
		}),
		"cooling-forbidden": with(func(s *state) {
			s.health, s.until, s.reason, s.checking, s.checkGen = healthCooling, t0.Add(time.Minute), OutcomeForbidden, true, 1
		}),
		"cooling-expired": with(func(s *state) {
			s.health, s.until, s.reason = healthCooling, t0.Add(-time.Second), OutcomeRateLimited
		}),
		"invalid": with(func(s *state) {
			s.health, s.reason, s.nextCheck = healthInvalid, OutcomeUnauthorized, t0.Add(time.Minute)
		}),
		"disabled": with(func(s *state) { s.enabled = false }),
	}
}

// want is the expected state after one outcome.
type want struct {
	health   health
	until    time.Duration // from t0, when cooling
	reason   Outcome       // when cooling or invalid
	failures int
	persist  persistOp
	check    bool
	freed    int
}

func (w want) String() string {
	return fmt.Sprintf("health=%d until=%v reason=%v failures=%d persist=%d check=%v freed=%d",
		w.health, w.until, w.reason, w.failures, w.persist, w.check, w.freed)
}

func got(s state, fx effects) want {
	w := want{health: s.health, failures: s.failures, persist: fx.persist, check: fx.check, freed: fx.freed}
	if s.health != healthReady {
		w.reason = s.reason
	}
	if s.health == healthCooling {
		w.until = s.until.Sub(t0)
	}
	return w
}

func TestTransitionOutcomes(t *testing.T) {
	ready := func(failures, freed int) want { return want{health: healthReady, failures: failures, freed: freed} }
	cooling := func(d time.Duration, r Outcome, failures int) want {
		return want{health: healthCooling, until: d, reason: r, failures: failures}
	}
	invalid := func(r Outcome, failures int) want {
		return want{health: healthInvalid, reason: r, failures: failures}
	}
	persist := func(w want) want { w.persist = persistSet; return w }
	check := func(w want) want { w.check = true; return w }
	unchanged := map[string]want{
		"ready":                ready(0, 1),
		"full":                 ready(0, 1),
		"cooling-backoff":      cooling(10*time.Second, OutcomeServerError, 3),
		"cooling-rate-limited": cooling(30*time.Second, OutcomeRateLimited, 0),
		"cooling-forbidden":    cooling(time.Minute, OutcomeForbidden, 0),
		"cooling-expired":      ready(0, 4),
		"invalid":              invalid(OutcomeUnauthorized, 0),
		"disabled":             ready(0, 0),
	}
	backoff := func(o Outcome) map[string]want {
		return map[string]want{
			"ready":                cooling(500*time.Millisecond, o, 1),
			"full":                 cooling(500*time.Millisecond, o, 1),
			"cooling-backoff":      cooling(10*time.Second, OutcomeServerError, 4), // 4 s < 10 s left: kept
			"cooling-rate-limited": cooling(30*time.Second, OutcomeRateLimited, 1),
			"cooling-forbidden":    cooling(time.Minute, OutcomeForbidden, 1),
			"cooling-expired":      cooling(500*time.Millisecond, o, 1),
			"invalid":              invalid(OutcomeUnauthorized, 1),
			"disabled":             cooling(500*time.Millisecond, o, 1),
		}
	}
	tests := []struct {
		outcome    Outcome
		retryAfter time.Duration
		want       map[string]want
	}{
		{OutcomeSuccess, 0, map[string]want{
			"ready": ready(0, 1), "full": ready(0, 1),
			"cooling-backoff":      cooling(10*time.Second, OutcomeServerError, 0), // back-off reset, cooldown kept
			"cooling-rate-limited": cooling(30*time.Second, OutcomeRateLimited, 0),
			"cooling-forbidden":    cooling(time.Minute, OutcomeForbidden, 0),
			"cooling-expired":      ready(0, 4),
			"invalid":              invalid(OutcomeUnauthorized, 0),
			"disabled":             ready(0, 0),
		}},
		{OutcomeClientError, 0, unchanged},
		{OutcomeCanceled, 0, unchanged},
		{OutcomeRateLimited, 20 * time.Second, map[string]want{
			"ready":                persist(cooling(20*time.Second, OutcomeRateLimited, 0)),
			"full":                 persist(cooling(20*time.Second, OutcomeRateLimited, 0)),
			"cooling-backoff":      persist(cooling(20*time.Second, OutcomeRateLimited, 3)),
			"cooling-rate-limited": cooling(30*time.Second, OutcomeRateLimited, 0), // never shortened
			"cooling-forbidden":    cooling(time.Minute, OutcomeForbidden, 0),
			"cooling-expired":      persist(cooling(20*time.Second, OutcomeRateLimited, 0)),
			"invalid":              invalid(OutcomeUnauthorized, 0),
			"disabled":             persist(cooling(20*time.Second, OutcomeRateLimited, 0)),
		}},
		{OutcomeRateLimited, 0, map[string]want{ // no retry-after: RateLimitCooldown
			"ready":                persist(cooling(10*time.Second, OutcomeRateLimited, 0)),
			"full":                 persist(cooling(10*time.Second, OutcomeRateLimited, 0)),
			"cooling-backoff":      cooling(10*time.Second, OutcomeServerError, 3),
			"cooling-rate-limited": cooling(30*time.Second, OutcomeRateLimited, 0),
			"cooling-forbidden":    cooling(time.Minute, OutcomeForbidden, 0),
			"cooling-expired":      persist(cooling(10*time.Second, OutcomeRateLimited, 0)),
			"invalid":              invalid(OutcomeUnauthorized, 0),
			"disabled":             persist(cooling(10*time.Second, OutcomeRateLimited, 0)),
		}},
		{OutcomeQuotaExhausted, 0, map[string]want{ // daily quota: the whole period
			"ready":                persist(cooling(time.Hour, OutcomeQuotaExhausted, 0)),
			"full":                 persist(cooling(time.Hour, OutcomeQuotaExhausted, 0)),
			"cooling-backoff":      persist(cooling(time.Hour, OutcomeQuotaExhausted, 3)),
			"cooling-rate-limited": persist(cooling(time.Hour, OutcomeQuotaExhausted, 0)),
			"cooling-forbidden":    persist(cooling(time.Hour, OutcomeQuotaExhausted, 0)),
			"cooling-expired":      persist(cooling(time.Hour, OutcomeQuotaExhausted, 0)),
			"invalid":              invalid(OutcomeUnauthorized, 0),
			"disabled":             persist(cooling(time.Hour, OutcomeQuotaExhausted, 0)),
		}},
		{OutcomeQuotaExhausted, 7 * time.Hour, map[string]want{
			"ready":                persist(cooling(7*time.Hour, OutcomeQuotaExhausted, 0)),
			"full":                 persist(cooling(7*time.Hour, OutcomeQuotaExhausted, 0)),
			"cooling-backoff":      persist(cooling(7*time.Hour, OutcomeQuotaExhausted, 3)),
			"cooling-rate-limited": persist(cooling(7*time.Hour, OutcomeQuotaExhausted, 0)),
			"cooling-forbidden":    persist(cooling(7*time.Hour, OutcomeQuotaExhausted, 0)),
			"cooling-expired":      persist(cooling(7*time.Hour, OutcomeQuotaExhausted, 0)),
			"invalid":              invalid(OutcomeUnauthorized, 0),
			"disabled":             persist(cooling(7*time.Hour, OutcomeQuotaExhausted, 0)),
		}},
		{OutcomeUnauthorized, 0, map[string]want{
			"ready":                persist(invalid(OutcomeUnauthorized, 0)),
			"full":                 persist(invalid(OutcomeUnauthorized, 0)),
			"cooling-backoff":      persist(invalid(OutcomeUnauthorized, 3)),
			"cooling-rate-limited": persist(invalid(OutcomeUnauthorized, 0)),
			"cooling-forbidden":    persist(invalid(OutcomeUnauthorized, 0)),
			"cooling-expired":      persist(invalid(OutcomeUnauthorized, 0)),
			"invalid":              invalid(OutcomeUnauthorized, 0), // already: nothing to write
			"disabled":             persist(invalid(OutcomeUnauthorized, 0)),
		}},
		{OutcomeForbidden, 0, map[string]want{
			"ready":                check(persist(cooling(time.Minute, OutcomeForbidden, 0))),
			"full":                 check(persist(cooling(time.Minute, OutcomeForbidden, 0))),
			"cooling-backoff":      check(persist(cooling(time.Minute, OutcomeForbidden, 3))),
			"cooling-rate-limited": check(persist(cooling(time.Minute, OutcomeForbidden, 0))),
			"cooling-forbidden":    cooling(time.Minute, OutcomeForbidden, 0), // a check is already out
			"cooling-expired":      check(persist(cooling(time.Minute, OutcomeForbidden, 0))),
			"invalid":              invalid(OutcomeUnauthorized, 0),
			"disabled":             check(persist(cooling(time.Minute, OutcomeForbidden, 0))),
		}},
		{OutcomeServerError, 0, backoff(OutcomeServerError)},
		{OutcomeServerError, 100 * time.Millisecond, backoff(OutcomeServerError)}, // shorter than the back-off: the back-off
		{OutcomeServerError, 30 * time.Second, map[string]want{ // a 503 or 529 with Retry-After: 30
			"ready":                cooling(30*time.Second, OutcomeServerError, 1),
			"full":                 cooling(30*time.Second, OutcomeServerError, 1),
			"cooling-backoff":      cooling(30*time.Second, OutcomeServerError, 4),
			"cooling-rate-limited": cooling(30*time.Second, OutcomeRateLimited, 1), // not longer: kept
			"cooling-forbidden":    cooling(time.Minute, OutcomeForbidden, 1),
			"cooling-expired":      cooling(30*time.Second, OutcomeServerError, 1),
			"invalid":              invalid(OutcomeUnauthorized, 1),
			"disabled":             cooling(30*time.Second, OutcomeServerError, 1),
		}},
		{OutcomeServerError, 2 * time.Hour, map[string]want{ // capped at 5 minutes
			"ready":                cooling(5*time.Minute, OutcomeServerError, 1),
			"full":                 cooling(5*time.Minute, OutcomeServerError, 1),
			"cooling-backoff":      cooling(5*time.Minute, OutcomeServerError, 4),
			"cooling-rate-limited": cooling(5*time.Minute, OutcomeServerError, 1),
			"cooling-forbidden":    cooling(5*time.Minute, OutcomeServerError, 1),
			"cooling-expired":      cooling(5*time.Minute, OutcomeServerError, 1),
			"invalid":              invalid(OutcomeUnauthorized, 1),
			"disabled":             cooling(5*time.Minute, OutcomeServerError, 1),
		}},
		{OutcomeTransport, 0, backoff(OutcomeTransport)},
		{OutcomeTimeout, 0, backoff(OutcomeTimeout)},
		{OutcomeStreamBroken, 0, backoff(OutcomeStreamBroken)},
	}
	covered := map[Outcome]bool{}
	for _, tt := range tests {
		covered[tt.outcome] = true
		for name, from := range startStates() {
			t.Run(fmt.Sprintf("%s/retry-after=%v/from=%s", tt.outcome, tt.retryAfter, name), func(t *testing.T) {
				w, ok := tt.want[name]
				if !ok {
					t.Fatalf("no expectation for state %q", name)
				}
				s, fx := transition(testRules, from, event{kind: evOutcome, outcome: tt.outcome, retryAfter: tt.retryAfter, err: "boom"}, t0)
				if g := got(s, fx); g != w {
					t.Errorf("got  %v\nwant %v", g, w)
				}
				if s.inFlight != from.inFlight-1 {
					t.Errorf("in flight: got %d, want %d", s.inFlight, from.inFlight-1)
				}
				if penalty(tt.outcome) != (s.lastErr == "boom") {
					t.Errorf("last error: got %q (penalty %v)", s.lastErr, penalty(tt.outcome))
				}
				if fx.admitted {
					t.Error("an outcome admitted a request")
				}
			})
		}
	}
	for _, o := range Outcomes() {
		if !covered[o] {
			t.Errorf("outcome %v has no row", o)
		}
	}
}

func TestTransitionAdmit(t *testing.T) {
	tests := map[string]struct {
		admitted bool
		health   health
	}{
		"ready":                {true, healthReady},
		"full":                 {false, healthReady},
		"cooling-backoff":      {false, healthCooling},
		"cooling-rate-limited": {false, healthCooling},
		"cooling-forbidden":    {false, healthCooling},
		"cooling-expired":      {true, healthReady},
		"invalid":              {false, healthInvalid},
		"disabled":             {false, healthReady},
	}
	for name, from := range startStates() {
		t.Run(name, func(t *testing.T) {
			w := tests[name]
			s, fx := transition(testRules, from, event{kind: evAdmit}, t0)
			if fx.admitted != w.admitted || s.health != w.health {
				t.Errorf("got admitted=%v health=%d, want %v %d", fx.admitted, s.health, w.admitted, w.health)
			}
			if wantIn := from.inFlight + map[bool]int{true: 1}[w.admitted]; s.inFlight != wantIn {
				t.Errorf("in flight: got %d, want %d", s.inFlight, wantIn)
			}
		})
	}
}

func TestTransitionTick(t *testing.T) {
	for name, from := range startStates() {
		t.Run(name, func(t *testing.T) {
			// One minute later: every cooldown up to a minute is over; the
			// invalid credential's check is due.
			now := t0.Add(time.Minute)
			s, fx := transition(testRules, from, event{kind: evTick}, now)
			switch name {
			case "cooling-backoff", "cooling-rate-limited", "cooling-forbidden", "cooling-expired":
				if s.health != healthReady || !fx.recovered {
					t.Errorf("got health %d recovered %v, want ready", s.health, fx.recovered)
				}
				if wantFree := from.limit - from.inFlight; fx.freed != wantFree && from.enabled {
					t.Errorf("freed: got %d, want %d", fx.freed, wantFree)
				}
			case "invalid":
				if !fx.check || !s.checking || s.checkGen != from.checkGen+1 {
					t.Errorf("got check=%v checking=%v gen=%d, want a new check", fx.check, s.checking, s.checkGen)
				}
				if !s.wakeAt().IsZero() {
					t.Errorf("wake while checking: %v", s.wakeAt())
				}
			default:
				if s != from || fx != (effects{}) {
					t.Errorf("got %+v %+v, want no change", s, fx)
				}
			}
		})
	}
	t.Run("invalid/not-yet-due", func(t *testing.T) {
		from := startStates()["invalid"]
		_, fx := transition(testRules, from, event{kind: evTick}, t0.Add(59*time.Second))
		if fx.check {
			t.Error("checked before nextCheck")
		}
	})
	t.Run("invalid/no-checker", func(t *testing.T) {
		r := testRules
		r.recheck = 0
		s, fx := transition(r, startStates()["invalid"], event{kind: evOutcome, outcome: OutcomeUnauthorized}, t0)
		if fx.check || !s.nextCheck.IsZero() {
			t.Errorf("got check=%v nextCheck=%v, want none without a checker", fx.check, s.nextCheck)
		}
	})
}

func TestTransitionCheck(t *testing.T) {
	type result struct {
		health health
		reason Outcome
		until  time.Duration
	}
	tests := []struct {
		outcome    Outcome
		retryAfter time.Duration
		invalid    result // from "invalid" (check outstanding)
		forbidden  result // from "cooling-forbidden" (check outstanding)
	}{
		{OutcomeSuccess, 0, result{healthReady, 0, 0}, result{healthReady, 0, 0}},
		{OutcomeUnauthorized, 0, result{healthInvalid, OutcomeUnauthorized, 0}, result{healthInvalid, OutcomeUnauthorized, 0}},
		{OutcomeForbidden, 0, result{healthInvalid, OutcomeForbidden, 0}, result{healthInvalid, OutcomeForbidden, 0}},
		{OutcomeRateLimited, 30 * time.Second, result{healthCooling, OutcomeRateLimited, 30 * time.Second}, result{healthCooling, OutcomeForbidden, time.Minute}},
		{OutcomeQuotaExhausted, 2 * time.Hour, result{healthCooling, OutcomeQuotaExhausted, 2 * time.Hour}, result{healthCooling, OutcomeQuotaExhausted, 2 * time.Hour}},
		{OutcomeServerError, 0, result{healthInvalid, OutcomeUnauthorized, 0}, result{healthCooling, OutcomeForbidden, time.Minute}},
		{OutcomeTransport, 0, result{healthInvalid, OutcomeUnauthorized, 0}, result{healthCooling, OutcomeForbidden, time.Minute}},
	}
	for _, tt := range tests {
		for _, from := range []string{"invalid", "cooling-forbidden"} {
			t.Run(tt.outcome.String()+"/from="+from, func(t *testing.T) {
				s := startStates()[from]
				s.checking, s.checkGen = true, 7
				w := tt.invalid
				if from == "cooling-forbidden" {
					w = tt.forbidden
				}
				got, fx := transition(testRules, s, event{kind: evCheck, outcome: tt.outcome, retryAfter: tt.retryAfter, gen: 7}, t0)
				g := result{got.health, got.reason, 0}
				if got.health == healthReady {
					g.reason = 0
				}
				if got.health == healthCooling {
					g.until = got.until.Sub(t0)
				}
				if g != w {
					t.Errorf("got %+v, want %+v", g, w)
				}
				if got.checking {
					t.Error("still checking after the result")
				}
				if got.health == healthInvalid && got.nextCheck != t0.Add(testRules.recheck) {
					t.Errorf("next check: got %v, want in %v", got.nextCheck.Sub(t0), testRules.recheck)
				}
				if tt.outcome == OutcomeSuccess && fx.persist != persistReady {
					t.Errorf("persist: got %d, want clear", fx.persist)
				}
				// The same result with a stale generation changes nothing.
				stale, fx := transition(testRules, s, event{kind: evCheck, outcome: tt.outcome, gen: 6}, t0)
				if stale != s || fx != (effects{}) {
					t.Errorf("a stale check result changed the state: %+v", stale)
				}
			})
		}
	}
}

func TestTransitionOperator(t *testing.T) {
	t.Run("reset clears everything", func(t *testing.T) {
		for name, from := range startStates() {
			s, fx := transition(testRules, from, event{kind: evReset}, t0)
			if s.health != healthReady || s.failures != 0 || s.checking || fx.persist != persistReady {
				t.Errorf("%s: got %+v %+v", name, s, fx)
			}
			if s.enabled != from.enabled || s.inFlight != from.inFlight {
				t.Errorf("%s: reset changed enabled or in-flight", name)
			}
		}
	})
	t.Run("disable keeps health", func(t *testing.T) {
		s, fx := transition(testRules, startStates()["cooling-rate-limited"], event{kind: evUpdate, enabled: false, limit: 4}, t0)
		if s.enabled || s.health != healthCooling || fx.persist != persistNone {
			t.Errorf("got %+v %+v", s, fx)
		}
	})
	t.Run("re-enable clears invalid", func(t *testing.T) {
		from := startStates()["invalid"]
		from.enabled = false
		s, fx := transition(testRules, from, event{kind: evUpdate, enabled: true, limit: 4}, t0)
		if s.health != healthReady || fx.persist != persistReady || fx.freed != 3 {
			t.Errorf("got %+v %+v", s, fx)
		}
	})
	t.Run("re-enable keeps a rate limit", func(t *testing.T) {
		from := startStates()["cooling-rate-limited"]
		from.enabled = false
		s, _ := transition(testRules, from, event{kind: evUpdate, enabled: true, limit: 4}, t0)
		if s.health != healthCooling {
			t.Errorf("got health %d, want cooling", s.health)
		}
	})
	t.Run("new secret clears invalid", func(t *testing.T) {
		s, _ := transition(testRules, startStates()["invalid"], event{kind: evUpdate, enabled: true, limit: 4, secret: true}, t0)
		if s.health != healthReady {
			t.Errorf("got health %d, want ready", s.health)
		}
	})
	t.Run("limit grows", func(t *testing.T) {
		s, fx := transition(testRules, startStates()["full"], event{kind: evUpdate, enabled: true, limit: 6}, t0)
		if s.limit != 6 || fx.freed != 2 {
			t.Errorf("got limit %d freed %d, want 6 and 2", s.limit, fx.freed)
		}
	})
	t.Run("limit shrinks below in flight", func(t *testing.T) {
		s, _ := transition(testRules, startStates()["full"], event{kind: evUpdate, enabled: true, limit: 2}, t0)
		if s.level() != levelFull {
			t.Errorf("level: got %d, want full", s.level())
		}
	})
}

func TestTransitionRestore(t *testing.T) {
	fresh := state{enabled: true, limit: 4}
	tests := []struct {
		name   string
		from   state
		stored store.CredentialState
		health health
		reason Outcome
	}{
		{"cooling in the future", fresh, store.CredentialState{State: "cooling", Reason: "rate_limited", Until: t0.Add(time.Minute), UpdatedAt: t0.Add(-time.Minute)}, healthCooling, OutcomeRateLimited},
		{"cooling in the past", fresh, store.CredentialState{State: "cooling", Reason: "rate_limited", Until: t0.Add(-time.Second), UpdatedAt: t0.Add(-time.Minute)}, healthReady, 0},
		{"invalid", fresh, store.CredentialState{State: "invalid", Reason: "unauthorized", UpdatedAt: t0.Add(-time.Hour)}, healthInvalid, OutcomeUnauthorized},
		{"unknown reason", fresh, store.CredentialState{State: "invalid", Reason: "?", UpdatedAt: t0}, healthInvalid, OutcomeUnauthorized},
		{"our own echo", state{enabled: true, limit: 4, changedAt: t0}, store.CredentialState{State: "invalid", Reason: "unauthorized", UpdatedAt: t0}, healthReady, 0},
		{"older than a reset", state{enabled: true, limit: 4, changedAt: t0}, store.CredentialState{State: "cooling", Reason: "quota_exhausted", Until: t0.Add(time.Hour), UpdatedAt: t0.Add(-time.Second)}, healthReady, 0},
		{"newer, from another replica", state{enabled: true, limit: 4, changedAt: t0.Add(-time.Hour)}, store.CredentialState{State: "cooling", Reason: "quota_exhausted", Until: t0.Add(time.Hour), UpdatedAt: t0.Add(-time.Second)}, healthCooling, OutcomeQuotaExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, fx := transition(testRules, tt.from, event{kind: evRestore, stored: tt.stored}, t0)
			r := s.reason
			if s.health == healthReady {
				r = 0
			}
			if s.health != tt.health || r != tt.reason {
				t.Errorf("got health %d reason %v, want %d %v", s.health, r, tt.health, tt.reason)
			}
			if fx.persist != persistNone {
				t.Error("a restored state was written back")
			}
			if s.health == healthInvalid && s.nextCheck.Before(t0) {
				t.Errorf("next check in the past: %v", s.nextCheck)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		n      int
		jitter float64
		want   time.Duration
	}{
		{1, 0, 500 * time.Millisecond},
		{2, 0, time.Second},
		{3, 0, 2 * time.Second},
		{6, 0, 16 * time.Second},
		{7, 0, 16 * time.Second},
		{1000, 0, 16 * time.Second},
		{1, 1, 600 * time.Millisecond},
		{1, -1, 400 * time.Millisecond},
		{6, 1, 19200 * time.Millisecond},
		{6, 5, 19200 * time.Millisecond}, // clamped to ±20 %
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("n=%d/jitter=%v", tt.n, tt.jitter), func(t *testing.T) {
			if got := testRules.backoff(tt.n, tt.jitter); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("success resets", func(t *testing.T) {
		s := state{enabled: true, limit: 4, inFlight: 3}
		for range 2 {
			s, _ = transition(testRules, s, event{kind: evOutcome, outcome: OutcomeServerError}, t0)
		}
		if s.failures != 2 || s.until != t0.Add(time.Second) {
			t.Fatalf("got failures %d until %v", s.failures, s.until.Sub(t0))
		}
		now := t0.Add(2 * time.Second) // the cooldown is over
		s, _ = transition(testRules, s, event{kind: evOutcome, outcome: OutcomeSuccess}, now)
		s, _ = transition(testRules, s, event{kind: evOutcome, outcome: OutcomeTransport}, now)
		if s.failures != 1 || s.until != now.Add(500*time.Millisecond) {
			t.Errorf("after a success the back-off restarts at 0.5 s; got failures %d, %v", s.failures, s.until.Sub(now))
		}
	})
}

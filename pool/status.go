package pool

import "time"

// States a credential is reported in.
const (
	StateReady    = "ready"
	StateCooling  = "cooling"
	StateInvalid  = "invalid"
	StateDisabled = "disabled"
)

// Status is the pool as the admin API shows it. It never holds a secret.
type Status struct {
	Credentials []CredentialStatus `json:"credentials"`
	Totals      Totals             `json:"totals"`
}

// CredentialStatus is one credential's health, load and counters.
type CredentialStatus struct {
	ID      string `json:"id"`
	Label   string `json:"label,omitempty"`
	Email   string `json:"email"`
	Enabled bool   `json:"enabled"`
	// State is StateReady, StateCooling, StateInvalid or StateDisabled.
	State string `json:"state"`
	// CooldownUntil is the end of the cooldown (StateCooling), else zero.
	CooldownUntil time.Time `json:"cooldown_until,omitzero"`
	// Reason is the outcome behind a cooldown or invalid state, e.g. "rate_limited".
	Reason              string    `json:"reason,omitempty"`
	InFlight            int       `json:"in_flight"`
	Limit               int       `json:"limit"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	LastError           string    `json:"last_error,omitempty"`
	LastErrorAt         time.Time `json:"last_error_at,omitzero"`
	Requests            int64     `json:"requests"`
	Failures            int64     `json:"failures"`
	InputTokens         int64     `json:"input_tokens"`
	OutputTokens        int64     `json:"output_tokens"`
}

// Totals sums the pool.
type Totals struct {
	Credentials  int   `json:"credentials"`
	Ready        int   `json:"ready"`
	Cooling      int   `json:"cooling"`
	Invalid      int   `json:"invalid"`
	Disabled     int   `json:"disabled"`
	InFlight     int   `json:"in_flight"`
	Capacity     int   `json:"capacity"` // sum of the limits of ready credentials
	Requests     int64 `json:"requests"`
	Failures     int64 `json:"failures"`
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

// stateName reports v's state at now (a cooldown past its end is ready,
// even before the actor's timer has fired).
func (v *view) stateName(now time.Time) string {
	switch {
	case !v.enabled:
		return StateDisabled
	case v.health == healthInvalid:
		return StateInvalid
	case v.health == healthCooling && now.Before(v.until):
		return StateCooling
	}
	return StateReady
}

// Status reports every credential, in Sync order. It reads the published
// state without messaging the actors, so it works whether or not Run is going.
func (p *Pool) Status() Status {
	s := p.snap.Load()
	now := p.now()
	st := Status{Credentials: make([]CredentialStatus, 0, len(s.list))}
	t := &st.Totals
	for _, e := range s.list {
		v, c := e.view.Load(), e.cred.Load()
		cs := CredentialStatus{
			ID: e.id, Label: c.Label, Email: c.Email, Enabled: v.enabled,
			State:    v.stateName(now),
			InFlight: int(e.inFlight.Load()), Limit: v.limit, ConsecutiveFailures: v.failures,
			LastError: v.lastErr, LastErrorAt: v.lastErrAt,
			Requests: e.requests.Load(), Failures: e.failures.Load(),
			InputTokens: e.tokensIn.Load(), OutputTokens: e.tokensOut.Load(),
		}
		switch cs.State {
		case StateCooling:
			cs.CooldownUntil, cs.Reason = v.until, v.reason.String()
			t.Cooling++
		case StateInvalid:
			cs.Reason = v.reason.String()
			t.Invalid++
		case StateDisabled:
			t.Disabled++
		case StateReady:
			t.Ready++
			t.Capacity += v.limit
		}
		t.Credentials++
		t.InFlight += cs.InFlight
		t.Requests += cs.Requests
		t.Failures += cs.Failures
		t.InputTokens += cs.InputTokens
		t.OutputTokens += cs.OutputTokens
		st.Credentials = append(st.Credentials, cs)
	}
	return st
}

// Availability summarises why no credential could be leased, for the
// dispatcher's error. It scans every credential: call it on that path only.
type Availability struct {
	Configured  int // credentials known to the pool
	Enabled     int
	Ready       int // enabled and ready (possibly at their limit)
	RateLimited int // enabled, cooling after a 429 (rate limit or quota)
	Cooling     int // enabled, cooling for another reason
	Invalid     int // enabled, invalid
	// NextReady is the earliest end of a cooldown among enabled
	// credentials; zero when none is cooling.
	NextReady time.Time
	// NextRateLimitEnd is the same among the rate-limited ones.
	NextRateLimitEnd time.Time
}

// Availability reports the pool's current availability.
func (p *Pool) Availability() Availability {
	s := p.snap.Load()
	now := p.now()
	a := Availability{Configured: len(s.list)}
	earliest := func(t *time.Time, u time.Time) {
		if t.IsZero() || u.Before(*t) {
			*t = u
		}
	}
	for _, e := range s.list {
		v := e.view.Load()
		if !v.enabled {
			continue
		}
		a.Enabled++
		switch v.stateName(now) {
		case StateReady:
			a.Ready++
		case StateInvalid:
			a.Invalid++
		case StateCooling:
			earliest(&a.NextReady, v.until)
			if v.reason == OutcomeRateLimited || v.reason == OutcomeQuotaExhausted {
				a.RateLimited++
				earliest(&a.NextRateLimitEnd, v.until)
			} else {
				a.Cooling++
			}
		}
	}
	return a
}

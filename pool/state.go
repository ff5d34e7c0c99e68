package pool

import (
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// This file is the actor's brain: a pure function from (state, event, now)
// to (state, effects). It does no I/O, reads no clock and draws no random
// numbers (the jitter arrives with the event), so every rule is table-tested.

// health is a credential's own health, independent of enabled/disabled.
type health uint8

const (
	healthReady health = iota
	healthCooling
	healthInvalid
)

// rules are the timing parameters of the transition function (from Config).
type rules struct {
	backoffBase, backoffMax time.Duration
	jitter                  float64 // fraction, e.g. 0.2 for ±20%
	rateLimitCooldown       time.Duration
	quotaCooldown           time.Duration
	forbiddenCooldown       time.Duration
	// recheck is the interval between credits checks of an invalid
	// credential; zero when the pool has no Checker.
	recheck time.Duration
	// serverRetryAfterMax caps a Retry-After that comes with a 5xx, 529 or
	// other back-off failure (zero: such a Retry-After is ignored).
	serverRetryAfterMax time.Duration
}

// maxServerRetryAfter is rules.serverRetryAfterMax: a server that asks for
// more is still tried again after 5 minutes.
const maxServerRetryAfter = 5 * time.Minute

// state is everything an actor knows about its credential's health.
type state struct {
	enabled  bool
	health   health
	until    time.Time // end of the cooldown (healthCooling)
	reason   Outcome   // why cooling or invalid
	failures int       // consecutive back-off failures (reset on success)
	inFlight int
	limit    int

	checking  bool      // a credits check is outstanding
	checkGen  uint64    // bumped when an outstanding check becomes stale
	nextCheck time.Time // when an invalid credential is checked next; zero: never

	changedAt time.Time // last health change, to ignore our own state echoed by the store
	lastErr   string
	lastErrAt time.Time
}

type eventKind uint8

const (
	evAdmit   eventKind = iota // a request asks for a slot
	evOutcome                  // a lease ended
	evTick                     // the actor's timer fired
	evReset                    // an operator cleared the state
	evUpdate                   // Sync: enabled, limit or secret changed
	evCheck                    // a background credits check answered
	evRestore                  // a state read from the store
)

type event struct {
	kind       eventKind
	outcome    Outcome       // evOutcome, evCheck
	retryAfter time.Duration // evOutcome, evCheck
	jitter     float64       // evOutcome: uniform in [-1, 1]
	err        string        // evOutcome, evCheck: safe error text
	gen        uint64        // evCheck: the checkGen the check was started with
	enabled    bool          // evUpdate
	limit      int           // evUpdate
	secret     bool          // evUpdate: email, token or cloud id changed
	stored     store.CredentialState
}

type persistOp uint8

const (
	persistNone  persistOp = iota
	persistSet             // the state's record (cooling, invalid)
	persistReady           // a "ready" record: recovered (never a deletion)
)

// effects are what the actor must do after a transition.
type effects struct {
	admitted bool
	persist  persistOp
	check    bool // start a background credits check (with state.checkGen)
	cooldown bool // a cooldown started or was extended (reason: state.reason)
	invalid  bool // the credential became invalid
	// recovered: the credential left cooling or invalid
	recovered bool
	// freed is the number of slots that became available to new requests.
	freed int
}

// free is the number of requests the credential would admit now.
func (s state) free() int {
	if !s.enabled || s.health != healthReady || s.inFlight >= s.limit {
		return 0
	}
	return s.limit - s.inFlight
}

// level is the credential's place in the pick index.
func (s state) level() int32 {
	switch {
	case !s.enabled || s.health != healthReady:
		return levelNone
	case s.inFlight >= s.limit:
		return levelFull
	case s.inFlight >= numLevels-1:
		return numLevels - 1
	default:
		return int32(s.inFlight)
	}
}

// wakeAt is when the actor's timer must fire next; zero for never.
func (s state) wakeAt() time.Time {
	switch {
	case s.health == healthCooling:
		return s.until
	case s.health == healthInvalid && !s.checking:
		return s.nextCheck
	}
	return time.Time{}
}

// persisted reports whether a state with this reason is written to the store.
// Short back-off cooldowns (5xx, transport) stay in memory.
func persisted(h health, reason Outcome) bool {
	if h == healthInvalid {
		return true
	}
	switch reason {
	case OutcomeRateLimited, OutcomeQuotaExhausted, OutcomeForbidden:
		return h == healthCooling
	}
	return false
}

// penalty reports whether an outcome counts as the credential's failure.
func penalty(o Outcome) bool {
	switch o {
	case OutcomeSuccess, OutcomeClientError, OutcomeCanceled:
		return false
	}
	return true
}

// backoff is the credential's cooldown after its n-th consecutive failure
// (n ≥ 1): base doubling up to max, then scaled by 1 + jitter×j, j ∈ [-1, 1].
func (r rules) backoff(n int, j float64) time.Duration {
	d := r.backoffBase
	for i := 1; i < n && d < r.backoffMax; i++ {
		d *= 2
	}
	d = min(d, r.backoffMax)
	return time.Duration(float64(d) * (1 + r.jitter*max(-1, min(1, j))))
}

// transition applies ev to s at time now.
func transition(r rules, s state, ev event, now time.Time) (state, effects) {
	before := s.free()
	var fx effects
	s.expire(now, &fx)
	switch ev.kind {
	case evAdmit:
		if s.free() > 0 {
			s.inFlight++
			fx.admitted = true
		}
	case evOutcome:
		if s.inFlight > 0 {
			s.inFlight--
		}
		s.onOutcome(r, ev, now, &fx)
	case evTick:
		if s.health == healthInvalid && !s.checking && !s.nextCheck.IsZero() && !now.Before(s.nextCheck) {
			s.startCheck(&fx)
		}
	case evReset:
		s.failures = 0
		s.recover(now, &fx)
		fx.persist = persistReady
	case evUpdate:
		s.limit = max(1, ev.limit)
		reenabled := ev.enabled && !s.enabled
		s.enabled = ev.enabled
		if ev.secret {
			s.failures = 0
		}
		if ev.enabled && (reenabled || ev.secret) && s.blocked() {
			s.recover(now, &fx)
			fx.persist = persistReady
		}
	case evCheck:
		s.onCheck(r, ev, now, &fx)
	case evRestore:
		s.onRestore(r, ev.stored, now, &fx)
		fx.persist, fx.cooldown = persistNone, false // it came from the store
	}
	if after := s.free(); after > before {
		fx.freed = after - before
	}
	return s, fx
}

// blocked: invalid, or cooling after a 403 (both lifted by a good check or an
// operator).
func (s state) blocked() bool {
	return s.health == healthInvalid || (s.health == healthCooling && s.reason == OutcomeForbidden)
}

func (s *state) expire(now time.Time, fx *effects) {
	if s.health == healthCooling && !now.Before(s.until) {
		s.health = healthReady
		s.changedAt = s.until
		s.until = time.Time{}
		s.reason = OutcomeSuccess
		fx.recovered = true
	}
}

func (s *state) onOutcome(r rules, ev event, now time.Time, fx *effects) {
	o := ev.outcome
	if penalty(o) {
		s.lastErr = ev.err
		if s.lastErr == "" {
			s.lastErr = o.String()
		}
		s.lastErrAt = now
	}
	switch o {
	case OutcomeSuccess:
		s.failures = 0
	case OutcomeClientError, OutcomeCanceled:
		// The client's own doing: no penalty.
	case OutcomeRateLimited:
		s.cool(now, now.Add(orDefault(ev.retryAfter, r.rateLimitCooldown)), o, fx)
	case OutcomeQuotaExhausted:
		s.cool(now, now.Add(orDefault(ev.retryAfter, r.quotaCooldown)), o, fx)
	case OutcomeUnauthorized:
		s.invalidate(r, now, o, fx)
	case OutcomeForbidden:
		if s.health == healthInvalid {
			return
		}
		s.cool(now, now.Add(r.forbiddenCooldown), o, fx)
		if r.recheck > 0 && !s.checking {
			s.startCheck(fx)
		}
	default: // server error, transport, timeout, stream broken, unknown
		s.failures++
		d := r.backoff(s.failures, ev.jitter)
		if ev.retryAfter > 0 { // a 503 or 529 that said when to come back
			d = max(d, min(ev.retryAfter, r.serverRetryAfterMax))
		}
		s.cool(now, now.Add(d), o, fx)
	}
}

func (s *state) onCheck(r rules, ev event, now time.Time, fx *effects) {
	if ev.gen != s.checkGen || !s.checking {
		return // started before a reset, re-enable or new secret
	}
	s.checking = false
	switch ev.outcome {
	case OutcomeSuccess:
		if s.blocked() {
			s.recover(now, fx)
			fx.persist = persistReady
		}
	case OutcomeUnauthorized, OutcomeForbidden:
		if ev.err != "" {
			s.lastErr, s.lastErrAt = ev.err, now
		}
		s.invalidate(r, now, ev.outcome, fx)
	case OutcomeRateLimited, OutcomeQuotaExhausted:
		d := r.rateLimitCooldown
		if ev.outcome == OutcomeQuotaExhausted {
			d = r.quotaCooldown
		}
		if s.health == healthInvalid {
			s.health = healthReady // valid after all, but out of credits
			s.nextCheck = time.Time{}
		}
		s.cool(now, now.Add(orDefault(ev.retryAfter, d)), ev.outcome, fx)
	default: // inconclusive: try again later
		if s.health == healthInvalid && r.recheck > 0 {
			s.nextCheck = now.Add(r.recheck)
		}
	}
}

func (s *state) onRestore(r rules, st store.CredentialState, now time.Time, fx *effects) {
	if !s.changedAt.IsZero() && !st.UpdatedAt.After(s.changedAt) {
		return // our own state echoed back, or older than what we know
	}
	reason, known := ParseOutcome(st.Reason)
	switch st.State {
	case store.StateCooling:
		if !st.Until.After(now) {
			return
		}
		if !known {
			reason = OutcomeRateLimited
		}
		if s.cool(now, st.Until, reason, fx) {
			s.changedAt = latest(st.UpdatedAt, now)
		}
	case store.StateReady:
		// Recovered elsewhere (an operator's reset, a re-enable or a
		// passing re-check on another replica) after what we know.
		if s.health != healthReady {
			s.recover(now, fx)
			s.failures = 0
			s.changedAt = latest(st.UpdatedAt, now)
		}
	case store.StateInvalid:
		if s.health == healthInvalid {
			return
		}
		if !known {
			reason = OutcomeUnauthorized
		}
		s.health, s.until, s.reason = healthInvalid, time.Time{}, reason
		s.changedAt = latest(st.UpdatedAt, now)
		s.nextCheck = time.Time{}
		if r.recheck > 0 {
			s.nextCheck = latest(st.UpdatedAt.Add(r.recheck), now)
		}
		fx.invalid = true
	}
}

// cool starts or extends a cooldown; it never shortens one, nor turns an
// invalid credential into a cooling one. It reports whether anything changed.
func (s *state) cool(now, until time.Time, reason Outcome, fx *effects) bool {
	if s.health == healthInvalid || !until.After(now) {
		return false
	}
	if s.health == healthCooling && !until.After(s.until) {
		return false
	}
	s.health, s.until, s.reason, s.changedAt = healthCooling, until, reason, now
	fx.cooldown = true
	if persisted(s.health, reason) {
		fx.persist = persistSet
	}
	return true
}

func (s *state) invalidate(r rules, now time.Time, reason Outcome, fx *effects) {
	s.nextCheck = time.Time{}
	if r.recheck > 0 {
		s.nextCheck = now.Add(r.recheck)
	}
	if s.health == healthInvalid && s.reason == reason {
		return
	}
	s.health, s.until, s.reason, s.changedAt = healthInvalid, time.Time{}, reason, now
	fx.invalid = true
	fx.persist = persistSet
}

func (s *state) recover(now time.Time, fx *effects) {
	if s.health != healthReady {
		fx.recovered = true
	}
	s.health, s.until, s.reason, s.changedAt = healthReady, time.Time{}, OutcomeSuccess, now
	s.nextCheck = time.Time{}
	if s.checking {
		s.checking = false
		s.checkGen++
	}
}

func (s *state) startCheck(fx *effects) {
	s.checking = true
	s.checkGen++
	fx.check = true
}

// record is the store form of the state, for persistSet.
func (s state) record(id string) store.CredentialState {
	st := store.CredentialState{CredentialID: id, Reason: s.reason.String(), UpdatedAt: s.changedAt}
	if s.health == healthInvalid {
		st.State = store.StateInvalid
	} else {
		st.State, st.Until = store.StateCooling, s.until
	}
	return st
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

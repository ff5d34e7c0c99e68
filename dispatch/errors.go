package dispatch

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// Kind says why Do found no credential to commit to.
type Kind uint8

const (
	// NoCredentials: none is configured or enabled (or the pool is not running).
	NoCredentials Kind = iota + 1
	// AllRateLimited: every usable credential is cooling after a 429; RetryAfter
	// is the earliest end of those cooldowns.
	AllRateLimited
	// AllCooling: every enabled credential is cooling down (some may be
	// invalid, not all: see CredentialsInvalid); RetryAfter is the earliest
	// end of a cooldown.
	AllCooling
	// QueueFull: every usable credential is busy and the queue is full.
	QueueFull
	// QueueTimeout: no slot freed up within Config.QueueTimeout.
	QueueTimeout
	// UpstreamFailed: attempts or the retry deadline ran out on upstream failures.
	UpstreamFailed
	// BudgetExhausted: the retry budget is spent; the request failed fast.
	BudgetExhausted
	// CredentialsInvalid: every enabled credential is invalid (the upstream
	// answered 401, or its credits check said USER_BLOCKED). RetryAfter is
	// zero (no Retry-After): a credential comes back when an operator
	// resets, re-enables or replaces it, at any moment, or when a background
	// re-check (at most every 5 minutes per credential) passes, which a
	// token the upstream really refused never does. There is no time to
	// promise, and a client retrying sooner costs nothing upstream: invalid
	// credentials are never called.
	CredentialsInvalid
	// Canceled: the request's context ended (Last is ctx.Err()).
	Canceled
)

var kindNames = [...]string{
	NoCredentials:      "no_credentials",
	AllRateLimited:     "all_rate_limited",
	AllCooling:         "all_cooling",
	QueueFull:          "queue_full",
	QueueTimeout:       "queue_timeout",
	UpstreamFailed:     "upstream_failed",
	BudgetExhausted:    "budget_exhausted",
	CredentialsInvalid: "credentials_invalid",
	Canceled:           "canceled",
}

// String is the kind's snake_case name (also a metric label value).
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "unknown"
}

// Error is Do's failure when no upstream error is returned as is.
type Error struct {
	Kind Kind
	// Message is safe to show to the client, e.g.
	// "all 12 credentials are rate limited; earliest retry in 41 s".
	Message string
	// RetryAfter is a whole number of seconds (zero when unknown).
	RetryAfter time.Duration
	// Last is the last upstream error, or ctx.Err() for Canceled; may be nil.
	Last error
}

func (e *Error) Error() string {
	if e.Last != nil {
		return fmt.Sprintf("dispatch: %s: %s: last error: %v", e.Kind, e.Message, e.Last)
	}
	return fmt.Sprintf("dispatch: %s: %s", e.Kind, e.Message)
}

// Unwrap returns Last, so errors.Is(err, context.Canceled) and errors.As to
// the upstream error type work through an *Error.
func (e *Error) Unwrap() error { return e.Last }

// Classify turns one attempt's error into an outcome. When ctx itself has
// ended the attempt is OutcomeCanceled whatever the error says: the client
// went away (or its own deadline passed), which never counts against a
// credential. Otherwise an error in the chain with an Outcome() method
// decides; then context.Canceled → OutcomeCanceled, context.DeadlineExceeded
// → OutcomeTimeout, anything else → OutcomeTransport.
func Classify(ctx context.Context, err error) pool.Outcome {
	if err == nil {
		return pool.OutcomeSuccess
	}
	if ctx.Err() != nil {
		return pool.OutcomeCanceled
	}
	var oe interface{ Outcome() pool.Outcome }
	if errors.As(err, &oe) {
		if o := oe.Outcome(); o != pool.OutcomeSuccess && o.String() != "unknown" {
			return o
		}
		return pool.OutcomeTransport
	}
	switch {
	case errors.Is(err, context.Canceled):
		return pool.OutcomeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return pool.OutcomeTimeout
	}
	return pool.OutcomeTransport
}

// seconds rounds d up to whole seconds, at least one.
func seconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// unavailable builds the error for "no credential can serve this request"
// from the pool's availability, for a request that has made no attempt (or
// whose failures say less than the pool's state does).
func (d *Dispatcher) unavailable(acquireErr error, last error) *Error {
	if errors.Is(acquireErr, pool.ErrClosed) {
		return &Error{Kind: NoCredentials, Message: "the credential pool is not running", Last: last}
	}
	return unavailableFrom(d.pool.Availability(), d.now(), last)
}

func unavailableFrom(a pool.Availability, now time.Time, last error) *Error {
	switch {
	case a.Enabled == 0:
		return &Error{Kind: NoCredentials, Message: "no credentials are configured or enabled", Last: last}
	case a.Ready == 0 && a.Cooling == 0 && a.RateLimited > 0:
		return allRateLimited(a, now, last)
	case a.Ready == 0 && a.Cooling+a.RateLimited == 0:
		return allInvalid(a.Invalid, last)
	}
	s := 1
	if !a.NextReady.IsZero() {
		s = seconds(a.NextReady.Sub(now))
	}
	if a.Cooling+a.RateLimited == 0 { // credentials changed under us
		return &Error{Kind: AllCooling, Message: "no credential is available right now; retry in 1 s",
			RetryAfter: time.Second, Last: last}
	}
	msg := fmt.Sprintf("all %d %s cooling down; earliest retry in %d s",
		a.Cooling+a.RateLimited, plural(a.Cooling+a.RateLimited, "credential is", "credentials are"), s)
	if a.Invalid > 0 {
		msg += fmt.Sprintf(" (%d more %s invalid)", a.Invalid, plural(a.Invalid, "is", "are"))
	}
	return &Error{Kind: AllCooling, Message: msg, RetryAfter: time.Duration(s) * time.Second, Last: last}
}

// allInvalid is the error when every enabled credential (n of them) is invalid.
func allInvalid(n int, last error) *Error {
	return &Error{Kind: CredentialsInvalid, Last: last, Message: fmt.Sprintf(
		"all %d %s invalid (the upstream refused %s); an administrator must re-enable or replace %s",
		n, plural(n, "credential is", "credentials are"), plural(n, "its token", "their tokens"), plural(n, "it", "them"))}
}

// allRateLimited is the error when every usable credential is rate limited.
func allRateLimited(a pool.Availability, now time.Time, last error) *Error {
	s := seconds(a.NextRateLimitEnd.Sub(now))
	msg := fmt.Sprintf("all %d %s rate limited; earliest retry in %d s",
		a.RateLimited, plural(a.RateLimited, "credential is", "credentials are"), s)
	if a.Invalid > 0 {
		msg += fmt.Sprintf(" (%d more %s invalid)", a.Invalid, plural(a.Invalid, "is", "are"))
	}
	return &Error{Kind: AllRateLimited, Message: msg, RetryAfter: time.Duration(s) * time.Second, Last: last}
}

// stop is why a request that made attempts may not make another.
type stop uint8

const (
	stopAttempts    stop = iota // Config.MaxAttempts reached
	stopDeadline                // the retry deadline passed, or the back-off would pass it
	stopBudget                  // the retry budget is spent
	stopNothingLeft             // no credential it has not tried can serve
)

// rateLimitedOnly: every failed attempt was a 429 (rate limit or quota).
const rateLimitedOnly = 1<<pool.OutcomeRateLimited | 1<<pool.OutcomeQuotaExhausted

// upstreamFailure: the outcome is the upstream's failure to answer (as
// opposed to an answer about the credential: 429, 401, 403).
func upstreamFailure(o pool.Outcome) bool {
	switch o {
	case pool.OutcomeServerError, pool.OutcomeTransport, pool.OutcomeTimeout, pool.OutcomeStreamBroken:
		return true
	}
	return false
}

// giveUp is the answer to a request that made attempts and may make no
// more, in this order:
//   - its last answer was a 403: that 403 itself (the api passes the
//     upstream's refusal on), as for the second 403;
//   - every failure was a 429: AllRateLimited (see rateLimited);
//   - the retry budget is spent: BudgetExhausted;
//   - no credential is left, none is ready and the last failure was not
//     the upstream's (e.g. a 401): what the pool's state says
//     (CredentialsInvalid, AllCooling, AllRateLimited, NoCredentials), as
//     for a request that made no attempt;
//   - else (attempts or time ran out on 5xx, transport errors, timeouts,
//     broken streams): UpstreamFailed.
func (d *Dispatcher) giveUp(r *request, why stop) error {
	switch {
	case r.lastOut == pool.OutcomeForbidden:
		return r.last
	case r.outcomes != 0 && r.outcomes&^rateLimitedOnly == 0:
		return d.rateLimited(r)
	case why == stopBudget:
		return &Error{Kind: BudgetExhausted, Last: r.last,
			Message: "the upstream is failing; the retry budget is spent, so the request was not retried"}
	case why == stopNothingLeft && !upstreamFailure(r.lastOut):
		if a := d.pool.Availability(); a.Ready == 0 {
			return unavailableFrom(a, d.now(), r.last)
		}
	}
	return d.failed(r, why)
}

// budgetSpent is the answer when the retry budget refuses the request's
// next attempt. The budget only refused something if that attempt could
// have been made: when no credential the request has not tried is left
// (Untried) or none is ready at all, the request ran out of credentials,
// not of budget, and gets that answer (e.g. CredentialsInvalid after a 401
// on the only credential). Both counts are scans without allocation; a
// tried credential has just failed, so it is rarely the ready one.
func (d *Dispatcher) budgetSpent(r *request) error {
	if d.pool.Untried(r.tried) == 0 || d.pool.Availability().Ready == 0 {
		return d.giveUp(r, stopNothingLeft)
	}
	return d.giveUp(r, stopBudget)
}

// rateLimited is the error for a request whose every attempt met a 429.
// When every usable credential is rate limited the message counts them all
// ("all 12 credentials are rate limited; earliest retry in 41 s"); when
// some could still serve (the request ran out of attempts, time or retry
// budget first) it counts the credentials this request tried, which is what
// it knows to be limited ("all 5 credentials tried are rate limited; …").
// RetryAfter is the earliest end of a rate-limit cooldown in the pool, in
// whole seconds rounded up (1 s if none is cooling any more).
func (d *Dispatcher) rateLimited(r *request) *Error {
	a := d.pool.Availability()
	now := d.now()
	if a.Ready == 0 && a.Cooling == 0 && a.RateLimited > 0 {
		return allRateLimited(a, now, r.last)
	}
	s := 1
	if !a.NextRateLimitEnd.IsZero() {
		s = seconds(a.NextRateLimitEnd.Sub(now))
	}
	n := len(r.tried)
	msg := fmt.Sprintf("all %d credentials tried are rate limited; earliest retry in %d s", n, s)
	if n == 1 {
		msg = fmt.Sprintf("the credential tried is rate limited; earliest retry in %d s", s)
	}
	return &Error{Kind: AllRateLimited, Message: msg, RetryAfter: time.Duration(s) * time.Second, Last: r.last}
}

// failed is UpstreamFailed: attempts or time ran out on upstream failures.
func (d *Dispatcher) failed(r *request, why stop) *Error {
	msg := fmt.Sprintf("the upstream failed on %d %s", r.attempts, plural(r.attempts, "attempt", "attempts"))
	if why == stopDeadline && r.lastOut == pool.OutcomeTimeout {
		msg += fmt.Sprintf("; the last did not answer within the %d s retry deadline", seconds(d.cfg.RetryDeadline))
	}
	return &Error{Kind: UpstreamFailed, Last: r.last, Message: msg}
}

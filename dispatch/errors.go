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
	// AllCooling: every enabled credential is cooling down or invalid;
	// RetryAfter is the earliest end of a cooldown (zero when all are invalid).
	AllCooling
	// QueueFull: every usable credential is busy and the queue is full.
	QueueFull
	// QueueTimeout: no slot freed up within Config.QueueTimeout.
	QueueTimeout
	// UpstreamFailed: attempts or the retry deadline ran out on upstream failures.
	UpstreamFailed
	// BudgetExhausted: the retry budget is spent; the request failed fast.
	BudgetExhausted
	// Canceled: the request's context ended (Last is ctx.Err()).
	Canceled
)

var kindNames = [...]string{
	NoCredentials:   "no_credentials",
	AllRateLimited:  "all_rate_limited",
	AllCooling:      "all_cooling",
	QueueFull:       "queue_full",
	QueueTimeout:    "queue_timeout",
	UpstreamFailed:  "upstream_failed",
	BudgetExhausted: "budget_exhausted",
	Canceled:        "canceled",
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

// unavailable builds the error for "no credential can serve this request".
func (d *Dispatcher) unavailable(acquireErr error, attempts int, last error) *Error {
	if errors.Is(acquireErr, pool.ErrClosed) {
		return &Error{Kind: NoCredentials, Message: "the credential pool is not running", Last: last}
	}
	a := d.pool.Availability()
	now := d.now()
	switch {
	case a.Enabled == 0:
		return &Error{Kind: NoCredentials, Message: "no credentials are configured or enabled", Last: last}
	case a.Ready == 0 && a.Cooling == 0 && a.RateLimited > 0:
		s := seconds(a.NextRateLimitEnd.Sub(now))
		msg := fmt.Sprintf("all %d %s rate limited; earliest retry in %d s",
			a.RateLimited, plural(a.RateLimited, "credential is", "credentials are"), s)
		if a.Invalid > 0 {
			msg += fmt.Sprintf(" (%d more %s invalid)", a.Invalid, plural(a.Invalid, "is", "are"))
		}
		return &Error{Kind: AllRateLimited, Message: msg, RetryAfter: time.Duration(s) * time.Second, Last: last}
	case attempts > 0:
		return d.failed(attempts, last)
	case a.Ready == 0 && a.Cooling+a.RateLimited == 0:
		return &Error{Kind: AllCooling, Last: last, Message: fmt.Sprintf("all %d %s invalid",
			a.Invalid, plural(a.Invalid, "credential is", "credentials are"))}
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

func (d *Dispatcher) failed(attempts int, last error) *Error {
	return &Error{Kind: UpstreamFailed, Last: last, Message: fmt.Sprintf("the upstream failed on %d %s",
		attempts, plural(attempts, "attempt", "attempts"))}
}

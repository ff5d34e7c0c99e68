package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/sethvargo/go-limiter"

	"github.com/atlassian-proxy/atlassian-proxy/openaierr"
	"github.com/atlassian-proxy/atlassian-proxy/ratelimit"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// rateWindow is the window of store.APIToken.RateLimit (requests per minute).
const rateWindow = time.Minute

// tokenLimits enforces the per-token rate limits: one limiter store per
// distinct rate, created on first use and keyed by token id. A token whose
// rate changes moves to another store, with a full bucket. With the default
// in-memory stores the limits hold per replica (each process counts its own
// requests); Deps.Limiters may make stores shared by replicas.
type tokenLimits struct {
	make   func(perMinute int) (limiter.Store, error) // nil: ratelimit.Memory
	stores sync.Map                                   // int (requests per minute) → limiter.Store

	mu     sync.Mutex // creation and Close
	closed bool
}

// take counts one request of tok. ok is false when tok has used its rate
// for the current window; reset is when the window ends. A token without
// a limit, or a limiter that cannot answer (closed), lets the request
// through.
func (l *tokenLimits) take(ctx context.Context, tok store.APIToken) (ok bool, limit, remaining uint64, reset time.Time, err error) {
	if tok.RateLimit <= 0 {
		return true, 0, 0, time.Time{}, nil
	}
	st, err := l.store(tok.RateLimit)
	if err != nil {
		return true, 0, 0, time.Time{}, err
	}
	limit, remaining, resetNanos, ok, err := st.Take(ctx, tok.ID)
	if err != nil {
		return true, 0, 0, time.Time{}, fmt.Errorf("api: token rate limit: %w", err)
	}
	return ok, limit, remaining, time.Unix(0, int64(resetNanos)), nil
}

// store returns the limiter store of rate, creating it on first use.
func (l *tokenLimits) store(rate int) (limiter.Store, error) {
	if st, ok := l.stores.Load(rate); ok {
		return st.(limiter.Store), nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("api: token rate limit: %w", limiter.ErrStopped)
	}
	if st, ok := l.stores.Load(rate); ok {
		return st.(limiter.Store), nil
	}
	var st limiter.Store
	var err error
	if l.make != nil {
		st, err = l.make(rate)
	} else {
		st, err = ratelimit.Memory(uint64(rate), rateWindow)
	}
	if err != nil {
		return nil, fmt.Errorf("api: token rate limit: %w", err)
	}
	l.stores.Store(rate, st)
	return st, nil
}

// close stops every store; later takes let requests through.
func (l *tokenLimits) close(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	var errs []error
	l.stores.Range(func(k, v any) bool {
		errs = append(errs, v.(limiter.Store).Close(ctx))
		l.stores.Delete(k)
		return true
	})
	return errors.Join(errs...)
}

// rateLimited counts the request against its token's rate limit and sets
// OpenAI's x-ratelimit headers. When the limit is reached it answers 429
// with Retry-After and returns false.
func (a *API) rateLimited(w http.ResponseWriter, r *http.Request, tok store.APIToken) bool {
	ok, limit, remaining, reset, err := a.limits.take(r.Context(), tok)
	if err != nil {
		a.logger.LogAttrs(r.Context(), slog.LevelWarn, "token rate limit not checked", slog.String("token_id", tok.ID), slog.Any("error", err))
		return false
	}
	if tok.RateLimit <= 0 {
		return false
	}
	h := w.Header()
	h.Set("X-Ratelimit-Limit-Requests", strconv.FormatUint(limit, 10))
	h.Set("X-Ratelimit-Remaining-Requests", strconv.FormatUint(remaining, 10))
	wait := retryAfterSeconds(time.Until(reset))
	h.Set("X-Ratelimit-Reset-Requests", strconv.FormatInt(wait, 10)+"s")
	if ok {
		return false
	}
	h.Set("Retry-After", strconv.FormatInt(wait, 10))
	a.metrics.rejected(limitToken)
	aerr := &apiError{
		status: http.StatusTooManyRequests, typ: openaierr.TypeRequests, code: "rate_limit_exceeded",
		message: fmt.Sprintf("Rate limit reached for this API key on requests per min (RPM): Limit %d. Please try again in %ds.", limit, wait),
	}
	aerr.log(r.Context())
	aerr.render(w)
	return true
}

// Close releases the API's background resources: the per-token rate
// limiters and their sweeper goroutines. Call it once the server stopped
// serving; requests after it are not rate limited.
func (a *API) Close() error {
	return a.limits.close(context.Background())
}

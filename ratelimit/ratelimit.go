// Package ratelimit builds the limiter stores (github.com/sethvargo/go-limiter)
// of the proxy's rate limits: in-process ones, and a fallback that keeps a
// shared (Redis) limit holding per process while the shared store is away.
package ratelimit

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/sethvargo/go-limiter"
	"github.com/sethvargo/go-limiter/memorystore"
)

// Memory returns an in-process store of tokens per interval. Its sweeper
// goroutine stops on Close; a bucket idle for a few intervals is full
// again, so dropping it loses nothing.
func Memory(tokens uint64, interval time.Duration) (limiter.Store, error) {
	return memorystore.New(&memorystore.Config{
		Tokens:        tokens,
		Interval:      interval,
		SweepInterval: 10 * interval,
		SweepMinTTL:   10 * interval,
		InitialAlloc:  16,
	})
}

// Fallback answers from primary (a store shared by every replica) and,
// when primary fails, from secondary (an in-process store): a limit never
// turns into no limit because the shared store is away. Each call to
// primary gets at most CallTimeout; after a failure, primary is left alone
// for RetryAfter (calls go straight to secondary), so a request never waits
// on a shared store that is down. onError (may be nil) hears each failure
// of primary.
func Fallback(primary, secondary limiter.Store, onError func(error)) limiter.Store {
	return &fallback{primary: primary, secondary: secondary, onError: onError}
}

// Timings of Fallback.
const (
	CallTimeout = 250 * time.Millisecond
	RetryAfter  = time.Second
)

type fallback struct {
	primary, secondary limiter.Store
	onError            func(error)
	failedAt           atomic.Int64 // unix nanos of the last failure of primary; 0: none
	probing            atomic.Bool  // one call is asking primary again after a failure
}

// ask runs call against primary when primary may be asked now, and
// reports whether it answered (ok); otherwise the caller asks secondary.
// While primary is healthy every call asks it; after a failure, it is left
// alone for RetryAfter, and then a single call probes it while the others
// keep to secondary, so a hung primary costs one call CallTimeout, not all.
func (f *fallback) ask(ctx context.Context, call func(context.Context) error) bool {
	if at := f.failedAt.Load(); at != 0 {
		if time.Now().UnixNano()-at < int64(RetryAfter) || !f.probing.CompareAndSwap(false, true) {
			return false
		}
		defer f.probing.Store(false)
	}
	cctx, cancel := context.WithTimeout(ctx, CallTimeout)
	err := call(cctx)
	cancel()
	switch {
	case err == nil || errors.Is(err, limiter.ErrStopped):
		if f.failedAt.Load() != 0 { // a load, not a store, on the healthy path
			f.failedAt.Store(0)
		}
		return true
	case ctx.Err() != nil:
		// The caller gave up (client gone): not primary's fault.
		return false
	}
	f.failedAt.Store(time.Now().UnixNano())
	if f.onError != nil {
		f.onError(err)
	}
	return false
}

func (f *fallback) Take(ctx context.Context, key string) (tokens, remaining, reset uint64, ok bool, err error) {
	if f.ask(ctx, func(c context.Context) error {
		tokens, remaining, reset, ok, err = f.primary.Take(c, key)
		return err
	}) {
		return tokens, remaining, reset, ok, err
	}
	return f.secondary.Take(ctx, key)
}

func (f *fallback) Get(ctx context.Context, key string) (tokens, remaining uint64, err error) {
	if f.ask(ctx, func(c context.Context) error {
		tokens, remaining, err = f.primary.Get(c, key)
		return err
	}) {
		return tokens, remaining, err
	}
	return f.secondary.Get(ctx, key)
}

func (f *fallback) Set(ctx context.Context, key string, tokens uint64, interval time.Duration) error {
	var err error
	if f.ask(ctx, func(c context.Context) error { err = f.primary.Set(c, key, tokens, interval); return err }) {
		return err
	}
	return f.secondary.Set(ctx, key, tokens, interval)
}

func (f *fallback) Burst(ctx context.Context, key string, tokens uint64) error {
	var err error
	if f.ask(ctx, func(c context.Context) error { err = f.primary.Burst(c, key, tokens); return err }) {
		return err
	}
	return f.secondary.Burst(ctx, key, tokens)
}

// Close closes both stores.
func (f *fallback) Close(ctx context.Context) error {
	return errors.Join(f.primary.Close(ctx), f.secondary.Close(ctx))
}

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
	return &fallback{primary: primary, secondary: secondary, onError: onError, now: time.Now}
}

// Timings of Fallback.
const (
	CallTimeout = 250 * time.Millisecond
	RetryAfter  = time.Second
)

type fallback struct {
	primary, secondary limiter.Store
	onError            func(error)
	now                func() time.Time
	failedAt           atomic.Int64 // unix nanos of the last failure of primary; 0: none
}

// usePrimary reports whether primary should be asked now.
func (f *fallback) usePrimary() bool {
	at := f.failedAt.Load()
	return at == 0 || f.now().UnixNano()-at >= int64(RetryAfter)
}

// failed records the outcome of a call to primary and reports whether the
// call must be answered by secondary instead.
func (f *fallback) failed(err error) bool {
	if err == nil || errors.Is(err, limiter.ErrStopped) {
		f.failedAt.Store(0)
		return false
	}
	f.failedAt.Store(f.now().UnixNano())
	if f.onError != nil {
		f.onError(err)
	}
	return true
}

func (f *fallback) Take(ctx context.Context, key string) (tokens, remaining, reset uint64, ok bool, err error) {
	if f.usePrimary() {
		cctx, cancel := context.WithTimeout(ctx, CallTimeout)
		tokens, remaining, reset, ok, err = f.primary.Take(cctx, key)
		cancel()
		if !f.failed(err) {
			return tokens, remaining, reset, ok, err
		}
	}
	return f.secondary.Take(ctx, key)
}

func (f *fallback) Get(ctx context.Context, key string) (tokens, remaining uint64, err error) {
	if f.usePrimary() {
		cctx, cancel := context.WithTimeout(ctx, CallTimeout)
		tokens, remaining, err = f.primary.Get(cctx, key)
		cancel()
		if !f.failed(err) {
			return tokens, remaining, err
		}
	}
	return f.secondary.Get(ctx, key)
}

func (f *fallback) Set(ctx context.Context, key string, tokens uint64, interval time.Duration) error {
	if f.usePrimary() {
		cctx, cancel := context.WithTimeout(ctx, CallTimeout)
		err := f.primary.Set(cctx, key, tokens, interval)
		cancel()
		if !f.failed(err) {
			return err
		}
	}
	return f.secondary.Set(ctx, key, tokens, interval)
}

func (f *fallback) Burst(ctx context.Context, key string, tokens uint64) error {
	if f.usePrimary() {
		cctx, cancel := context.WithTimeout(ctx, CallTimeout)
		err := f.primary.Burst(cctx, key, tokens)
		cancel()
		if !f.failed(err) {
			return err
		}
	}
	return f.secondary.Burst(ctx, key, tokens)
}

// Close closes both stores.
func (f *fallback) Close(ctx context.Context) error {
	return errors.Join(f.primary.Close(ctx), f.secondary.Close(ctx))
}

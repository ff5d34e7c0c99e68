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
// turns into no limit because the shared store is away. onError (may be
// nil) hears each failure of primary.
func Fallback(primary, secondary limiter.Store, onError func(error)) limiter.Store {
	return &fallback{primary: primary, secondary: secondary, onError: onError}
}

type fallback struct {
	primary, secondary limiter.Store
	onError            func(error)
	failing            atomic.Bool
}

func (f *fallback) failed(err error) bool {
	if err == nil || errors.Is(err, limiter.ErrStopped) {
		f.failing.Store(false)
		return false
	}
	f.failing.Store(true)
	if f.onError != nil {
		f.onError(err)
	}
	return true
}

// Degraded reports whether the last call to the shared store failed.
func (f *fallback) Degraded() bool { return f.failing.Load() }

func (f *fallback) Take(ctx context.Context, key string) (tokens, remaining, reset uint64, ok bool, err error) {
	tokens, remaining, reset, ok, err = f.primary.Take(ctx, key)
	if f.failed(err) {
		return f.secondary.Take(ctx, key)
	}
	return tokens, remaining, reset, ok, err
}

func (f *fallback) Get(ctx context.Context, key string) (tokens, remaining uint64, err error) {
	tokens, remaining, err = f.primary.Get(ctx, key)
	if f.failed(err) {
		return f.secondary.Get(ctx, key)
	}
	return tokens, remaining, err
}

func (f *fallback) Set(ctx context.Context, key string, tokens uint64, interval time.Duration) error {
	err := f.primary.Set(ctx, key, tokens, interval)
	if f.failed(err) {
		return f.secondary.Set(ctx, key, tokens, interval)
	}
	return err
}

func (f *fallback) Burst(ctx context.Context, key string, tokens uint64) error {
	err := f.primary.Burst(ctx, key, tokens)
	if f.failed(err) {
		return f.secondary.Burst(ctx, key, tokens)
	}
	return err
}

// Close closes both stores.
func (f *fallback) Close(ctx context.Context) error {
	return errors.Join(f.primary.Close(ctx), f.secondary.Close(ctx))
}

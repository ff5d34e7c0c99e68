package redis

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/sethvargo/go-limiter"
)

// LimiterStore is a github.com/sethvargo/go-limiter Store kept in Redis,
// so that a limit holds across every replica sharing it. Each key is a
// fixed window: the first take after a window ended opens a new one of
// the configured interval, with the full number of tokens. Windows follow
// Redis's clock (TIME), not the replicas'.
//
// A bucket is the hash <prefix>rl:<name>:<key> (fields max, ivl, rem,
// rst) and expires one interval after its window ends. A high limit is
// taken in batches kept in process (see Reservations below). Keys are stored as
// given: hash them first if they are sensitive (see limiter.Store).
//
// Calls fail with the Redis error (wrapping store.ErrUnavailable when Redis
// cannot be reached), so that the caller can fall back to an in-process
// limiter; after Close, every call returns limiter.ErrStopped.
type LimiterStore struct {
	s        *Store
	prefix   string // <prefix>rl:<name>:
	tokens   uint64
	interval int64 // milliseconds
	stopped  atomic.Bool

	// batch is how many tokens one Redis call takes (see reserve); 1: no
	// reservations, every Take asks Redis.
	batch int64
	mu    sync.Mutex
	held  map[string]*reservation // by key; batch > 1 only
}

// Reservations. With a high limit, one Redis call per request would cost
// more than the request itself, so a Take that finds no token reserved in
// this process takes a batch of up to tokens/reserveDivisor (at most
// maxReserve) from Redis at once and keeps the rest for the next Takes of
// the same key here, until the window ends (by Redis's clock: the script
// says how long the window has left, counted here from before the call).
// The tokens are taken from Redis before they are used and never used
// after their window, so the replicas together never admit more than the
// limit; a replica may hold a few unused at the end of a window (at most
// batch-1, a hundredth of the limit), which the others then cannot use.
// Concurrent takes of one key wait for the one Redis call of the batch. A
// limit under 2×reserveDivisor takes one token per call, as before: a low
// limit is exact across replicas. The batch is also bounded by the
// window's own limit (Set may give a key a lower one).
const (
	reserveDivisor = 100
	maxReserve     = 64
	// maxHeld bounds the keys with a reservation. Reaching it drops those
	// whose window has ended; if more than half remain, all are dropped
	// (their tokens unused: never more admitted). Either way the next
	// maxHeld/2 new keys need no such sweep.
	maxHeld = 10000
)

// reservation is what one process holds of one key's window.
type reservation struct {
	mu    sync.Mutex
	left  uint64    // tokens taken from Redis, not used yet
	max   uint64    // the window's limit
	rem   uint64    // what Redis had left after the last batch
	rst   int64     // the window's end, Unix ms (Redis's clock: reported, never compared)
	until time.Time // when this process stops using left: the window's end by Redis's clock, moved to ours
}

var _ limiter.Store = (*LimiterStore)(nil)

// Limiter returns a LimiterStore allowing tokens per interval for each key,
// under the name name (limiters with different settings need different
// names). tokens 0 means 1; an interval under a millisecond means one
// second, as in go-limiter's memorystore; intervals are kept to the
// millisecond.
func (s *Store) Limiter(name string, tokens uint64, interval time.Duration) *LimiterStore {
	if tokens == 0 {
		tokens = 1
	}
	if interval < time.Millisecond {
		interval = time.Second
	}
	l := &LimiterStore{s: s, prefix: s.k.rl + name + ":", tokens: tokens, interval: interval.Milliseconds(),
		batch: int64(min(max(tokens/reserveDivisor, 1), maxReserve))}
	if l.batch > 1 {
		l.held = make(map[string]*reservation)
	}
	return l
}

// The bucket scripts. KEYS bucket. ARGV default max, default interval
// (ms), then the call's own arguments. Each reads the server's clock.
const bucketLoad = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'max', 'ivl', 'rem', 'rst')
local max, ivl, rem, rst = tonumber(h[1]), tonumber(h[2]), tonumber(h[3]), tonumber(h[4])
if not (max and ivl and rem and rst) then
	max, ivl, rst = tonumber(ARGV[1]), tonumber(ARGV[2]), nil
end
if not rst or now >= rst then
	rem, rst = max, now + ivl
end
`

const bucketSave = `
redis.call('HSET', KEYS[1], 'max', max, 'ivl', ivl, 'rem', rem, 'rst', rst)
redis.call('PEXPIREAT', KEYS[1], rst + ivl)
`

// limTake returns max, remaining, window end (Unix ms), ok (1 or 0).
var limTake = goredis.NewScript(bucketLoad + `
local ok = 0
if rem > 0 then
	rem = rem - 1
	ok = 1
end
` + bucketSave + `
return {max, rem, rst, ok}
`)

// limTakeN: ARGV[3] tokens wanted, at most a hundredth of the window's own
// limit (at least 1); takes what is left of them. Returns max, remaining,
// window end (Unix ms), tokens taken, and the milliseconds left in the
// window by Redis's clock (so that the caller's clock never decides when
// a window ends).
var limTakeN = goredis.NewScript(bucketLoad + `
local want = math.max(1, math.min(tonumber(ARGV[3]), math.floor(max / ` + reserveDivisorLua + `)))
local got = math.min(rem, want)
rem = rem - got
` + bucketSave + `
return {max, rem, rst, got, rst - now}
`)

// reserveDivisorLua is reserveDivisor in the scripts.
const reserveDivisorLua = "100"

// limGet returns max and remaining, or 0, 0 for a key never taken from.
var limGet = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
	return {0, 0}
end
` + bucketLoad + `
return {max, rem}
`)

// limSet: ARGV[3] tokens, ARGV[4] interval (ms): a new full window.
// Returns max and remaining, as limBurst does.
var limSet = goredis.NewScript(bucketLoad + `
max, ivl = tonumber(ARGV[3]), tonumber(ARGV[4])
rem, rst = max, now + ivl
` + bucketSave + `
return {max, rem}
`)

// limBurst: ARGV[3] tokens added to the current window.
var limBurst = goredis.NewScript(bucketLoad + `
rem = rem + tonumber(ARGV[3])
` + bucketSave + `
return {max, rem}
`)

// Take takes a token from key: the limit, the tokens left, the end of the
// window (Unix nanoseconds) and whether a token was taken.
func (l *LimiterStore) Take(ctx context.Context, key string) (tokens, remaining, reset uint64, ok bool, err error) {
	if l.stopped.Load() {
		return 0, 0, 0, false, limiter.ErrStopped
	}
	if l.batch > 1 {
		return l.reserve(ctx, key)
	}
	v, err := l.run(ctx, "rate limit take", limTake, 4, key)
	if err != nil {
		return 0, 0, 0, false, err
	}
	return uint64(v[0]), uint64(v[1]), uint64(v[2]) * uint64(time.Millisecond), v[3] == 1, nil
}

// reserve is Take with reservations: a token this process holds for key,
// else a batch from Redis. Takes of one key wait for each other's Redis
// call rather than each making one. remaining counts the tokens held here
// as left (they are, until used).
func (l *LimiterStore) reserve(ctx context.Context, key string) (tokens, remaining, reset uint64, ok bool, err error) {
	r := l.reservation(key)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.left > 0 && time.Now().Before(r.until) {
		r.left--
		return r.max, r.rem + r.left, uint64(r.rst) * uint64(time.Millisecond), true, nil
	}
	r.left = 0
	// The window's end on our clock: the time left by Redis's clock,
	// counted from before the call (so never later than the true end,
	// whatever the two clocks say).
	sent := time.Now()
	v, err := l.run(ctx, "rate limit take", limTakeN, 5, key, l.batch)
	if err != nil {
		return 0, 0, 0, false, err
	}
	r.max, r.rem, r.rst = uint64(v[0]), uint64(v[1]), v[2]
	r.until = sent.Add(time.Duration(v[4]) * time.Millisecond)
	if got := uint64(v[3]); got > 0 {
		r.left = got - 1
	}
	return r.max, r.rem + r.left, uint64(r.rst) * uint64(time.Millisecond), v[3] > 0, nil
}

// reservation returns key's reservation, creating it.
func (l *LimiterStore) reservation(key string) *reservation {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.held[key]
	if r == nil {
		if len(l.held) >= maxHeld {
			l.dropEnded()
		}
		r = &reservation{}
		l.held[key] = r
	}
	return r
}

// dropEnded drops the reservations whose window has ended, then every
// one if more than half of maxHeld remain. l.mu is held. A reservation
// whose lock is taken (a Take of it, maybe waiting on Redis) is in use and
// kept: the sweep never waits for a Redis call.
func (l *LimiterStore) dropEnded() {
	now := time.Now()
	for k, r := range l.held {
		if !r.mu.TryLock() {
			continue
		}
		ended := !now.Before(r.until)
		r.mu.Unlock()
		if ended {
			delete(l.held, k)
		}
	}
	if len(l.held) > maxHeld/2 {
		clear(l.held)
	}
}

// forget drops what this process holds of key (after Set).
func (l *LimiterStore) forget(key string) {
	if l.batch <= 1 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.held, key)
}

// Get returns the limit and the tokens left of key without taking one
// (0, 0 for a key never used).
func (l *LimiterStore) Get(ctx context.Context, key string) (tokens, remaining uint64, err error) {
	if l.stopped.Load() {
		return 0, 0, limiter.ErrStopped
	}
	v, err := l.run(ctx, "rate limit get", limGet, 2, key)
	if err != nil {
		return 0, 0, err
	}
	return uint64(v[0]), uint64(v[1]) + l.heldFor(key), nil
}

// heldFor is how many tokens of key's current window this process holds.
func (l *LimiterStore) heldFor(key string) uint64 {
	if l.batch <= 1 {
		return 0
	}
	l.mu.Lock()
	r := l.held[key]
	l.mu.Unlock()
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !time.Now().Before(r.until) {
		return 0
	}
	return r.left
}

// Set gives key its own limit and starts a new, full window. The setting
// lasts while the key is in use (it expires with the bucket).
func (l *LimiterStore) Set(ctx context.Context, key string, tokens uint64, interval time.Duration) error {
	if l.stopped.Load() {
		return limiter.ErrStopped
	}
	if interval < time.Millisecond {
		interval = time.Second
	}
	_, err := l.run(ctx, "rate limit set", limSet, 2, key, tokens, interval.Milliseconds())
	l.forget(key) // a new window: what was held belonged to the old one
	return err
}

// Burst adds tokens to the current window of key.
func (l *LimiterStore) Burst(ctx context.Context, key string, tokens uint64) error {
	if l.stopped.Load() {
		return limiter.ErrStopped
	}
	_, err := l.run(ctx, "rate limit burst", limBurst, 2, key, tokens)
	return err
}

// Close stops the limiter: later calls return limiter.ErrStopped. The
// buckets stay in Redis (other replicas use them) and the Store stays open.
func (l *LimiterStore) Close(context.Context) error {
	l.stopped.Store(true)
	return nil
}

// run runs a bucket script on key under Store.run and checks that it
// answered want numbers.
func (l *LimiterStore) run(ctx context.Context, op string, sc *goredis.Script, want int, key string, args ...any) ([]int64, error) {
	var v []int64
	err := l.s.run(ctx, op, func(ctx context.Context) error {
		var err error
		all := append([]any{l.tokens, l.interval}, args...)
		v, err = sc.Run(ctx, l.s.client, []string{l.prefix + key}, all...).Int64Slice()
		if err == nil && len(v) != want {
			err = fmt.Errorf("unexpected reply of %d elements", len(v))
		}
		return err
	})
	return v, err
}

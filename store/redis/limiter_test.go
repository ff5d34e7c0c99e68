package redis

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sethvargo/go-limiter"

	"github.com/atlassian-proxy/atlassian-proxy/internal/redistest"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

type take struct {
	tokens, remaining, reset uint64
	ok                       bool
}

func mustTake(t *testing.T, l limiter.Store, key string) take {
	t.Helper()
	tokens, remaining, reset, ok, err := l.Take(t.Context(), key)
	if err != nil {
		t.Fatalf("Take(%q): %v", key, err)
	}
	return take{tokens, remaining, reset, ok}
}

// TestLimiterAcrossReplicas: three replicas, each with its own client and
// limiter, share one limit exactly.
func TestLimiterAcrossReplicas(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const (
		limit    = 60
		attempts = 200
	)
	var lims []limiter.Store
	for range 3 {
		lims = append(lims, openStore(t, srv, Options{}).Limiter("rpm", limit, time.Minute))
	}
	before := time.Now()
	takes := make([]take, attempts)
	var wg sync.WaitGroup
	for i := range attempts {
		wg.Go(func() {
			tokens, remaining, reset, ok, err := lims[i%len(lims)].Take(t.Context(), "token-1")
			if err != nil {
				t.Errorf("Take: %v", err)
			}
			takes[i] = take{tokens, remaining, reset, ok}
		})
	}
	wg.Wait()
	after := time.Now()

	oks := 0
	seen := map[uint64]bool{}
	reset := takes[0].reset
	for _, tk := range takes {
		if tk.tokens != limit {
			t.Errorf("tokens = %d, want %d", tk.tokens, limit)
		}
		if tk.reset != reset {
			t.Errorf("reset = %d, want %d for every take of one window", tk.reset, reset)
		}
		if !tk.ok {
			if tk.remaining != 0 {
				t.Errorf("a refused take has remaining %d, want 0", tk.remaining)
			}
			continue
		}
		oks++
		if seen[tk.remaining] {
			t.Errorf("two successful takes left %d tokens", tk.remaining)
		}
		seen[tk.remaining] = true
	}
	if oks != limit {
		t.Errorf("successful takes = %d, want %d", oks, limit)
	}
	// The window began during the takes and lasts a minute (the server
	// clock may be a little off this one).
	lo, hi := before.Add(time.Minute-time.Second), after.Add(time.Minute+time.Second)
	if r := time.Unix(0, int64(reset)); r.Before(lo) || r.After(hi) {
		t.Errorf("reset = %v, want between %v and %v", r, lo, hi)
	}
	// Another key has its own bucket.
	if tk := mustTake(t, lims[0], "token-2"); !tk.ok || tk.remaining != limit-1 {
		t.Errorf("Take of another key = %+v, want ok with %d left", tk, limit-1)
	}
}

func TestLimiterWindow(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	l := openStore(t, srv, Options{}).Limiter("fast", 2, 300*time.Millisecond)
	for i, want := range []take{{2, 1, 0, true}, {2, 0, 0, true}, {2, 0, 0, false}} {
		got := mustTake(t, l, "k")
		got.reset = 0
		if got != want {
			t.Errorf("take %d = %+v, want %+v", i, got, want)
		}
	}
	tk := mustTake(t, l, "k")
	time.Sleep(time.Until(time.Unix(0, int64(tk.reset))) + 50*time.Millisecond)
	if got := mustTake(t, l, "k"); !got.ok || got.remaining != 1 || got.reset <= tk.reset {
		t.Errorf("take in the next window = %+v, want ok with 1 left and a later reset than %d", got, tk.reset)
	}
}

func TestLimiterGetSetBurst(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	s := openStore(t, srv, Options{Prefix: "lim:"})
	l := s.Limiter("rpm", 5, time.Minute)
	ctx := t.Context()
	get := func(key string, wantTokens, wantRemaining uint64) {
		t.Helper()
		tokens, remaining, err := l.Get(ctx, key)
		if err != nil {
			t.Fatalf("Get(%q): %v", key, err)
		}
		if tokens != wantTokens || remaining != wantRemaining {
			t.Errorf("Get(%q) = %d, %d; want %d, %d", key, tokens, remaining, wantTokens, wantRemaining)
		}
	}
	get("k", 0, 0) // never used
	mustTake(t, l, "k")
	get("k", 5, 4)
	get("k", 5, 4) // Get takes nothing

	if err := l.Set(ctx, "vip", 3, time.Hour); err != nil {
		t.Fatal(err)
	}
	get("vip", 3, 3)
	for i := range 3 {
		if tk := mustTake(t, l, "vip"); !tk.ok || tk.tokens != 3 {
			t.Errorf("take %d of vip = %+v, want ok of 3", i, tk)
		}
	}
	tk := mustTake(t, l, "vip")
	if tk.ok {
		t.Error("a 4th take of a key set to 3 succeeded")
	}
	if r := time.Until(time.Unix(0, int64(tk.reset))); r < 59*time.Minute {
		t.Errorf("reset of vip in %v, want about an hour", r)
	}

	if err := l.Burst(ctx, "vip", 2); err != nil {
		t.Fatal(err)
	}
	get("vip", 3, 2)
	for range 2 {
		if tk := mustTake(t, l, "vip"); !tk.ok {
			t.Error("a take after Burst failed")
		}
	}
	if tk := mustTake(t, l, "vip"); tk.ok {
		t.Error("a take beyond the burst succeeded")
	}
	// Burst of a new key: the default limit plus the burst.
	if err := l.Burst(ctx, "new", 2); err != nil {
		t.Fatal(err)
	}
	get("new", 5, 7)

	// The buckets live under the prefix, one key each, with a TTL.
	raw := rawClient(t, srv)
	for _, key := range []string{"lim:rl:rpm:k", "lim:rl:rpm:vip", "lim:rl:rpm:new"} {
		if ttl, err := raw.PTTL(ctx, key).Result(); err != nil || ttl <= 0 {
			t.Errorf("PTTL %s = %v, %v; want a TTL", key, ttl, err)
		}
	}
}

func TestLimiterDefaults(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	l := openStore(t, srv, Options{}).Limiter("defaults", 0, 0)
	before := time.Now()
	tk := mustTake(t, l, "k")
	if !tk.ok || tk.tokens != 1 || tk.remaining != 0 {
		t.Errorf("first take = %+v, want ok of 1", tk)
	}
	if r := time.Unix(0, int64(tk.reset)).Sub(before); r < 900*time.Millisecond || r > 1100*time.Millisecond {
		t.Errorf("window of %v, want a second", r)
	}
	if tk := mustTake(t, l, "k"); tk.ok {
		t.Error("second take of a limit of 1 succeeded")
	}
}

func TestLimiterClose(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	s := openStore(t, srv, Options{})
	l, other := s.Limiter("rpm", 10, time.Minute), s.Limiter("rpm", 10, time.Minute)
	mustTake(t, l, "k")
	if err := l.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(t.Context()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ctx := t.Context()
	if tokens, remaining, reset, ok, err := l.Take(ctx, "k"); !errors.Is(err, limiter.ErrStopped) || tokens != 0 || remaining != 0 || reset != 0 || ok {
		t.Errorf("Take after Close = %d, %d, %d, %v, %v; want zeros and ErrStopped", tokens, remaining, reset, ok, err)
	}
	if _, _, err := l.Get(ctx, "k"); !errors.Is(err, limiter.ErrStopped) {
		t.Errorf("Get after Close: err = %v, want ErrStopped", err)
	}
	if err := l.Set(ctx, "k", 1, time.Second); !errors.Is(err, limiter.ErrStopped) {
		t.Errorf("Set after Close: err = %v, want ErrStopped", err)
	}
	if err := l.Burst(ctx, "k", 1); !errors.Is(err, limiter.ErrStopped) {
		t.Errorf("Burst after Close: err = %v, want ErrStopped", err)
	}
	// The bucket is shared: another limiter of the same name goes on.
	if tk := mustTake(t, other, "k"); !tk.ok || tk.remaining != 8 {
		t.Errorf("Take through another limiter = %+v, want ok with 8 left", tk)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after the limiter's Close: %v", err)
	}
}

// TestLimiterRedisError: an error reply (a bucket key of another type) is
// an error of its own: not ErrUnavailable, counted in Errors.
func TestLimiterRedisError(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	s := openStore(t, srv, Options{Prefix: "lim:"})
	l := s.Limiter("rpm", 5, time.Minute)
	if err := rawClient(t, srv).Set(t.Context(), "lim:rl:rpm:k", "a string", 0).Err(); err != nil {
		t.Fatal(err)
	}
	calls := []struct {
		name string
		do   func() error
	}{
		{"Take", func() error { _, _, _, _, err := l.Take(t.Context(), "k"); return err }},
		{"Get", func() error { _, _, err := l.Get(t.Context(), "k"); return err }},
		{"Set", func() error { return l.Set(t.Context(), "k", 1, time.Second) }},
		{"Burst", func() error { return l.Burst(t.Context(), "k", 1) }},
	}
	for _, c := range calls {
		err := c.do()
		if err == nil || errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "WRONGTYPE") {
			t.Errorf("%s of a bucket of the wrong type: err = %v, want Redis's WRONGTYPE, not ErrUnavailable", c.name, err)
		}
	}
	if n := s.Errors(); n != int64(len(calls)) {
		t.Errorf("Errors() = %d, want %d", n, len(calls))
	}
}

// A high limit is taken from Redis in batches that each process keeps for
// its next takes: one Redis call per batch, and still never more admitted
// than the limit across replicas; what they hold unused at the end is at
// most a batch each.
func TestLimiterReservations(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const (
		limit = 1000 // a batch of 10
		batch = limit / reserveDivisor
	)
	var lims []*LimiterStore
	for range 3 {
		lims = append(lims, openStore(t, srv, Options{}).Limiter("rpm", limit, time.Minute))
	}
	first := mustTake(t, lims[0], "tok")
	if !first.ok || first.tokens != limit || first.remaining != limit-1 {
		t.Errorf("first take = %+v, want ok, %d left", first, limit-1)
	}
	// Redis gave a whole batch: another process sees it gone.
	if tokens, remaining, err := lims[1].Get(t.Context(), "tok"); err != nil || tokens != limit || remaining != limit-batch {
		t.Errorf("Get from another process = %d, %d, %v; want %d, %d", tokens, remaining, err, limit, limit-batch)
	}
	// The same process holds the rest of its batch.
	if tokens, remaining, err := lims[0].Get(t.Context(), "tok"); err != nil || remaining != limit-1 {
		t.Errorf("Get from the holder = %d, %d, %v; want %d left", tokens, remaining, err, limit-1)
	}

	var mu sync.Mutex
	oks := 1
	var wg sync.WaitGroup
	for i := range 1200 {
		wg.Go(func() {
			tk := mustTake(t, lims[i%len(lims)], "tok")
			if tk.ok {
				mu.Lock()
				oks++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if oks > limit || oks < limit-len(lims)*(batch-1) {
		t.Errorf("admitted %d of 1201, want at most %d and at least %d", oks, limit, limit-len(lims)*(batch-1))
	}
	if tk := mustTake(t, lims[2], "tok"); tk.ok || tk.remaining != 0 {
		t.Errorf("a take once the limit is spent = %+v, want refused", tk)
	}
}

// Reserved tokens belong to their window: the next window starts from
// Redis, full, and Set drops what a process held.
func TestLimiterReservationWindow(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	l := openStore(t, srv, Options{}).Limiter("fast", 400, 300*time.Millisecond) // a batch of 4
	tk := mustTake(t, l, "k")
	if !tk.ok || tk.remaining != 399 {
		t.Fatalf("first take = %+v, want ok, 399 left", tk)
	}
	time.Sleep(time.Until(time.Unix(0, int64(tk.reset))) + 50*time.Millisecond)
	next := mustTake(t, l, "k")
	if !next.ok || next.remaining != 399 || next.reset <= tk.reset {
		t.Errorf("take in the next window = %+v, want ok with 399 left (a new batch) after %d", next, tk.reset)
	}
	// Set starts a new window of 8: the 3 tokens held before are gone, and
	// the batch is bounded by the window's own limit (a hundredth of 8 is
	// under one: one token per call).
	if err := l.Set(t.Context(), "k", 8, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := mustTake(t, l, "k"); !got.ok || got.tokens != 8 || got.remaining != 7 {
		t.Errorf("take after Set = %+v, want ok, 8 tokens, 7 left", got)
	}
	if tokens, remaining, err := openStore(t, srv, Options{}).Limiter("fast", 400, 300*time.Millisecond).Get(t.Context(), "k"); err != nil ||
		tokens != 8 || remaining != 7 {
		t.Errorf("Redis after the take = %d, %d, %v; want 8, 7 (one token taken)", tokens, remaining, err)
	}
}

// A low limit is exact: one token per Redis call, nothing held.
func TestLimiterLowLimitTakesOne(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	s := openStore(t, srv, Options{})
	l := s.Limiter("rpm", 2*reserveDivisor-1, time.Minute)
	mustTake(t, l, "k")
	if _, remaining, err := s.Limiter("rpm", 2*reserveDivisor-1, time.Minute).Get(t.Context(), "k"); err != nil || remaining != 2*reserveDivisor-2 {
		t.Errorf("Redis after one take = %d, %v; want %d (one token taken)", remaining, err, 2*reserveDivisor-2)
	}
}

// At maxHeld keys with a reservation, those of ended windows are dropped
// and a key still holding tokens of its window keeps them; only when most
// are live are all dropped.
func TestLimiterHeldBound(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	l := openStore(t, srv, Options{}).Limiter("rpm", 1000, time.Minute) // a batch of 10
	fill := func(until time.Time) {
		l.mu.Lock()
		defer l.mu.Unlock()
		for i := len(l.held); i < maxHeld; i++ {
			l.held["filler-"+strconv.Itoa(i)] = &reservation{left: 5, until: until}
		}
	}
	heldLen := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.held)
	}
	if tk := mustTake(t, l, "live"); !tk.ok || tk.remaining != 999 {
		t.Fatalf("first take = %+v, want ok, 999 left", tk)
	}
	fill(time.Now().Add(-time.Second)) // ended windows
	mustTake(t, l, "new")
	if n := heldLen(); n != 2 {
		t.Errorf("after a sweep of ended windows %d keys held, want 2 (live, new)", n)
	}
	if _, remaining, err := l.Get(t.Context(), "live"); err != nil || remaining != 999 {
		t.Errorf("Get(live) = %d, %v; want 999 (its 9 held tokens kept)", remaining, err)
	}

	fill(time.Now().Add(time.Minute)) // live windows
	mustTake(t, l, "newer")
	if n := heldLen(); n != 1 {
		t.Errorf("after a sweep of live windows %d keys held, want 1 (all dropped, then newer)", n)
	}
}

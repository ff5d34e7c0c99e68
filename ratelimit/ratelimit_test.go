package ratelimit_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/sethvargo/go-limiter"

	"github.com/atlassian-proxy/atlassian-proxy/internal/redistest"
	"github.com/atlassian-proxy/atlassian-proxy/ratelimit"
	redisstore "github.com/atlassian-proxy/atlassian-proxy/store/redis"
)

func TestMemory(t *testing.T) {
	st, err := ratelimit.Memory(3, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(t.Context())
	for i := range 4 {
		_, remaining, _, ok, err := st.Take(t.Context(), "k")
		if err != nil || ok != (i < 3) || (ok && remaining != uint64(2-i)) {
			t.Errorf("take %d: ok %v, remaining %d, err %v", i, ok, remaining, err)
		}
	}
	if _, _, _, ok, _ := st.Take(t.Context(), "other"); !ok {
		t.Error("keys share a bucket")
	}
}

// With Redis up the shared store answers (two fallbacks over two clients
// share one limit); with Redis down each process answers from its own
// in-process store, at once, and the limit still holds there.
func TestFallbackToLocalWhenRedisIsDown(t *testing.T) {
	srv := redistest.Start(t)
	var errs atomic.Int64
	mk := func() (*redisstore.Store, func() (bool, error)) {
		rs, err := redisstore.Open(t.Context(), redisstore.Options{URL: srv.URL(), Prefix: "rl-test:"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rs.Close() })
		local, err := ratelimit.Memory(5, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		f := ratelimit.Fallback(rs.Limiter("t", 5, time.Minute), local, func(error) { errs.Add(1) })
		t.Cleanup(func() { f.Close(t.Context()) })
		return rs, func() (bool, error) {
			_, _, _, ok, err := f.Take(t.Context(), "tok")
			return ok, err
		}
	}
	_, take1 := mk()
	_, take2 := mk()
	allowed := 0
	for i := range 10 {
		take := take1
		if i%2 == 1 {
			take = take2
		}
		ok, err := take()
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			allowed++
		}
	}
	if allowed != 5 || errs.Load() != 0 {
		t.Fatalf("shared limit of 5 over two processes allowed %d (errors %d)", allowed, errs.Load())
	}

	srv.Stop(t)
	allowed = 0
	for range 8 {
		ok, err := take1()
		if err != nil {
			t.Fatalf("take while Redis is down: %v", err)
		}
		if ok {
			allowed++
		}
	}
	if allowed != 5 {
		t.Errorf("the local fallback allowed %d of 8, want its own limit of 5", allowed)
	}
	if errs.Load() == 0 {
		t.Error("the failure of the shared store was not reported")
	}
	// One call asked Redis (bounded by CallTimeout); the next ones went
	// straight to the local store.
	if errs.Load() != 1 {
		t.Errorf("primary was asked %d times within RetryAfter, want 1", errs.Load())
	}

	// After RetryAfter one call probes Redis (still down) while the other
	// concurrent calls keep to the local store.
	time.Sleep(ratelimit.RetryAfter)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := take1(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := errs.Load(); n != 2 {
		t.Errorf("20 concurrent takes after RetryAfter asked the down Redis %d times in all, want 2 (one probe)", n)
	}
	// Redis back (empty): after RetryAfter the shared store answers again.
	srv.Restart(t)
	time.Sleep(ratelimit.RetryAfter)
	if ok, err := take2(); err != nil || !ok {
		t.Errorf("take after Redis came back: ok %v, err %v", ok, err)
	}
	if n := errs.Load(); n != 2 {
		t.Errorf("a take after Redis came back failed over (%d errors)", n)
	}
}

// fallbackOn makes a Fallback whose primary is a Redis limit of 1 per minute
// and whose secondary is an in-process limit of 100, so that an answer's
// tokens tell which store gave it; errs counts the failures reported.
func fallbackOn(t *testing.T, srv *redistest.Server) (f limiter.Store, primary limiter.Store, errs *atomic.Int64) {
	t.Helper()
	rs, err := redisstore.Open(t.Context(), redisstore.Options{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	local, err := ratelimit.Memory(100, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	errs = new(atomic.Int64)
	primary = rs.Limiter("t", 1, time.Minute)
	f = ratelimit.Fallback(primary, local, func(error) { errs.Add(1) })
	t.Cleanup(func() { f.Close(context.Background()) })
	return f, primary, errs
}

// A caller that gives up while Redis hangs gets the in-process answer, and
// Redis is not counted as failed: the next call asks it again.
func TestFallbackCallerGone(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	f, primary, errs := fallbackOn(t, srv)
	if _, _, _, ok, err := primary.Take(t.Context(), "k"); err != nil || !ok {
		t.Fatalf("first take of the Redis limit: ok %v, err %v", ok, err)
	}
	raw := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer raw.Close()
	// Longer than CallTimeout: the take below hangs until its caller goes.
	if err := raw.Do(t.Context(), "CLIENT", "PAUSE", 800, "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	tokens, _, _, ok, err := f.Take(ctx, "k")
	if err != nil || !ok || tokens != 100 {
		t.Errorf("take by a caller gone while Redis hangs = %d tokens, ok %v, err %v; want the in-process answer", tokens, ok, err)
	}
	if n := errs.Load(); n != 0 {
		t.Errorf("a caller's cancellation was reported as %d failures of Redis", n)
	}
	// A PING of ours waits for the end of the pause.
	if err := raw.Ping(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	// Redis answers again (its limit of 1 is spent), not the local store.
	if tokens, _, _, ok, err := f.Take(t.Context(), "k"); err != nil || ok || tokens != 1 {
		t.Errorf("take after the pause = %d tokens, ok %v, err %v; want Redis's refusal", tokens, ok, err)
	}
}

// Get, Set and Burst fall back as Take does.
func TestFallbackGetSetBurst(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	f, _, errs := fallbackOn(t, srv)
	ctx := t.Context()
	if err := f.Set(ctx, "k", 3, time.Minute); err != nil {
		t.Fatal(err)
	}
	if tokens, remaining, err := f.Get(ctx, "k"); err != nil || tokens != 3 || remaining != 3 {
		t.Errorf("Get from Redis = %d, %d, %v; want 3, 3", tokens, remaining, err)
	}

	srv.Stop(t)
	if err := f.Set(ctx, "k", 7, time.Minute); err != nil {
		t.Errorf("Set while Redis is down: %v", err)
	}
	if err := f.Burst(ctx, "k", 2); err != nil {
		t.Errorf("Burst while Redis is down: %v", err)
	}
	if tokens, remaining, err := f.Get(ctx, "k"); err != nil || tokens != 7 || remaining != 9 {
		t.Errorf("Get while Redis is down = %d, %d, %v; want the in-process 7, 9", tokens, remaining, err)
	}
	if n := errs.Load(); n != 1 {
		t.Errorf("%d failures reported, want 1 (later calls within RetryAfter skip Redis)", n)
	}
}

// After Close both stores are stopped: calls fail with ErrStopped, which
// is no failure of Redis.
func TestFallbackClosed(t *testing.T) {
	t.Parallel()
	f, _, errs := fallbackOn(t, redistest.Start(t))
	if err := f.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, _, _, _, err := f.Take(t.Context(), "k"); !errors.Is(err, limiter.ErrStopped) {
		t.Errorf("Take after Close: err = %v, want ErrStopped", err)
	}
	if n := errs.Load(); n != 0 {
		t.Errorf("Take after Close reported %d failures", n)
	}
}

package ratelimit_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

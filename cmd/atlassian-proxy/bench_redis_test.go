package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/adminui"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/internal/redistest"
)

// The benchmarks of this file compare the same server on the embedded store
// and on Redis (issue 4: Redis mode should cost under 10% of throughput).
// Both run with:
//
//	go test ./cmd/atlassian-proxy -run '^$' -bench 'StoreRedis' -benchtime 5x
//
// Each starts two stacks as serve wires them (startBenchStackEnv): one on
// the embedded store, one on Redis (a private redis-server on a free port,
// from internal/redistest, never the machine's 6379), each in front of its
// own fake gateway, and measures both in the same run, interleaved, so that
// the load other processes put on the machine falls on both alike. Each
// runs twice: with an API token without a rate limit (token=unlimited) and
// with one whose limit is so high that it never rejects
// (token=rate-limited): with Redis, that limit goes through the shared
// limiter, which takes its tokens from Redis in batches of 64 (a hundredth
// of a limit, at most 64), so one Redis call serves 64 requests.

// benchRateLimit is the rate limit (requests per minute) of the
// rate-limited token: counted on every request, never reached.
const benchRateLimit = 1_000_000

// benchTokenKinds are the tokens the benchmarks send requests with.
var benchTokenKinds = []struct {
	name    string
	limited bool
}{{"unlimited", false}, {"rate-limited", true}}

// storeStack is a bench stack with a second, rate-limited API token.
type storeStack struct {
	name      string // "embedded" or "redis": the prefix of its metrics
	s         *stack
	limited   string // the rate-limited token
	limitedID string // its id (the key of its rate-limit bucket)
}

// startStoreStacks starts the embedded stack and the Redis stack, in that
// order, with the fake gateway options fo.
func startStoreStacks(b *testing.B, fo fake.Options) [2]*storeStack {
	b.Helper()
	rs := redistest.Start(b)
	embedded := startStoreStack(b, "embedded", fo, nil)
	redis := startStoreStack(b, "redis", fo, map[string]string{"REDIS_URL": rs.URL(), "SECRET_KEY": benchSecretKey(b)})
	if embedded.s.app.redis != nil || redis.s.app.redis == nil {
		b.Fatal("the embedded stack must run on the embedded store and the redis stack on Redis")
	}
	return [2]*storeStack{embedded, redis}
}

// startStoreStack starts a bench stack with env and creates its
// rate-limited token through the admin service, as startStackWith creates
// its own, then checks that requests with it are counted.
func startStoreStack(b *testing.B, name string, fo fake.Options, env map[string]string) *storeStack {
	b.Helper()
	s := startBenchStackEnv(b, fo, env)
	ctx := context.Background()
	plain, tok, err := s.app.admin.Service().CreateToken(ctx, adminui.TokenInput{Name: "bench-rate-limited", RateLimit: benchRateLimit})
	if err != nil {
		b.Fatal(err)
	}
	s.app.syncer.changed()
	st := &storeStack{name: name, s: s, limited: plain, limitedID: tok.ID}
	req, err := st.target(true).req()
	if err != nil {
		b.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Ratelimit-Limit-Requests"); resp.StatusCode != http.StatusOK || got != strconv.Itoa(benchRateLimit) {
		b.Fatalf("%s: rate-limited token: status %d, X-Ratelimit-Limit-Requests %q, want 200 and %d", name, resp.StatusCode, got, benchRateLimit)
	}
	return st
}

// target is the proxy's chat request with the unlimited or the
// rate-limited token, named after the store.
func (st *storeStack) target(limited bool) latencyTarget {
	token := st.s.token
	if limited {
		token = st.limited
	}
	return latencyTarget{st.name, func() (*http.Request, error) {
		req, err := st.s.proxyRequest()
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		return req, nil
	}}
}

// storeTargets are the targets of both stacks, embedded first.
func storeTargets(stores [2]*storeStack, limited bool) []latencyTarget {
	return []latencyTarget{stores[0].target(limited), stores[1].target(limited)}
}

// warmUpStores sends a few requests to every target before the
// measurement (connections, Redis pool, limiter stores), then, with the
// rate-limited token, checks that the Redis stack counted them in Redis
// (the shared limiter, not its in-process fallback).
func warmUpStores(b *testing.B, stores [2]*storeStack, limited bool) {
	b.Helper()
	measure(b, benchClients, 8, 0, storeTargets(stores, limited)...)
	if !limited {
		return
	}
	// The limiter's name is serve.go's tokenLimiters'.
	rs := stores[1]
	lim := rs.s.app.redis.Limiter("token:"+strconv.Itoa(benchRateLimit), benchRateLimit, time.Minute)
	tokens, remaining, err := lim.Get(context.Background(), rs.limitedID)
	if err != nil || tokens != benchRateLimit || remaining >= benchRateLimit {
		b.Fatalf("redis: rate-limited token: bucket in Redis: limit %d, remaining %d, err %v; want the requests counted in Redis", tokens, remaining, err)
	}
}

// benchSecretKey is a random SECRET_KEY (32 bytes, base64).
func benchSecretKey(tb testing.TB) string {
	tb.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		tb.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

// BenchmarkStoreRedisThroughput measures requests per second on the
// embedded store and on Redis, against an upstream that answers at once:
// 16 clients each send non-streamed chat requests, the next as soon as the
// last is answered, 4,096 requests per store per iteration. Every
// iteration runs the embedded stack and then the Redis one, or the other
// way round (alternately), so that both see the same conditions; ns/op is
// the time of both runs. Metrics: embedded-req/s and redis-req/s (answered
// requests over the time taken, over all iterations), redis/embedded (their
// ratio) and redis-cost-% (the share of throughput Redis costs: 100 × (1 −
// ratio); the goal is under 10).
//
//	go test ./cmd/atlassian-proxy -run '^$' -bench 'StoreRedisThroughput' -benchtime 5x
func BenchmarkStoreRedisThroughput(b *testing.B) {
	stores := startStoreStacks(b, fake.Options{})
	const perClient = 4096 / benchClients
	for _, kind := range benchTokenKinds {
		b.Run("token="+kind.name, func(b *testing.B) {
			targets := storeTargets(stores, kind.limited)
			warmUpStores(b, stores, kind.limited)
			var elapsed [2]time.Duration
			var answered [2]int
			round := 0
			for b.Loop() {
				for j := range 2 {
					k := (round + j) % 2
					start := time.Now()
					lat := measure(b, benchClients, perClient, 0, targets[k])
					elapsed[k] += time.Since(start)
					answered[k] += len(lat[targets[k].name])
				}
				round++
			}
			var rate [2]float64
			for k, t := range targets {
				if answered[k] == 0 {
					b.Fatalf("%s: no request answered", t.name)
				}
				rate[k] = float64(answered[k]) / elapsed[k].Seconds()
				b.ReportMetric(rate[k], t.name+"-req/s")
			}
			ratio := rate[1] / rate[0]
			b.ReportMetric(ratio, "redis/embedded")
			b.ReportMetric(100*(1-ratio), "redis-cost-%")
		})
	}
}

// BenchmarkStoreRedisLatencyUpstream20ms measures the latency of the
// embedded and the Redis stack with an upstream that takes 20 ms to answer
// and 16 clients, as BenchmarkChatLatencyUpstream20ms does: the clients
// start spread over the first 20 ms and each sends its requests in turn to
// the embedded and to the Redis stack, so that both are measured over the
// same span of time under the same load. Each iteration is 120 requests
// per client (60 per store, about 2.6 s). Metrics: embedded-p50/p99-µs and
// redis-p50/p99-µs, and redis-added-p50/p99-µs, the Redis percentiles
// minus the embedded ones (the latency Redis mode adds).
//
//	go test ./cmd/atlassian-proxy -run '^$' -bench 'StoreRedisLatency' -benchtime 5x
func BenchmarkStoreRedisLatencyUpstream20ms(b *testing.B) {
	const latency = 20 * time.Millisecond
	stores := startStoreStacks(b, fake.Options{Latency: latency})
	for _, kind := range benchTokenKinds {
		b.Run("token="+kind.name, func(b *testing.B) {
			targets := storeTargets(stores, kind.limited)
			warmUpStores(b, stores, kind.limited)
			all := map[string][]time.Duration{}
			for b.Loop() {
				for name, lat := range measure(b, benchClients, 120, latency, targets...) {
					all[name] = append(all[name], lat...)
				}
			}
			for _, t := range targets {
				reportPercentiles(b, t.name+"-", all[t.name])
			}
			embedded, redis := percentiles(all["embedded"]), percentiles(all["redis"])
			b.ReportMetric(redis[0]-embedded[0], "redis-added-p50-µs")
			b.ReportMetric(redis[1]-embedded[1], "redis-added-p99-µs")
		})
	}
}

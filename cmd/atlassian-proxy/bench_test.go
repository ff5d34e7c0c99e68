package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/adminui"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
)

// benchClients is the number of concurrent clients of the latency benchmark
// (the figure: 16 on this 2-core machine).
const benchClients = 16

const benchBody = `{"model":"claude-sonnet-4","messages":[{"role":"user","content":"Say hello."}]}`

// stack is the whole server, wired as serve wires it, in process on a
// loopback port, in front of a fake gateway on another loopback port, with
// the given credentials registered on both sides and one API token.
type stack struct {
	app      *app
	gw       *fake.Server
	proxyURL string
	token    string
}

// startStack starts a stack; env adds to (or overrides) its configuration.
func startStack(tb testing.TB, creds []fake.Credential, env map[string]string) *stack {
	tb.Helper()
	return startStackWith(tb, creds, env, fake.Options{})
}

// startStackWith is startStack with options of the fake gateway.
func startStackWith(tb testing.TB, creds []fake.Credential, env map[string]string, fo fake.Options) *stack {
	tb.Helper()
	fo.KeepRequests = 16
	gw := fake.Start(tb, fo)
	vars := map[string]string{
		"DATA_DIR": tb.TempDir(), "UPSTREAM_URL": gw.URL, "ADMIN_PASSWORD": "in-process-stack-password", "METRICS_ADDR": "",
	}
	maps.Copy(vars, env)
	cfg, err := loadConfig("stack", nil, mapEnv(vars))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := newApp(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	svc := a.admin.Service()
	for _, c := range creds {
		gw.AddCredential(c)
		if _, err := svc.AddCredential(ctx, adminui.CredentialInput{Email: c.Email, Token: c.Token}); err != nil {
			tb.Fatal(err)
		}
	}
	plain, _, err := svc.CreateToken(ctx, adminui.TokenInput{Name: "stack"})
	if err != nil {
		tb.Fatal(err)
	}
	a.syncer.changed()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.serve(ctx, ln, nil) }()
	tb.Cleanup(func() {
		cancel()
		<-done
		a.close()
	})
	return &stack{app: a, gw: gw, proxyURL: "http://" + ln.Addr().String(), token: plain}
}

// startBenchStack: four credentials with room for 64 requests each, so the
// benchmark measures the proxy, not its queue.
func startBenchStack(b *testing.B, fo fake.Options) *stack {
	b.Helper()
	return startBenchStackEnv(b, fo, nil)
}

// startBenchStackEnv is startBenchStack with env added to (or overriding)
// its configuration, e.g. REDIS_URL and SECRET_KEY for the Redis store.
func startBenchStackEnv(b *testing.B, fo fake.Options, env map[string]string) *stack {
	b.Helper()
	vars := map[string]string{"MAX_CONCURRENCY": "64"}
	maps.Copy(vars, env)
	var creds []fake.Credential
	for _, email := range []string{"one@example.com", "two@example.com", "three@example.com", "four@example.com"} {
		creds = append(creds, fake.Credential{Email: email, Token: "bench-token-" + email})
	}
	return startStackWith(b, creds, vars, fo)
}

// directRequest is the same chat request sent straight to the fake gateway
// in its own (unified chat) shape, with the first credential.
func (s *stack) directRequest() (*http.Request, error) {
	return s.unifiedRequest(s.gw.URL)
}

// unifiedRequest is the gateway-shaped chat request sent to base.
func (s *stack) unifiedRequest(base string) (*http.Request, error) {
	body := `{"request_payload":{"messages":[{"role":"user","content":"Say hello."}],"stream":false},` +
		`"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`
	req, err := http.NewRequest("POST", base+"/rovodev/v2/proxy/ai/v2/beta/chat", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth("one@example.com", "bench-token-one@example.com")
	req.Header.Set("X-Atlassian-EncodedToken", strings.TrimPrefix(req.Header.Get("Authorization"), "Basic "))
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

func (s *stack) proxyRequest() (*http.Request, error) {
	req, err := http.NewRequest("POST", s.proxyURL+"/v1/chat/completions", strings.NewReader(benchBody))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// startFloor serves the standard library's bare reverse proxy
// (httputil.ReverseProxy: no authentication, no translation, no pool) in
// front of the stack's fake gateway and returns the gateway-shaped request
// sent through it: the least any Go HTTP proxy adds on this machine, the
// floor the proxy's own figure is read against.
func startFloor(b *testing.B, s *stack) func() (*http.Request, error) {
	b.Helper()
	target, err := url.Parse(s.gw.URL)
	if err != nil {
		b.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64}
	srv := httptest.NewServer(rp)
	b.Cleanup(srv.Close)
	return func() (*http.Request, error) { return s.unifiedRequest(srv.URL) }
}

// latencyTargets are the three ways a request reaches the fake gateway:
// straight, through the bare reverse proxy, through atlassian-proxy.
func latencyTargets(b *testing.B, s *stack) []latencyTarget {
	return []latencyTarget{{"direct", s.directRequest}, {"floor", startFloor(b, s)}, {"proxy", s.proxyRequest}}
}

type latencyTarget struct {
	name string
	req  func() (*http.Request, error)
}

// BenchmarkChatLatency sends the same non-streamed chat request straight to
// the fake gateway ("direct"), through the standard library's bare reverse
// proxy ("floor") and through atlassian-proxy ("proxy"), with 1 and with 16
// clients at once, each client sending its next request as soon as the
// last one is answered; the difference of the percentiles from direct is
// the latency a proxy adds. Each b.Loop iteration is 4,096 requests. With
// an upstream that answers at once, 16 clients keep both cores busy, so
// this measures CPU cost more than latency.
//
//	go test ./cmd/atlassian-proxy -run '^$' -bench 'ChatLatency$' -benchtime 5x
func BenchmarkChatLatency(b *testing.B) {
	s := startBenchStack(b, fake.Options{})
	const perIteration = 4096
	targets := latencyTargets(b, s)
	for _, clients := range []int{1, benchClients} {
		for _, t := range targets {
			b.Run(fmt.Sprintf("clients=%d/%s", clients, t.name), func(b *testing.B) {
				var lat []time.Duration
				for b.Loop() {
					lat = append(lat, measure(b, clients, perIteration/clients, 0, t)[t.name]...)
				}
				reportPercentiles(b, "", lat)
			})
		}
	}
}

// BenchmarkChatLatencyUpstream20ms measures the latency added with an
// upstream that takes 20 ms to answer, as a model gateway does (real ones
// take hundreds of ms): 16 clients then keep 16 requests in flight without
// saturating the CPU. The clients start spread over the first 20 ms, as
// independent clients would be, rather than in lock step (which would turn
// every round into a burst of 16 requests at the same instant). Every
// client sends its requests in turn straight, through the floor and
// through the proxy, so that the three are measured over the same span of
// time under the same load; added-p50 and added-p99 are the proxy's
// percentiles minus the direct ones (floor-added-* the same for the bare
// reverse proxy). Each iteration is 60 requests per client (about 1.3 s).
//
//	go test ./cmd/atlassian-proxy -run '^$' -bench ChatLatencyUpstream -benchtime 5x
func BenchmarkChatLatencyUpstream20ms(b *testing.B) {
	const latency = 20 * time.Millisecond
	s := startBenchStack(b, fake.Options{Latency: latency})
	targets := latencyTargets(b, s)
	for _, clients := range []int{1, benchClients} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			all := map[string][]time.Duration{}
			for b.Loop() {
				for name, lat := range measure(b, clients, 60, latency, targets...) {
					all[name] = append(all[name], lat...)
				}
			}
			for _, t := range targets {
				reportPercentiles(b, t.name+"-", all[t.name])
			}
			direct := percentiles(all["direct"])
			for _, t := range []struct{ prefix, name string }{{"", "proxy"}, {"floor-", "floor"}} {
				got := percentiles(all[t.name])
				b.ReportMetric(got[0]-direct[0], t.prefix+"added-p50-µs")
				b.ReportMetric(got[1]-direct[1], t.prefix+"added-p99-µs")
			}
		})
	}
}

// measure runs clients concurrent clients, each sending perClient requests
// and waiting for each answer before the next; client i starts after
// i/clients of spread and sends its requests to the targets in turn,
// starting with target i (mod the number of targets). It returns the
// latencies by target name.
func measure(b *testing.B, clients, perClient int, spread time.Duration, targets ...latencyTarget) map[string][]time.Duration {
	b.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients * 2 * len(targets)}}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	out := map[string][]time.Duration{}
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			time.Sleep(spread * time.Duration(i) / time.Duration(clients))
			mine := make([][]time.Duration, len(targets))
			for j := range perClient {
				k := (i + j) % len(targets)
				req, err := targets[k].req()
				if err != nil {
					b.Error(err)
					return
				}
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("%s: status %d", targets[k].name, resp.StatusCode)
					return
				}
				mine[k] = append(mine[k], time.Since(start))
			}
			mu.Lock()
			for k, t := range targets {
				out[t.name] = append(out[t.name], mine[k]...)
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// percentiles returns the 50th and 99th percentiles of lat in µs (and
// sorts lat).
func percentiles(lat []time.Duration) [2]float64 {
	if len(lat) == 0 {
		return [2]float64{}
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	return [2]float64{pct(0.50), pct(0.99)}
}

// reportPercentiles reports the 50th and 99th percentiles of lat as
// benchmark metrics named prefix+"p50-µs" and prefix+"p99-µs".
func reportPercentiles(b *testing.B, prefix string, lat []time.Duration) {
	if len(lat) == 0 {
		b.Errorf("no latency measured")
		return
	}
	p := percentiles(lat)
	b.ReportMetric(p[0], prefix+"p50-µs")
	b.ReportMetric(p[1], prefix+"p99-µs")
}

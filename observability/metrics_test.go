package observability_test

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/atlassian-proxy/atlassian-proxy/observability"
)

type testRegistry struct{ *prometheus.Registry }

func newTestRegistry() *testRegistry { return &testRegistry{prometheus.NewRegistry()} }

// samples returns the metric family name's samples as "label=value,…" →
// value (the counter value, or the histogram's sample count).
func (r *testRegistry) samples(t *testing.T, name string) map[string]float64 {
	t.Helper()
	mfs, err := r.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[labelKey(m)] = value(m)
		}
	}
	return out
}

func labelKey(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return -1
}

func TestNewRegistry(t *testing.T) {
	reg := &testRegistry{observability.NewRegistry("v1.2.3")}
	bi := reg.samples(t, "atlassian_proxy_build_info")
	want := "goversion=" + runtime.Version() + ",version=v1.2.3"
	if len(bi) != 1 || bi[want] != 1 {
		t.Errorf("build_info = %v, want {%s: 1}", bi, want)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_start_time_seconds"} {
		if len(reg.samples(t, name)) == 0 {
			t.Errorf("%s missing from the registry", name)
		}
	}
}

func TestHTTPMetrics(t *testing.T) {
	logger, _ := newTestLogger(t)
	reg := newTestRegistry()
	r := newRouter(logger, reg)
	ok := func(w http.ResponseWriter, r *http.Request) {}
	r.Get("/v1/models", ok)
	r.Get("/v1/models/{id}", ok)
	r.Route("/admin", func(r chi.Router) {
		r.Delete("/api/tokens/{id}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	})
	r.Get("/boom", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)

	for _, q := range []struct{ method, path string }{
		{"GET", "/v1/models"},
		{"GET", "/v1/models/a"},
		{"GET", "/v1/models/b"},
		{"DELETE", "/admin/api/tokens/tok_1"},
		{"GET", "/not/a/route"},
		{"GET", "/not/another"},
		{"BREW", "/v1/models"},
		{"GET", "/boom"},
	} {
		get(t, newRequest(t, q.method, srv.URL+q.path, nil))
	}
	srv.Close() // every handler has returned

	wantCount := map[string]float64{
		"code=200,method=GET,route=/v1/models":                1,
		"code=200,method=GET,route=/v1/models/{id}":           2,
		"code=204,method=DELETE,route=/admin/api/tokens/{id}": 1,
		"code=404,method=GET,route=unmatched":                 2,
		"code=405,method=other,route=unmatched":               1,
		"code=500,method=GET,route=/boom":                     1,
	}
	if got := reg.samples(t, "atlassian_proxy_http_requests_total"); !equalSamples(got, wantCount) {
		t.Errorf("requests_total =\n%v\nwant\n%v", got, wantCount)
	}
	wantDuration := map[string]float64{
		"method=GET,route=/v1/models":                1,
		"method=GET,route=/v1/models/{id}":           2,
		"method=DELETE,route=/admin/api/tokens/{id}": 1,
		"method=GET,route=unmatched":                 2,
		"method=other,route=unmatched":               1,
		"method=GET,route=/boom":                     1,
	}
	if got := reg.samples(t, "atlassian_proxy_http_request_duration_seconds"); !equalSamples(got, wantDuration) {
		t.Errorf("request_duration_seconds counts =\n%v\nwant\n%v", got, wantDuration)
	}
}

func equalSamples(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestHTTPMetricsOutsideRouter wraps a chi router from outside, twice on
// one registry: the route label is still the pattern and the two
// middlewares share the metrics.
func TestHTTPMetricsOutsideRouter(t *testing.T) {
	reg := newTestRegistry()
	r := chi.NewRouter()
	r.Get("/v1/models/{id}", func(w http.ResponseWriter, r *http.Request) {})
	h := observability.HTTPMetrics(reg)(observability.HTTPMetrics(reg)(r))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/models/x", nil))
	want := map[string]float64{"code=200,method=GET,route=/v1/models/{id}": 2}
	if got := reg.samples(t, "atlassian_proxy_http_requests_total"); !equalSamples(got, want) {
		t.Errorf("requests_total = %v, want %v", got, want)
	}
}

func TestHTTPMetricsNilRegisterer(t *testing.T) {
	called := false
	h := observability.HTTPMetrics(nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called = true }))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	if !called {
		t.Errorf("handler not called")
	}
}

package observability

import (
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// MetricsNamespace prefixes every metric of atlassian-proxy.
const MetricsNamespace = "atlassian_proxy"

// NewRegistry returns a registry with the Go runtime and process collectors
// and the gauge atlassian_proxy_build_info{version,goversion} = 1.
func NewRegistry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace:   MetricsNamespace,
		Name:        "build_info",
		Help:        "Build information of the running binary; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo,
	)
	return reg
}

const rateLimitRejectionsHelp = "Requests refused by a rate limit, by limit (token: the per-token limit; " +
	"login_ip, login_total: admin login throttling per client address and in all)."

// RateLimitRejections returns the proxy's one rate-limit counter,
// atlassian_proxy_rate_limit_rejections_total{limit}, registered on reg:
// the API counts its per-token limit there ("token"), the admin UI its
// login throttling ("login_ip", "login_total"). Whichever asks first
// registers it; the others get the same counter.
func RateLimitRejections(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: MetricsNamespace, Name: "rate_limit_rejections_total", Help: rateLimitRejectionsHelp,
	}, []string{"limit"})
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, err
		}
		existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return nil, fmt.Errorf("%s_rate_limit_rejections_total is registered as a %T, not a counter vector", MetricsNamespace, are.ExistingCollector)
		}
		return existing, nil
	}
	return c, nil
}

// DurationBuckets are the buckets of the request duration histogram, in
// seconds: from 5 ms (a cached model list) to 5 min (a long completion).
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300}

// HTTPMetrics counts requests in atlassian_proxy_http_requests_total
// {route,method,code} and observes their duration in
// atlassian_proxy_http_request_duration_seconds{route,method}. The route is
// the chi route pattern, read after the request was served, and
// "unmatched" when no route matched; a method outside the standard ones is
// "other", so that no label takes unbounded values. A nil reg gives a
// middleware that does nothing. Calling HTTPMetrics twice with one
// registerer shares the metrics.
//
// Use it inside the chi router (r.Use); when it wraps a chi router from
// outside, it installs the route context that the router then fills.
func HTTPMetrics(reg prometheus.Registerer) func(http.Handler) http.Handler {
	if reg == nil {
		return func(next http.Handler) http.Handler { return next }
	}
	requests := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: MetricsNamespace,
		Subsystem: "http",
		Name:      "requests_total",
		Help:      "HTTP requests served, by route pattern, method and status code.",
	}, []string{"route", "method", "code"}))
	duration := register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: MetricsNamespace,
		Subsystem: "http",
		Name:      "request_duration_seconds",
		Help:      "Time from the request's arrival to the end of its response (of the whole stream for streams).",
		Buckets:   DurationBuckets,
	}, []string{"route", "method"}))

	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rw := wrapWriter(w)
			ctx, rctx := withRouteContext(r.Context())
			defer func() {
				route, method := routeOf(rctx), methodLabel(r.Method)
				requests.WithLabelValues(route, method, strconv.Itoa(rw.Status())).Inc()
				duration.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
			}()
			next.ServeHTTP(rw, r.WithContext(ctx))
		})
	}
}

// register registers c, or returns the collector already registered with
// the same description.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // a programming error: conflicting metric definitions
	}
	return c
}

func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

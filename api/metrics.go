package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/observability"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// Reasons of atlassian_proxy_stream_aborts_total: every way a stream ends
// without its [DONE].
const (
	abortUpstreamBroken  = "upstream_broken"  // the upstream failed after the commit (or after keep-alives began)
	abortUpstreamRefused = "upstream_refused" // after keep-alives began, the upstream refused the request (4xx)
	abortClientGone      = "client_gone"      // the client left or could not be written to
	abortShutdown        = "shutdown"         // AbortStreams: the shutdown grace is over
	abortPanic           = "panic"            // a bug of ours while relaying
)

// Limits of atlassian_proxy_rate_limit_rejections_total. The admin UI counts
// its login throttling on the same counter itself ("login_ip", "login_total").
const limitToken = "token"

// TTFTBuckets are the buckets of the time to first token, in seconds.
var TTFTBuckets = []float64{0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 60}

// metrics is the API's own metric set (the HTTP metrics are
// observability.HTTPMetrics'). A nil *metrics records nothing. The model
// label is always a catalog model's canonical id: a bounded set, since only
// models that matched the catalog get this far.
type metrics struct {
	ttft       *prometheus.HistogramVec // {model}
	aborts     *prometheus.CounterVec   // {reason}
	tokens     *prometheus.CounterVec   // {model, direction}
	rejections *prometheus.CounterVec   // {limit}
}

// newMetrics registers the API's metrics on reg; a nil reg gives nil. The
// time to first token of every model of catalog (may be nil) exists at zero,
// so that dashboards find its buckets before the first stream.
func newMetrics(reg prometheus.Registerer, catalog *gateway.Catalog) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	ns := observability.MetricsNamespace
	m := &metrics{
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "stream", Name: "first_token_seconds",
			Help:    "Time from the arrival of a streamed request to the first chunk with content written to the client, by model.",
			Buckets: TTFTBuckets,
		}, []string{"model"}),
		aborts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "stream", Name: "aborts_total",
			Help: "Streams that ended without their [DONE], by reason: upstream_broken, upstream_refused, client_gone, shutdown, panic.",
		}, []string{"reason"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "tokens_total",
			Help: "Tokens reported by the upstream at the end of successful requests, by model and direction (input, output).",
		}, []string{"model", "direction"}),
	}
	for _, r := range []string{abortUpstreamBroken, abortUpstreamRefused, abortClientGone, abortShutdown, abortPanic} {
		m.aborts.WithLabelValues(r)
	}
	if catalog != nil {
		for _, model := range catalog.List() {
			m.ttft.WithLabelValues(model.ID)
		}
	}
	for _, c := range []prometheus.Collector{m.ttft, m.aborts, m.tokens} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("api: register metrics: %w", err)
		}
	}
	r, err := observability.RateLimitRejections(reg)
	if err != nil {
		return nil, fmt.Errorf("api: register metrics: %w", err)
	}
	m.rejections = r
	m.rejections.WithLabelValues(limitToken)
	return m, nil
}

func (m *metrics) abort(reason string) {
	if m != nil {
		m.aborts.WithLabelValues(reason).Inc()
	}
}

func (m *metrics) rejected(limit string) {
	if m != nil {
		m.rejections.WithLabelValues(limit).Inc()
	}
}

// usage counts the tokens of a successful request.
func (m *metrics) usage(model string, u pool.Usage) {
	if m == nil {
		return
	}
	if u.InputTokens > 0 {
		m.tokens.WithLabelValues(model, "input").Add(float64(u.InputTokens))
	}
	if u.OutputTokens > 0 {
		m.tokens.WithLabelValues(model, "output").Add(float64(u.OutputTokens))
	}
}

// firstToken observes the time to first token of one stream: call
// observe after each chunk written; only the first with content counts.
type firstToken struct {
	m     *metrics
	model string
	start time.Time
	seen  bool
}

func (a *API) newFirstToken(ctx context.Context, model string) *firstToken {
	return &firstToken{m: a.metrics, model: model, start: arrivalOf(ctx)}
}

func (f *firstToken) observe(c *gateway.ChatCompletionChunk) {
	if f.seen || f.m == nil || !hasContent(c) {
		return
	}
	f.seen = true
	f.m.ttft.WithLabelValues(f.model).Observe(time.Since(f.start).Seconds())
}

// hasContent reports whether a chunk carries text or a tool call (not only
// a role, a finish reason or usage).
func hasContent(c *gateway.ChatCompletionChunk) bool {
	for _, ch := range c.Choices {
		if ch.Delta.Content != nil && *ch.Delta.Content != "" || len(ch.Delta.ToolCalls) > 0 {
			return true
		}
	}
	return false
}

type arrivalKey struct{}

// markArrival records when the request arrived, for the time to first token.
func markArrival(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), arrivalKey{}, time.Now())))
	})
}

// arrivalOf is the request's arrival time (now when unknown).
func arrivalOf(ctx context.Context) time.Time {
	if t, ok := ctx.Value(arrivalKey{}).(time.Time); ok {
		return t
	}
	return time.Now()
}

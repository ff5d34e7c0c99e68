package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sethvargo/go-limiter"

	"github.com/atlassian-proxy/atlassian-proxy/dispatch"
	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/observability"
	"github.com/atlassian-proxy/atlassian-proxy/openaierr"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/store"
	"github.com/atlassian-proxy/atlassian-proxy/usage"
)

// Defaults of Config.
const (
	DefaultMaxBodyBytes    = 10 << 20
	DefaultStreamKeepAlive = 15 * time.Second
	DefaultBodyReadTimeout = 30 * time.Second
)

// Config tunes the API. The zero value means the documented defaults.
type Config struct {
	// MaxBodyBytes is the largest request body accepted (413 above it).
	// 0 means DefaultMaxBodyBytes (10 MiB).
	MaxBodyBytes int64
	// StreamKeepAlive is how long a stream may stay silent before an SSE
	// comment is sent to keep proxies from closing it. 0 means
	// DefaultStreamKeepAlive (15 s).
	StreamKeepAlive time.Duration
	// BodyReadTimeout is how long a client may take, from the start of a
	// request, to send its body (408 after it). It bounds the body only:
	// the deadline is lifted once the body is read, so long streams are
	// unaffected. It covers the routes mounted with Mount too. 0 means
	// DefaultBodyReadTimeout (30 s).
	BodyReadTimeout time.Duration
}

// Validate reports a Config that cannot be used.
func (c Config) Validate() error {
	if c.MaxBodyBytes < 0 {
		return fmt.Errorf("api: MaxBodyBytes must not be negative, got %d", c.MaxBodyBytes)
	}
	if c.StreamKeepAlive < 0 {
		return fmt.Errorf("api: StreamKeepAlive must not be negative, got %s", c.StreamKeepAlive)
	}
	if c.BodyReadTimeout < 0 {
		return fmt.Errorf("api: BodyReadTimeout must not be negative, got %s", c.BodyReadTimeout)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.StreamKeepAlive == 0 {
		c.StreamKeepAlive = DefaultStreamKeepAlive
	}
	if c.BodyReadTimeout == 0 {
		c.BodyReadTimeout = DefaultBodyReadTimeout
	}
	return c
}

// TokenVerifier checks a client's API token (auth.Tokens implements it).
// It returns an error wrapping auth.ErrUnknownToken or auth.ErrExpiredToken
// when the token cannot be used.
type TokenVerifier interface {
	Verify(token string) (store.APIToken, error)
}

// Upstream makes one call to the AI gateway with one credential
// (gateway.Client implements it).
type Upstream interface {
	Complete(ctx context.Context, cred pool.Credential, m gateway.Model, req *gateway.ChatRequest) (*gateway.ChatCompletion, error)
	// Stream returns once the upstream answered 200 and its first event
	// parsed; the stream lives as long as ctx.
	Stream(ctx context.Context, cred pool.Credential, m gateway.Model, req *gateway.ChatRequest) (*gateway.Stream, error)
}

// Dispatcher runs a call on a credential of the pool, failing over between
// credentials (dispatch.Dispatcher implements it).
type Dispatcher interface {
	Do(ctx context.Context, call dispatch.Call) (*pool.Lease, error)
}

// Deps are the collaborators of the API. Tokens, Catalog, Upstream and
// Dispatcher are required.
type Deps struct {
	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: no metrics
	Tokens     TokenVerifier
	Catalog    *gateway.Catalog
	Upstream   Upstream
	Dispatcher Dispatcher
	// Ready reports whether the service can serve (the store answers);
	// nil means always ready.
	Ready func(ctx context.Context) error
	// Degraded lists what is wrong while the service still serves (for
	// example "store_unavailable"): /ready then answers 200 with status
	// "degraded" and the list. nil: never degraded.
	Degraded func() []string
	// Usage counts answered requests (usage accounting); nil: not counted.
	Usage UsageRecorder
	// Limiters makes the store of the per-token rate limit of one rate
	// (requests per minute); nil: in-process stores (limits per replica).
	Limiters func(perMinute int) (limiter.Store, error)
}

// UsageRecorder is what the API tells the usage accounting (usage.Recorder).
type UsageRecorder interface {
	// Record counts one answered request.
	Record(usage.Event)
	// RecordAttemptFailure notes one upstream attempt that failed on a
	// credential, whether or not failover then served the request.
	RecordAttemptFailure(credentialID, model, msg string)
}

// API is the OpenAI-compatible HTTP surface: /v1/models,
// /v1/chat/completions, /health and /ready.
type API struct {
	cfg     Config
	logger  *slog.Logger
	tokens  TokenVerifier
	catalog *gateway.Catalog
	up      Upstream
	disp    Dispatcher
	ready   func(ctx context.Context) error
	degr    func() []string
	usage   UsageRecorder // nil: not counted

	limits  tokenLimits // per-token rate limits; Close stops them
	metrics *metrics    // nil: no metrics

	// aborting is closed by AbortStreams when the shutdown grace is over:
	// every stream still open ends with an SSE error event.
	aborting  chan struct{}
	abortOnce sync.Once

	mux     *chi.Mux
	handler http.Handler
}

// New checks cfg and deps and builds the API with its router. Metrics are
// registered on deps.Registerer here, once. Close releases what the API
// starts in the background (the per-token rate limiters).
func New(cfg Config, deps Deps) (*API, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var missing []string
	if deps.Tokens == nil {
		missing = append(missing, "Tokens")
	}
	if deps.Catalog == nil {
		missing = append(missing, "Catalog")
	}
	if deps.Upstream == nil {
		missing = append(missing, "Upstream")
	}
	if deps.Dispatcher == nil {
		missing = append(missing, "Dispatcher")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("api: missing dependencies: %s", strings.Join(missing, ", "))
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &API{
		cfg:     cfg.withDefaults(),
		logger:  logger,
		tokens:  deps.Tokens,
		catalog: deps.Catalog,
		up:      deps.Upstream,
		disp:    deps.Dispatcher,
		ready:   deps.Ready,
		degr:    deps.Degraded,
		usage:   deps.Usage,
		limits:  tokenLimits{make: deps.Limiters},

		aborting: make(chan struct{}),
	}
	m, err := newMetrics(deps.Registerer, deps.Catalog)
	if err != nil {
		return nil, err
	}
	a.metrics = m
	a.routes(deps.Registerer)
	return a, nil
}

// AbortStreams ends every stream still open (and any that starts later)
// with an SSE error event telling the client to retry, and no [DONE]: what
// the server does when its shutdown grace is over, so that no client takes
// a cut stream for a complete answer. It does not wait for them.
func (a *API) AbortStreams() { a.abortOnce.Do(func() { close(a.aborting) }) }

// Handler returns the router. It is built once by New.
func (a *API) Handler() http.Handler { return a.handler }

// Mount serves h under pattern (the admin API at "/admin") behind the same
// request id, access log, metrics and recovery middleware as the OpenAI
// routes. h sees paths with pattern stripped. Call it before serving.
func (a *API) Mount(pattern string, h http.Handler) { a.mux.Mount(pattern, h) }

func (a *API) routes(reg prometheus.Registerer) {
	r := chi.NewRouter()
	r.Use(
		markArrival, // first: the time to first token counts from here
		observability.RequestID,
		observability.AccessLog(a.logger),
		observability.HTTPMetrics(reg), // a no-op when reg is nil
		observability.Recover(a.logger, renderInternal),
		a.bodyDeadline,
	)
	r.NotFound(a.notFound)
	r.MethodNotAllowed(a.methodNotAllowed)

	r.Get("/health", a.health)
	r.Get("/ready", a.readiness)
	r.With(a.optionalToken).Get("/v1/models", a.listModels)
	// A wildcard: model ids contain ':', '@' and possibly '/'.
	r.With(a.optionalToken).Get("/v1/models/*", a.getModel)
	r.With(a.requireToken).Post("/v1/chat/completions", a.chatCompletions)

	a.mux = r
	a.handler = r
}

func (a *API) health(w http.ResponseWriter, _ *http.Request) {
	openaierr.WriteJSON(w, http.StatusOK, statusBody{Status: "ok"})
}

type statusBody struct {
	Status   string   `json:"status"`
	Problems []string `json:"problems,omitempty"`
}

func (a *API) readiness(w http.ResponseWriter, r *http.Request) {
	if a.ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := a.ready(ctx); err != nil {
			a.logger.LogAttrs(r.Context(), slog.LevelWarn, "not ready", slog.Any("error", err))
			openaierr.WriteJSON(w, http.StatusServiceUnavailable, statusBody{Status: "unavailable"})
			return
		}
	}
	if a.degr != nil {
		if p := a.degr(); len(p) > 0 {
			openaierr.WriteJSON(w, http.StatusOK, statusBody{Status: "degraded", Problems: p})
			return
		}
	}
	openaierr.WriteJSON(w, http.StatusOK, statusBody{Status: "ready"})
}

func (a *API) notFound(w http.ResponseWriter, r *http.Request) {
	openaierr.Render(w, http.StatusNotFound, openaierr.TypeInvalidRequest, "unknown_url", "",
		fmt.Sprintf("Unknown request URL: %s %s. Please check the URL for typos.", r.Method, clip(r.URL.Path, 200)))
}

// allMethods are the methods tried to build the Allow header of a 405.
var allMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions,
}

func (a *API) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	// chi knows the allowed methods but does not hand them to a custom
	// handler: ask the router again for each method.
	path := r.URL.RawPath
	if path == "" {
		path = r.URL.Path
	}
	var allowed []string
	for _, m := range allMethods {
		if a.mux.Match(chi.NewRouteContext(), m, path) {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
	}
	msg := fmt.Sprintf("Method %s is not allowed for %s.", clip(r.Method, 20), clip(r.URL.Path, 200))
	if len(allowed) > 0 {
		msg += " Allowed: " + strings.Join(allowed, ", ") + "."
	}
	openaierr.Render(w, http.StatusMethodNotAllowed, openaierr.TypeInvalidRequest, "method_not_allowed", "", msg)
}

// clip shortens s to at most n bytes for echoing client input in messages.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	goredis "github.com/redis/go-redis/v9"
	"github.com/sethvargo/go-limiter"
	"golang.org/x/sync/errgroup"

	"github.com/atlassian-proxy/atlassian-proxy/adminui"
	"github.com/atlassian-proxy/atlassian-proxy/api"
	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/dispatch"
	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/observability"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/ratelimit"
	"github.com/atlassian-proxy/atlassian-proxy/store"
	redisstore "github.com/atlassian-proxy/atlassian-proxy/store/redis"
	"github.com/atlassian-proxy/atlassian-proxy/store/sqlite"
	"github.com/atlassian-proxy/atlassian-proxy/usage"
)

const (
	dbFileName  = "atlassian-proxy.db"
	keyFileName = "secret.key"
)

// serve runs the server until ctx ends (SIGINT/SIGTERM), then drains.
func serve(ctx context.Context, e env, args []string) error {
	cfg, err := loadConfig("serve", args, e.lookupEnv)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	logger, err := observability.NewLogger(e.stderr, observability.LogConfig{Level: cfg.LogLevel, Format: cfg.LogFormat})
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if cfg.RedisURL != "" {
		goredis.SetLogger(redisstore.Logger{L: logger}) // go-redis's own messages (failed dials) as JSON lines
	}
	a, err := newApp(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer a.close()
	if a.generatedPassword != "" {
		printGeneratedPassword(e.stdout, a.generatedPassword)
	}
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s (PORT): %w", addr, err)
	}
	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s (METRICS_ADDR): %w", cfg.MetricsAddr, err)
		}
		logger.Info("metrics listening", "addr", metricsLn.Addr().String(), "path", "/metrics")
	}
	logger.Info("listening", "addr", ln.Addr().String(), "version", buildVersion(), "data_dir", cfg.DataDir,
		"upstream", cfg.UpstreamURL, "models", len(a.catalog.List()))
	if err := a.serve(ctx, ln, metricsLn); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// app is the wired server: every component built from a config, not yet
// running. serve runs it on a listener; benchmarks use it in process.
type app struct {
	cfg      config
	logger   *slog.Logger
	store    store.Store
	redis    *redisstore.Store // nil: embedded store
	health   *storeHealth
	admin    *adminui.Admin
	api      *api.API
	pool     *pool.Pool
	tokens   *auth.Tokens
	syncer   *syncer
	catalog  *gateway.Catalog
	upstream *gateway.Client
	usage    *usage.Recorder
	handler  http.Handler
	metrics  *prometheus.Registry

	draining          atomic.Bool
	generatedPassword string // set when this start generated the admin password
}

// newApp builds every component. Its order is the dependency order: store
// and key, catalog, upstream client, pool, dispatcher, syncer, HTTP surfaces.
func newApp(ctx context.Context, cfg config, logger *slog.Logger) (_ *app, err error) {
	a := &app{cfg: cfg, logger: logger}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	ver := buildVersion()
	opened, err := openStore(ctx, cfg.storeSettings())
	if err != nil {
		return nil, err
	}
	st, cipher := opened.Store, opened.cipher
	a.store = st
	a.redis = opened.redis

	a.catalog = gateway.DefaultCatalog()
	if cfg.ModelsFile != "" {
		if a.catalog, err = loadCatalogFile(cfg.ModelsFile); err != nil {
			return nil, err
		}
	}
	reg := observability.NewRegistry(ver)
	a.metrics = reg
	upstream, err := gateway.NewClient(gateway.Config{BaseURL: cfg.UpstreamURL, UserAgent: "atlassian-proxy/" + ver, Logger: logger},
		&http.Client{Transport: gateway.NewTransport()})
	if err != nil {
		return nil, err
	}
	a.upstream = upstream
	a.usage = usage.New(st, usage.Config{Logger: logger})
	a.tokens = auth.NewTokens(st, logger)
	a.pool, err = pool.New(pool.Config{DefaultMaxConcurrency: cfg.MaxConcurrency},
		pool.Deps{Logger: logger, Registerer: reg, Checker: creditChecker{upstream}, States: st})
	if err != nil {
		return nil, err
	}
	disp, err := dispatch.New(dispatch.Config{
		MaxAttempts:   cfg.MaxAttempts,
		RetryDeadline: cfg.RetryDeadline,
		QueueTimeout:  cfg.QueueTimeout,
		QueueMax:      cfg.QueueMax,
	}, a.pool, dispatch.Deps{Logger: logger, Registerer: reg})
	if err != nil {
		return nil, err
	}
	a.syncer = newSyncer(st, cipher, a.tokens, a.pool, logger)
	var storeErrors func() int64
	if a.redis != nil {
		a.syncer.marker = a.redis.Marker
		storeErrors = a.redis.Errors
	}
	a.health = newStoreHealth(st, reg, logger, storeErrors)
	a.syncer.onLost = a.health.setLost
	if err := a.syncer.once(ctx); err != nil {
		return nil, err
	}

	a.api, err = api.New(api.Config{MaxBodyBytes: cfg.MaxBodyBytes, StreamKeepAlive: cfg.StreamKeepAlive}, api.Deps{
		Logger: logger, Registerer: reg, Tokens: a.tokens, Catalog: a.catalog,
		Upstream: upstream, Dispatcher: disp, Ready: a.ready, Degraded: a.health.problems,
		Usage: a.usage, Limiters: a.tokenLimiters,
	})
	if err != nil {
		return nil, err
	}
	a.admin, err = adminui.New(adminui.Config{SecureCookies: cfg.SecureCookies, TrustedProxies: cfg.TrustedProxies}, adminui.Deps{
		Store: st, Cipher: cipher, Pool: a.pool, Logger: logger, Changed: a.syncer.changed,
		Activity: a.usage, Checker: a.upstream, Limiters: a.loginLimiters, Nonces: a.formNonces, Catalog: a.catalog, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	if a.generatedPassword, err = a.admin.Service().EnsureAdminPassword(ctx, cfg.AdminPassword); err != nil {
		return nil, fmt.Errorf("set up the admin password: %w", err)
	}
	a.api.Mount("/admin", a.admin.Handler())
	a.handler = a.api.Handler()
	return a, nil
}

func loadCatalogFile(path string) (*gateway.Catalog, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: invalid MODELS_FILE: %w", errUsage, err)
	}
	defer f.Close()
	c, err := gateway.LoadCatalog(f)
	if err != nil {
		return nil, fmt.Errorf("%w: invalid MODELS_FILE %s: %w", errUsage, path, err)
	}
	return c, nil
}

// ready answers /ready: a draining server is not ready. A store that does
// not answer leaves it ready but degraded (storeHealth): chat requests are
// served from memory.
func (a *app) ready(context.Context) error {
	if a.draining.Load() {
		return errors.New("shutting down")
	}
	return nil
}

// loginLimiters makes the stores of login throttling (see limiter).
func (a *app) loginLimiters(name string, tokens int, window time.Duration) (limiter.Store, error) {
	return a.limiter("login:"+name, uint64(tokens), window)
}

// formNonces makes the store of the admin token form's used nonces (one
// take per nonce per window): in process with the embedded store (one
// process: exact); with Redis, the shared LimiterStore itself, without
// limiter's fallback, so that while Redis cannot answer the form answers
// 503 rather than take a nonce in one process only (a resend to another
// replica, or after Redis is back, would then make a second token).
func (a *app) formNonces(window time.Duration) (limiter.Store, error) {
	if a.redis == nil {
		return ratelimit.Memory(1, window)
	}
	return a.redis.Limiter(formNonceLimiter, 1, window), nil
}

// formNonceLimiter is the Redis name of the token form's nonce store (keys
// <prefix>rl:form-nonce:token-create:<nonce>).
const formNonceLimiter = "form-nonce"

// tokenLimiters makes the store of the per-token rate limit of one rate
// (requests per minute; see limiter).
func (a *app) tokenLimiters(perMinute int) (limiter.Store, error) {
	return a.limiter("token:"+strconv.Itoa(perMinute), uint64(perMinute), time.Minute)
}

// limiter makes a rate-limit store of tokens per window: in process with
// the embedded store; in Redis, shared by every replica, with an
// in-process fallback while Redis is away (never no limit).
func (a *app) limiter(name string, tokens uint64, window time.Duration) (limiter.Store, error) {
	local, err := ratelimit.Memory(tokens, window)
	if err != nil {
		return nil, err
	}
	if a.redis == nil {
		return local, nil
	}
	warn := &limiterWarning{logger: a.logger, name: name, every: limiterWarnEvery}
	return ratelimit.Fallback(a.redis.Limiter(name, tokens, window), local, warn.failed), nil
}

// limiterWarnEvery is how often, at most, a failing shared limiter store
// is logged: it fails at most about once a second (ratelimit.RetryAfter)
// for as long as Redis is away.
const limiterWarnEvery = time.Minute

// limiterWarning logs the failures of one shared limiter store, at most
// once per every, with the number of failures since the last line: an
// operator learns that the limit holds per replica for now, without a line
// per request.
type limiterWarning struct {
	logger *slog.Logger
	name   string
	every  time.Duration

	mu       sync.Mutex
	loggedAt time.Time
	failures int // since the last line
}

func (w *limiterWarning) failed(err error) {
	w.mu.Lock()
	w.failures++
	now := time.Now()
	if !w.loggedAt.IsZero() && now.Sub(w.loggedAt) < w.every {
		w.mu.Unlock()
		return
	}
	n := w.failures
	w.failures, w.loggedAt = 0, now
	w.mu.Unlock()
	w.logger.Warn("a shared rate limit store failed; the limit holds per replica until Redis answers",
		"limiter", w.name, "failures", n, "err", err)
}

// serve runs the background owners and the HTTP server on ln until ctx
// ends, then drains: /ready turns 503, the server stops accepting and gives
// in-flight requests SHUTDOWN_GRACE, and only then do the pool, the token
// cache (final last-used flush) and the syncer stop.
func (a *app) serve(ctx context.Context, ln, metricsLn net.Listener) error {
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn),
	}
	servers := []*http.Server{srv}
	listeners := []net.Listener{ln}
	if metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn)}))
		servers = append(servers, &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second})
		listeners = append(listeners, metricsLn)
	}
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return a.pool.Run(gctx) })
	g.Go(func() error { return a.tokens.Run(gctx) })
	g.Go(func() error { return a.syncer.run(gctx) })
	g.Go(func() error { return a.usage.Run(gctx) })
	g.Go(func() error { return a.health.run(gctx) })
	for i, hs := range servers {
		g.Go(func() error {
			if err := hs.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http server: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		select {
		case <-ctx.Done():
			a.logger.Info("shutting down", "grace", a.cfg.ShutdownGrace.String())
		case <-gctx.Done():
		}
		a.draining.Store(true)
		if d := a.cfg.ShutdownDelay; d > 0 && ctx.Err() != nil && !interrupted.Load() {
			// /ready answers 503 from now on; keep accepting for a moment
			// so that load balancers stop routing here before the
			// listener closes.
			a.logger.Info("refusing new connections after the shutdown delay", "delay", d.String())
			select {
			case <-time.After(d):
			case <-gctx.Done():
			}
		}
		shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownGrace)
		defer cancel()
		if err := srv.Shutdown(shutCtx); err != nil {
			// Streams still open get an SSE error event rather than a cut
			// that could pass for a complete answer, then a moment to send it.
			a.logger.Warn("grace period over; ending the streams still open", "err", err)
			a.api.AbortStreams()
			lastCtx, cancelLast := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if err := srv.Shutdown(lastCtx); errors.Is(err, context.DeadlineExceeded) {
				srv.Close()
			}
			cancelLast()
		}
		for _, hs := range servers[1:] { // metrics last, so the drain can be watched
			hs.Close()
		}
		stopRun()
		return nil
	})
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

func (a *app) close() {
	if a.api != nil {
		a.api.Close()
	}
	if a.admin != nil {
		a.admin.Close()
	}
	if a.store != nil {
		a.store.Close()
	}
}

// storeSettings name the store: Redis when RedisURL is set, else the
// embedded SQLite file in DataDir.
type storeSettings struct {
	DataDir, SecretKey                   string
	RedisURL, RedisPassword, RedisPrefix string
}

func (c config) storeSettings() storeSettings {
	return storeSettings{DataDir: c.DataDir, SecretKey: c.SecretKey,
		RedisURL: c.RedisURL, RedisPassword: c.RedisPassword, RedisPrefix: c.RedisPrefix}
}

// openedStore is an open store and the cipher of its secrets. redis is set
// when the store is Redis (for its marker, limiters and error count).
type openedStore struct {
	store.Store
	cipher *auth.Cipher
	redis  *redisstore.Store
}

// openStore opens the store and the cipher of stored secrets: SECRET_KEY
// when given (required with Redis), else a key generated into DATA_DIR once.
func openStore(ctx context.Context, s storeSettings) (openedStore, error) {
	var o openedStore
	if s.RedisURL != "" && s.SecretKey == "" {
		return o, fmt.Errorf("%w: SECRET_KEY is required when REDIS_URL is set", errUsage)
	}
	if s.RedisURL == "" {
		if err := os.MkdirAll(s.DataDir, 0o700); err != nil {
			return o, fmt.Errorf("create DATA_DIR %s: %w", s.DataDir, err)
		}
	}
	var key []byte
	var err error
	if s.SecretKey != "" {
		if key, err = auth.ParseKey(s.SecretKey); err != nil {
			return o, fmt.Errorf("%w: invalid SECRET_KEY: %w", errUsage, err)
		}
	} else if key, err = auth.LoadOrCreateKeyFile(filepath.Join(s.DataDir, keyFileName)); err != nil {
		return o, fmt.Errorf("secret key in DATA_DIR: %w", err)
	}
	if o.cipher, err = auth.NewCipher(key); err != nil {
		return o, err
	}
	if s.RedisURL != "" {
		rs, err := redisstore.Open(ctx, redisstore.Options{URL: s.RedisURL, Password: s.RedisPassword, Prefix: s.RedisPrefix})
		if err != nil {
			return o, fmt.Errorf("open the Redis store (REDIS_URL): %w", err)
		}
		o.Store, o.redis = rs, rs
		return o, nil
	}
	st, err := sqlite.Open(ctx, filepath.Join(s.DataDir, dbFileName))
	if err != nil {
		return o, fmt.Errorf("open the store in DATA_DIR %s: %w", s.DataDir, err)
	}
	o.Store = st
	return o, nil
}

func printGeneratedPassword(w interface{ Write([]byte) (int, error) }, pw string) {
	fmt.Fprintf(w, "\n"+
		"  ================================================================\n"+
		"  Generated admin password (shown once; change it at first login):\n"+
		"      %s\n"+
		"  Log in at /admin. Lost it? Run: atlassian-proxy reset-password\n"+
		"  ================================================================\n\n", pw)
}

// creditChecker lets the pool re-check an invalid or refused credential in
// the background through the gateway's credits/check route.
type creditChecker struct{ c *gateway.Client }

// Check maps credits/check onto outcomes: OK → success; RATE_LIMITED → rate
// limited for its retryAfterSeconds (the credential is valid but out of
// credits for now: it must not go back into rotation); 401/403/USER_BLOCKED
// → the gateway error's outcome; UNKNOWN or anything else → inconclusive
// (the pool checks again later).
func (k creditChecker) Check(ctx context.Context, cred pool.Credential) (pool.Outcome, error) {
	credits, err := k.c.CheckCredits(ctx, cred)
	if err != nil {
		var ge *gateway.Error
		if errors.As(err, &ge) {
			return ge.Outcome(), err
		}
		return pool.OutcomeTransport, err
	}
	switch credits.Status {
	case "OK":
		return pool.OutcomeSuccess, nil
	case "RATE_LIMITED":
		return pool.OutcomeRateLimited, &gateway.Error{
			Status: http.StatusOK, Kind: pool.OutcomeRateLimited, Code: credits.Status,
			Retry: time.Duration(credits.RetryAfterSeconds) * time.Second, Message: "credits check: rate limited",
		}
	default:
		return pool.OutcomeServerError, fmt.Errorf("credits check answered status %q", credits.Status)
	}
}

package adminui

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sethvargo/go-limiter"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/ratelimit"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// Config of the admin handler. The zero value means the documented defaults.
type Config struct {
	// SessionIdle ends a session unused for this long (default 30 min).
	SessionIdle time.Duration
	// SessionAbsolute ends a session this long after login (default 12 h).
	SessionAbsolute time.Duration
	// SecureCookies marks the session cookie Secure with the __Host- prefix
	// and sends HSTS: set it when the admin UI is served over HTTPS (also
	// behind a TLS-terminating proxy). Requests arriving over TLS get both
	// anyway.
	SecureCookies bool
	// LoginAttemptsPerIP is how many logins (and password changes) one
	// client IP (an IPv6 /64) may try per LoginWindow (default 10).
	LoginAttemptsPerIP int
	// LoginAttemptsTotal is how many logins all clients together may try
	// per LoginWindow (default 100).
	LoginAttemptsTotal int
	// LoginWindow is the throttling window (default 1 min).
	LoginWindow time.Duration
	// MaxBodyBytes limits request bodies (default 1 MiB).
	MaxBodyBytes int64
	// BodyReadTimeout is how long a client may take to send a request
	// body (408 after it; default 30 s).
	BodyReadTimeout time.Duration
	// TrustedOrigins are extra origins ("https://admin.example.com") whose
	// cross-origin requests are allowed, for a proxy that rewrites Host.
	TrustedOrigins []string
	// TrustedProxies are the load balancers whose X-Forwarded-For names
	// the client (for login throttling per client IP). Requests from other
	// addresses are keyed by their own address; headers are ignored.
	TrustedProxies []netip.Prefix
}

// Defaults.
const (
	DefaultSessionIdle        = 30 * time.Minute
	DefaultSessionAbsolute    = 12 * time.Hour
	DefaultLoginAttemptsPerIP = 10
	DefaultLoginAttemptsTotal = 100
	DefaultLoginWindow        = time.Minute
	DefaultMaxBodyBytes       = 1 << 20
	DefaultBodyReadTimeout    = 30 * time.Second
)

func (c Config) withDefaults() Config {
	if c.SessionIdle == 0 {
		c.SessionIdle = DefaultSessionIdle
	}
	if c.SessionAbsolute == 0 {
		c.SessionAbsolute = DefaultSessionAbsolute
	}
	if c.LoginAttemptsPerIP == 0 {
		c.LoginAttemptsPerIP = DefaultLoginAttemptsPerIP
	}
	if c.LoginAttemptsTotal == 0 {
		c.LoginAttemptsTotal = DefaultLoginAttemptsTotal
	}
	if c.LoginWindow == 0 {
		c.LoginWindow = DefaultLoginWindow
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.BodyReadTimeout == 0 {
		c.BodyReadTimeout = DefaultBodyReadTimeout
	}
	return c
}

// Validate reports a negative or inconsistent setting.
func (c Config) Validate() error {
	switch {
	case c.SessionIdle < 0:
		return errors.New("adminui: SessionIdle must not be negative")
	case c.SessionAbsolute < 0:
		return errors.New("adminui: SessionAbsolute must not be negative")
	case c.LoginAttemptsPerIP < 0:
		return errors.New("adminui: LoginAttemptsPerIP must not be negative")
	case c.LoginAttemptsTotal < 0:
		return errors.New("adminui: LoginAttemptsTotal must not be negative")
	case c.LoginWindow < 0:
		return errors.New("adminui: LoginWindow must not be negative")
	case c.MaxBodyBytes < 0:
		return errors.New("adminui: MaxBodyBytes must not be negative")
	case c.BodyReadTimeout < 0:
		return errors.New("adminui: BodyReadTimeout must not be negative")
	}
	d := c.withDefaults()
	if d.SessionIdle > d.SessionAbsolute {
		return fmt.Errorf("adminui: SessionIdle (%s) must not exceed SessionAbsolute (%s)", d.SessionIdle, d.SessionAbsolute)
	}
	cop := http.NewCrossOriginProtection()
	for _, o := range c.TrustedOrigins {
		if err := cop.AddTrustedOrigin(o); err != nil {
			return fmt.Errorf("adminui: TrustedOrigins: %w", err)
		}
	}
	return nil
}

// PoolView is what the admin handler needs of the credential pool.
type PoolView interface {
	Status() pool.Status
	Reset(id string) error
}

// Deps are the admin handler's collaborators.
type Deps struct {
	Store  store.Store  // required
	Cipher *auth.Cipher // required
	Logger *slog.Logger // nil: discard
	// Pool serves GET /api/pool and POST /api/credentials/{id}/reset; nil:
	// both answer 503.
	Pool PoolView
	// Changed is called after every successful change of credentials or
	// tokens (the lead wires it to reload the token cache and resync the
	// pool at once). May be nil.
	Changed func()
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Activity feeds the dashboard's last-hour chart and recent errors
	// (*usage.Recorder); nil: the dashboard shows neither.
	Activity Activity
	// Checker checks a credential with the upstream before it is added
	// (*gateway.Client); nil: POST /api/credentials/check answers 503 and
	// the pages offer no check.
	Checker Checker
	// Limiters makes the login throttling stores (name "ip" or "total",
	// tokens per window); nil: in-process stores. With Redis they are
	// shared by every replica.
	Limiters func(name string, tokens int, window time.Duration) (limiter.Store, error)
	// Nonces makes the store that remembers the used one-time nonces of
	// the token-creation form: one token per key per window (the window is
	// SessionAbsolute: no session, so no form, outlives it). With several
	// replicas it must be shared by all of them and must fail, not answer
	// from a per-process copy (no fallback), when it cannot reach the
	// shared state: the form then answers 503 and makes no token, since a
	// repeat could not be told from a first sending. nil: an in-process
	// store (exact for one process).
	Nonces func(window time.Duration) (limiter.Store, error)
	// Catalog is the model catalog an API token's allowed models must be
	// in (ids or aliases); nil: gateway.DefaultCatalog().
	Catalog *gateway.Catalog
	// Registerer, when set, gets the login throttling's refusals counted
	// in atlassian_proxy_rate_limit_rejections_total (limit "login_ip" or
	// "login_total"). When that counter is registered already (by the API,
	// which counts limit "token" in it), the admin handler counts in it.
	Registerer prometheus.Registerer
}

// Admin serves the admin pages and the admin JSON API under /admin.
type Admin struct {
	cfg      Config
	svc      *Service
	logger   *slog.Logger
	pool     PoolView
	activity Activity
	checker  Checker
	views    *views
	cop      *http.CrossOriginProtection
	perIP    limiter.Store
	total    limiter.Store
	nonces   limiter.Store // the token form's used nonces: one take each
	catalog  *gateway.Catalog
	// rejections counts refused login attempts by limit; nil: not counted.
	rejections *prometheus.CounterVec
	handler    http.Handler
}

// New builds the admin handler and its Service. Close releases its login
// throttling state.
func New(cfg Config, deps Deps) (*Admin, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Store == nil {
		return nil, errors.New("adminui: Deps.Store is required")
	}
	if deps.Cipher == nil {
		return nil, errors.New("adminui: Deps.Cipher is required")
	}
	cfg = cfg.withDefaults()
	logger := deps.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	vs, err := loadViews()
	if err != nil {
		return nil, err
	}
	rejections, err := loginRejections(deps.Registerer)
	if err != nil {
		return nil, err
	}
	catalog := deps.Catalog
	if catalog == nil {
		catalog = gateway.DefaultCatalog()
	}
	a := &Admin{
		cfg:      cfg,
		svc:      newService(deps.Store, deps.Cipher, logger, cfg, deps.Now, deps.Changed, catalog),
		logger:   logger,
		pool:     deps.Pool,
		activity: deps.Activity,
		checker:  deps.Checker,
		views:    vs,
		cop:      http.NewCrossOriginProtection(),
		catalog:  catalog,
		// counted in the API's rate-limit counter (see loginRejections)
		rejections: rejections,
	}
	for _, o := range cfg.TrustedOrigins {
		if err := a.cop.AddTrustedOrigin(o); err != nil {
			return nil, fmt.Errorf("adminui: TrustedOrigins: %w", err)
		}
	}
	a.cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isAPI(r) {
			a.pageError(w, r, http.StatusForbidden, "Request refused",
				"This form was sent from another site, so it was refused. Open the admin pages directly and try again.")
			return
		}
		renderError(w, http.StatusForbidden, typePermission, "cross_origin_request", "", "cross-origin request refused")
	}))
	// The memory stores run a sweeper goroutine each; Close stops them.
	mk := deps.Limiters
	if mk == nil {
		mk = func(_ string, tokens int, window time.Duration) (limiter.Store, error) {
			return ratelimit.Memory(uint64(tokens), window)
		}
	}
	if a.perIP, err = mk("ip", cfg.LoginAttemptsPerIP, cfg.LoginWindow); err != nil {
		return nil, err
	}
	if a.total, err = mk("total", cfg.LoginAttemptsTotal, cfg.LoginWindow); err != nil {
		_ = a.perIP.Close(context.Background())
		return nil, err
	}
	nonces := deps.Nonces
	if nonces == nil {
		nonces = func(window time.Duration) (limiter.Store, error) { return ratelimit.Memory(1, window) }
	}
	// A nonce is taken once; a session outlives no window of this length.
	if a.nonces, err = nonces(cfg.SessionAbsolute); err != nil {
		_ = a.perIP.Close(context.Background())
		_ = a.total.Close(context.Background())
		return nil, err
	}
	// Build the dummy hash now, so that even the first failed login with
	// no password set costs one verification, not a hash and a verification.
	a.svc.dummy()
	a.handler = a.routes()
	return a, nil
}

// Service is the service layer behind the handler (for start-up calls such
// as EnsureAdminPassword, and for the pages).
func (a *Admin) Service() *Service { return a.svc }

// Handler serves everything under /admin; mount it with the /admin prefix
// stripped (e.g. chi's Mount("/admin", a.Handler())).
func (a *Admin) Handler() http.Handler { return a.handler }

// Close stops the login limiters' (and the nonce store's) sweeper
// goroutines. The handler answers 503 to logins and token creations
// afterwards.
func (a *Admin) Close() error {
	ctx := context.Background()
	return errors.Join(a.perIP.Close(ctx), a.total.Close(ctx), a.nonces.Close(ctx))
}

// routes builds the router. Deny by default: only the login page and
// POST, POST /api/login and the static assets are outside the session
// groups; everything else, present and future, goes in a group that needs
// a session (the API answers 401, the pages redirect to the login page),
// and everything but the password and logout routes in a nested group that
// also refuses while the password must be changed.
func (a *Admin) routes() chi.Router {
	r := chi.NewRouter()
	r.Use(a.securityHeaders, a.cop.Handler)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		if !isAPI(r) {
			a.pageError(w, r, http.StatusNotFound, "Page not found", "There is no admin page at this address.")
			return
		}
		renderError(w, http.StatusNotFound, typeNotFound, "not_found", "", "no such admin route")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		if !isAPI(r) {
			a.pageError(w, r, http.StatusMethodNotAllowed, "Method not allowed", "This address does not accept this kind of request.")
			return
		}
		renderError(w, http.StatusMethodNotAllowed, typeInvalidRequest, "method_not_allowed", "", "method not allowed on this route")
	})

	r.Route("/api", func(r chi.Router) {
		r.Post("/login", a.handleLogin)
		r.Group(func(r chi.Router) {
			r.Use(a.requireSession, a.requireCSRF)
			r.Post("/logout", a.handleLogout)
			r.Get("/session", a.handleSession)
			r.Post("/password", a.handlePassword)
			r.Group(func(r chi.Router) {
				r.Use(a.requirePasswordChanged)
				r.Get("/credentials", a.handleListCredentials)
				r.Post("/credentials", a.handleAddCredential)
				r.Post("/credentials/check", a.handleCheckCredential)
				r.Patch("/credentials/{id}", a.handleUpdateCredential)
				r.Delete("/credentials/{id}", a.handleRemoveCredential)
				r.Post("/credentials/{id}/reset", a.handleResetCredential)
				r.Get("/pool", a.handlePool)
				r.Get("/usage", a.handleUsage)
				r.Get("/tokens", a.handleListTokens)
				r.Post("/tokens", a.handleCreateToken)
				r.Patch("/tokens/{id}", a.handleUpdateToken)
				r.Delete("/tokens/{id}", a.handleRevokeToken)
			})
		})
	})

	// The pages: plain HTML forms (POST, then a redirect), a little script
	// for progressive enhancement only.
	r.Get("/static/*", a.serveStatic)
	r.Get("/login", a.pageLogin)
	r.Post("/login", a.pageLoginPost)
	r.Group(func(r chi.Router) {
		r.Use(a.pageSession, a.pageCSRF)
		r.Post("/logout", a.pageLogout)
		r.Get("/password", a.pagePassword)
		r.Post("/password", a.pagePasswordPost)
		r.Group(func(r chi.Router) {
			r.Use(a.pagePasswordChanged)
			r.Get("/", a.pageDashboard)
			r.Get("/fragments/dashboard", a.fragmentDashboard)
			r.Get("/credentials", a.pageCredentials)
			r.Post("/credentials", a.pageAddCredential)
			r.Post("/credentials/bulk", a.pageBulkAdd)
			r.Post("/fragments/check", a.fragmentCheck)
			r.Post("/credentials/{id}/enable", a.pageEnableCredential)
			r.Post("/credentials/{id}/disable", a.pageDisableCredential)
			r.Post("/credentials/{id}/reset", a.pageResetCredential)
			r.Post("/credentials/{id}/delete", a.pageDeleteCredential)
			r.Get("/tokens", a.pageTokens)
			r.Post("/tokens", a.pageCreateToken)
			r.Post("/tokens/{id}/limit", a.pageTokenLimit)
			r.Post("/tokens/{id}/revoke", a.pageRevokeToken)
		})
	})
	return r
}

package adminui

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sethvargo/go-limiter"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/store"
	"github.com/atlassian-proxy/atlassian-proxy/store/sqlite"
)

// testPassword is the admin password most tests log in with.
const testPassword = "correct horse battery staple"

// An Atlassian-looking token, long enough to be masked with 4+4 visible.
const atlassianToken = "ATATT3xFfGF0aVeryLongSecretTokenValue0123456789abcdefXYZ=x9Q2"

// env is one admin handler on a real SQLite store, a real Cipher and a
// real pool, served by a loopback HTTP server.
type env struct {
	t       *testing.T
	st      *sqlite.Store
	cipher  *auth.Cipher
	admin   *Admin
	pool    *pool.Pool
	srv     *httptest.Server
	changed atomic.Int64
}

type envOptions struct {
	cfg       Config
	noPool    bool
	password  string // "" → testPassword; "-" → none set
	tls       bool
	wrapStore func(store.Store) store.Store
	activity  Activity
	checker   Checker
	catalog   *gateway.Catalog
	reg       prometheus.Registerer
	limiters  func(name string, tokens int, window time.Duration) (limiter.Store, error)
	nonces    func(window time.Duration) (limiter.Store, error)
	logger    *slog.Logger
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "data", "proxy.db"))
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	key := make([]byte, auth.KeySize)
	_, _ = rand.Read(key)
	c, err := auth.NewCipher(key)
	if err != nil {
		t.Fatalf("NewCipher: %v", err)
	}
	e := &env{t: t, st: st, cipher: c}
	var s store.Store = st
	if o.wrapStore != nil {
		s = o.wrapStore(st)
	}
	if o.cfg.LoginAttemptsPerIP == 0 {
		o.cfg.LoginAttemptsPerIP = 1000 // tests log in often from 127.0.0.1
	}
	if o.cfg.LoginAttemptsTotal == 0 {
		o.cfg.LoginAttemptsTotal = 1000
	}
	deps := Deps{Store: s, Cipher: c, Changed: func() { e.changed.Add(1); e.resync() }, Activity: o.activity, Checker: o.checker,
		Catalog: o.catalog, Registerer: o.reg, Limiters: o.limiters, Nonces: o.nonces, Logger: o.logger}
	if !o.noPool {
		e.pool = startPool(t, st)
		deps.Pool = e.pool
	}
	e.admin, err = New(o.cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = e.admin.Close() })
	switch o.password {
	case "":
		if _, err := e.admin.Service().EnsureAdminPassword(ctx, testPassword); err != nil {
			t.Fatalf("EnsureAdminPassword: %v", err)
		}
	case "-":
	default:
		if _, err := e.admin.Service().EnsureAdminPassword(ctx, o.password); err != nil {
			t.Fatalf("EnsureAdminPassword: %v", err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/admin/", http.StripPrefix("/admin", e.admin.Handler()))
	if o.tls {
		e.srv = httptest.NewTLSServer(mux)
	} else {
		e.srv = httptest.NewServer(mux)
	}
	t.Cleanup(e.srv.Close)
	return e
}

// startPool runs a real pool, persisting states to st, for the test's duration.
func startPool(t *testing.T, st store.Store) *pool.Pool {
	t.Helper()
	p, err := pool.New(pool.Config{}, pool.Deps{States: st})
	if err != nil {
		t.Fatalf("pool.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := p.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("pool.Run: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return p
}

// resync does what the lead's Changed hook does: push the stored
// credentials (tokens opened) into the pool.
func (e *env) resync() {
	if e.pool == nil {
		return
	}
	ctx := context.Background()
	cs, err := e.st.ListCredentials(ctx)
	if err != nil {
		e.t.Errorf("resync: %v", err)
		return
	}
	specs := make([]pool.Spec, 0, len(cs))
	for _, c := range cs {
		tok, err := e.cipher.Open(c.ID, c.Token)
		if err != nil {
			e.t.Errorf("resync: open %s: %v", c.ID, err)
			return
		}
		specs = append(specs, pool.Spec{
			Credential:     pool.Credential{ID: c.ID, Email: c.Email, Token: string(tok), CloudID: c.CloudID, Label: c.Label},
			Enabled:        c.Enabled,
			MaxConcurrency: c.MaxConcurrency,
		})
	}
	states, err := e.st.ListCredentialStates(ctx)
	if err != nil {
		e.t.Errorf("resync: %v", err)
		return
	}
	e.pool.Sync(specs, states)
}

// router returns the chi router behind the handler.
func (e *env) router() chi.Routes {
	e.t.Helper()
	r, ok := e.admin.Handler().(chi.Routes)
	if !ok {
		e.t.Fatalf("Handler() is %T, not a chi.Routes", e.admin.Handler())
	}
	return r
}

// client is a browser-like API client: it keeps the cookies it is given
// (by hand, so that a Secure cookie is also sent to the plain-HTTP test
// server standing in for a TLS-terminating proxy) and the CSRF token.
type client struct {
	e       *env
	hc      *http.Client
	csrf    string
	cookies map[string]string
	// seen records every answer, for the no-secret checks.
	seen *[]response
}

// client returns a client without a session. It does not follow
// redirects: the tests look at them.
func (e *env) client() *client {
	hc := *e.srv.Client()
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &client{e: e, hc: &hc, cookies: map[string]string{}}
}

// loggedIn returns a client logged in with password.
func (e *env) loggedIn(password string) *client {
	e.t.Helper()
	c := e.client()
	res := c.do("POST", "/api/login", map[string]any{"password": password}, nil)
	if res.status != http.StatusOK {
		e.t.Fatalf("login: status %d, body %s", res.status, res.body)
	}
	var lr loginResponse
	res.decode(e.t, &lr)
	c.csrf = lr.CSRFToken
	return c
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// apiError decodes an error body, failing the test if it is not one.
func (r response) apiError(t *testing.T) errorDetail {
	t.Helper()
	var b struct {
		Error *errorDetail `json:"error"`
	}
	r.decode(t, &b)
	if b.Error == nil {
		t.Fatalf("no error object in %s", r.body)
	}
	return *b.Error
}

func (d errorDetail) param() string {
	if d.Param == nil {
		return ""
	}
	return *d.Param
}

func (d errorDetail) code() string {
	if d.Code == nil {
		return ""
	}
	return *d.Code
}

// do sends a request to /admin+path. body is JSON-encoded unless it is a
// string or []byte (sent as is). The client's CSRF token is sent on
// mutating methods unless hdr sets X-CSRF-Token (to "" to omit it).
func (c *client) do(method, path string, body any, hdr map[string]string) response {
	c.e.t.Helper()
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd, ctype = strings.NewReader(b), "application/json"
	case []byte:
		rd, ctype = bytes.NewReader(b), "application/json"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			c.e.t.Fatal(err)
		}
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequestWithContext(c.e.t.Context(), method, c.e.srv.URL+"/admin"+path, rd)
	if err != nil {
		c.e.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if method != "GET" && method != "HEAD" && c.csrf != "" {
		req.Header.Set(csrfHeader, c.csrf)
	}
	for name, value := range c.cookies {
		req.AddCookie(&http.Cookie{Name: name, Value: value})
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := c.hc.Do(req)
	if err != nil {
		c.e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	for _, ck := range res.Cookies() {
		if ck.MaxAge < 0 || ck.Value == "" {
			delete(c.cookies, ck.Name)
		} else {
			c.cookies[ck.Name] = ck.Value
		}
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		c.e.t.Fatal(err)
	}
	out := response{status: res.StatusCode, header: res.Header, body: b}
	if c.seen != nil {
		*c.seen = append(*c.seen, out)
	}
	return out
}

// wantError checks a JSON error answer.
func wantError(t *testing.T, res response, status int, code, param string) errorDetail {
	t.Helper()
	if res.status != status {
		t.Fatalf("status = %d, want %d (body %s)", res.status, status, res.body)
	}
	if ct := res.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	d := res.apiError(t)
	if code != "" && d.code() != code {
		t.Errorf("code = %q, want %q (body %s)", d.code(), code, res.body)
	}
	if d.param() != param {
		t.Errorf("param = %q, want %q (body %s)", d.param(), param, res.body)
	}
	if d.Message == "" || d.Type == "" {
		t.Errorf("error without message or type: %s", res.body)
	}
	return d
}

// addCredential adds a credential through the API and returns its view.
func (c *client) addCredential(email, token string) CredentialView {
	c.e.t.Helper()
	res := c.do("POST", "/api/credentials", map[string]any{"email": email, "token": token}, nil)
	if res.status != http.StatusCreated {
		c.e.t.Fatalf("add credential: status %d, body %s", res.status, res.body)
	}
	var v CredentialView
	res.decode(c.e.t, &v)
	return v
}

// unavailableStore is the real store with chosen methods failing as a
// backend outage does.
type unavailableStore struct {
	store.Store
	down       atomic.Bool
	usageDown  atomic.Bool // ListUsage only
	createDown atomic.Bool // CreateCredential only
	tokenDown  atomic.Bool // CreateToken only
}

func (u *unavailableStore) CreateToken(ctx context.Context, t store.APIToken) error {
	if u.down.Load() || u.tokenDown.Load() {
		return errors.Join(errors.New("sqlite: create token: connection refused"), store.ErrUnavailable)
	}
	return u.Store.CreateToken(ctx, t)
}

func (u *unavailableStore) CreateCredential(ctx context.Context, c store.Credential) error {
	if u.down.Load() || u.createDown.Load() {
		return errors.Join(errors.New("sqlite: create credential: connection refused"), store.ErrUnavailable)
	}
	return u.Store.CreateCredential(ctx, c)
}

func (u *unavailableStore) ListUsage(ctx context.Context, from, to string) ([]store.Usage, error) {
	if u.down.Load() || u.usageDown.Load() {
		return nil, errors.Join(errors.New("sqlite: list usage: connection refused"), store.ErrUnavailable)
	}
	return u.Store.ListUsage(ctx, from, to)
}

func (u *unavailableStore) ListCredentials(ctx context.Context) ([]store.Credential, error) {
	if u.down.Load() {
		return nil, errors.Join(errors.New("sqlite: list credentials: connection refused"), store.ErrUnavailable)
	}
	return u.Store.ListCredentials(ctx)
}

func (u *unavailableStore) AdminPassword(ctx context.Context) (store.AdminPassword, error) {
	if u.down.Load() {
		return store.AdminPassword{}, errors.Join(errors.New("sqlite: admin password: connection refused"), store.ErrUnavailable)
	}
	return u.Store.AdminPassword(ctx)
}

// tokenCount is how many API tokens the store holds.
func (e *env) tokenCount(t *testing.T) int {
	t.Helper()
	ts, err := e.st.ListTokens(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return len(ts)
}

package adminui

import (
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/store/sqlite"
)

type route struct{ method, path string }

// concrete fills the route's URL parameters.
func (r route) concrete() string {
	return regexp.MustCompile(`\{[^}]+\}`).ReplaceAllString(r.path, "cred_0000000000000000")
}

// body is a plausible JSON body for a mutating API route, nil otherwise.
func (r route) body() any {
	switch r.method {
	case "POST", "PATCH", "PUT":
		return `{}`
	}
	return nil
}

// api reports whether the route is part of the JSON API.
func (r route) api() bool { return strings.HasPrefix(r.path, "/api/") }

// public reports whether the route is meant to answer without a session:
// logging in, and the static assets the login page needs.
func (r route) public() bool {
	return r.path == "/api/login" || r.path == "/login" || strings.HasPrefix(r.path, "/static/")
}

// fragment reports whether the route serves an HTML fragment to a script.
func (r route) fragment() bool { return strings.HasPrefix(r.path, "/fragments/") }

// send requests the route as its client would: JSON for the API, a form
// (carrying the client's CSRF token, if any) for a page's POST.
func (r route) send(c *client, path string, hdr map[string]string) response {
	if !r.api() && r.method == "POST" {
		if len(hdr) > 0 {
			h := map[string]string{"Content-Type": formType, csrfHeader: ""}
			for k, v := range hdr {
				h[k] = v
			}
			return c.do("POST", path, "", h)
		}
		return c.post(path, nil)
	}
	return c.do(r.method, path, r.body(), hdr)
}

// walkRoutes lists every route of the handler's router.
func walkRoutes(t *testing.T, e *env) []route {
	t.Helper()
	var out []route
	err := chi.Walk(e.router(), func(method, path string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		out = append(out, route{method, path})
		return nil
	})
	if err != nil {
		t.Fatalf("chi.Walk: %v", err)
	}
	if len(out) < 13 {
		t.Fatalf("walked %d routes, want at least the 13 of the API: %v", len(out), out)
	}
	return out
}

// TestEveryRouteDeniesWithoutSession walks the route table: every route
// but the login routes and the static assets refuses a request without a
// session, with a forged session, and with a session cookie from another
// deployment: the API with 401, a fragment with 401, a page with a
// redirect to the login page. Nothing is changed.
func TestEveryRouteDeniesWithoutSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	routes := walkRoutes(t, e)
	var public []string
	pages := 0
	for _, rt := range routes {
		if rt.public() {
			public = append(public, rt.method+" "+rt.path)
			continue
		}
		if !rt.api() {
			pages++
		}
		t.Run(rt.method+" "+rt.path, func(t *testing.T) {
			variants := map[string]map[string]string{
				"no cookie":     nil,
				"forged cookie": {"Cookie": cookieName + "=" + strings.Repeat("A", 43), csrfHeader: "whatever"},
				"empty cookie":  {"Cookie": cookieName + "="},
				"secure name":   {"Cookie": secureCookieName + "=" + strings.Repeat("B", 43)},
			}
			for name, hdr := range variants {
				res := rt.send(e.client(), rt.concrete(), hdr)
				switch {
				case rt.api():
					if res.status != http.StatusUnauthorized {
						t.Errorf("%s: status %d, want 401 (body %s)", name, res.status, res.body)
						continue
					}
					if d := res.apiError(t); d.code() != "login_required" {
						t.Errorf("%s: code %q", name, d.code())
					}
				case rt.fragment():
					if res.status != http.StatusUnauthorized {
						t.Errorf("%s: status %d, want 401 (body %s)", name, res.status, res.body)
					}
				default:
					if res.status != http.StatusSeeOther || res.header.Get("Location") != "/admin/login" {
						t.Errorf("%s: status %d Location %q, want 303 to /admin/login", name, res.status, res.header.Get("Location"))
					}
				}
				if strings.Contains(string(res.body), "csrf_token") {
					t.Errorf("%s: an answer without a session carries a CSRF token", name)
				}
			}
		})
	}
	slices.Sort(public)
	want := []string{"GET /login", "GET /static/*", "POST /api/login", "POST /login"}
	if !slices.Equal(public, want) {
		t.Errorf("public routes = %v, want exactly %v", public, want)
	}
	if pages < 10 {
		t.Errorf("walked %d page routes, want the pages too", pages)
	}
	if cs, err := e.st.ListCredentials(t.Context()); err != nil || len(cs) != 0 {
		t.Errorf("credentials after the walk: %v, %v", cs, err)
	}
}

// TestEveryMutatingRouteNeedsCSRF walks the route table with a live
// session: every state-changing route refuses a missing or wrong token
// (the API's header, the pages' form field).
func TestEveryMutatingRouteNeedsCSRF(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.loggedIn(testPassword)
	v := c.addCredential("csrf@example.com", atlassianToken)
	otherCSRF := e.loggedIn(testPassword).csrf
	for _, rt := range walkRoutes(t, e) {
		if rt.method == "GET" || rt.public() {
			continue
		}
		t.Run(rt.method+" "+rt.path, func(t *testing.T) {
			path := strings.ReplaceAll(rt.concrete(), "cred_0000000000000000", v.ID)
			for name, tok := range map[string]string{"missing": "", "wrong": "x" + c.csrf[1:], "other session": otherCSRF} {
				t.Run(name, func(t *testing.T) {
					if rt.api() {
						saved := c.csrf
						c.csrf = tok
						res := c.do(rt.method, path, rt.body(), nil)
						c.csrf = saved
						wantError(t, res, http.StatusForbidden, "csrf_token_invalid", "")
						return
					}
					res := c.post(path, url.Values{csrfField: {tok}, "confirmed": {"1"}, "email": {"new@example.com"},
						"token": {atlassianToken}, "name": {"n"}, "rate_limit": {"5"}, "lines": {"b@example.com:" + atlassianToken}})
					wantPage(t, res, http.StatusForbidden, "Form expired")
				})
			}
		})
	}
	if res := c.do("GET", "/api/credentials", nil, nil); res.status != 200 || !strings.Contains(string(res.body), v.ID) ||
		strings.Contains(string(res.body), "new@example.com") || strings.Contains(string(res.body), "b@example.com") {
		t.Errorf("a refused request changed something: %d %s", res.status, res.body)
	}
	if res := c.do("GET", "/api/session", nil, nil); res.status != 200 {
		t.Errorf("a refused logout ended the session: %d", res.status)
	}
}

func TestCrossOriginBlocked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{TrustedOrigins: []string{"https://admin.example.com"}}})
	c := e.loggedIn(testPassword)
	cases := []struct {
		name   string
		method string
		path   string
		body   any
		hdr    map[string]string
		status int
	}{
		{"cross-site add", "POST", "/api/credentials", map[string]any{"email": "x@example.com", "token": atlassianToken},
			map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"same-site subdomain delete", "DELETE", "/api/tokens/tok_1", nil, map[string]string{"Sec-Fetch-Site": "same-site"}, 403},
		{"foreign Origin login", "POST", "/api/login", map[string]any{"password": testPassword},
			map[string]string{"Origin": "https://evil.example"}, 403},
		{"trusted origin", "POST", "/api/tokens", map[string]any{"name": "t"},
			map[string]string{"Origin": "https://admin.example.com", "Sec-Fetch-Site": "cross-site"}, 201},
		{"same origin", "POST", "/api/tokens", map[string]any{"name": "t"}, map[string]string{"Sec-Fetch-Site": "same-origin"}, 201},
		{"cross-site read is allowed (no state change)", "GET", "/api/session", nil, map[string]string{"Sec-Fetch-Site": "cross-site"}, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := c.do(tc.method, tc.path, tc.body, tc.hdr)
			if tc.status == 403 {
				wantError(t, res, 403, "cross_origin_request", "")
				assertSecurityHeaders(t, res, false)
				return
			}
			if res.status != tc.status {
				t.Errorf("status %d, want %d (%s)", res.status, tc.status, res.body)
			}
		})
	}
}

func assertSecurityHeaders(t *testing.T, res response, hsts bool) {
	t.Helper()
	want := map[string]string{
		"X-Content-Type-Options": "nosniff",
		"X-Frame-Options":        "DENY",
		"Referrer-Policy":        "no-referrer",
		"Cache-Control":          "no-store",
	}
	for k, v := range want {
		if got := res.header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	csp := res.header.Get("Content-Security-Policy")
	for _, d := range []string{"default-src 'none'", "frame-ancestors 'none'", "script-src 'self'"} {
		if !strings.Contains(csp, d) {
			t.Errorf("CSP %q lacks %q", csp, d)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP %q allows inline code", csp)
	}
	if got := res.header.Get("Strict-Transport-Security") != ""; got != hsts {
		t.Errorf("HSTS present = %v, want %v", got, hsts)
	}
}

func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	t.Parallel()
	for _, secure := range []struct {
		name string
		opt  envOptions
		hsts bool
	}{
		{"plain HTTP", envOptions{}, false},
		{"TLS", envOptions{tls: true}, true},
		{"behind a TLS proxy", envOptions{cfg: Config{SecureCookies: true}}, true},
	} {
		t.Run(secure.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, secure.opt)
			c := e.loggedIn(testPassword)
			anon := e.client()
			answers := map[string]response{
				"200":         c.do("GET", "/api/credentials", nil, nil),
				"201":         c.do("POST", "/api/tokens", map[string]any{"name": "h"}, nil),
				"404 unknown": c.do("DELETE", "/api/credentials/none", nil, nil),
				"400":         c.do("POST", "/api/credentials", map[string]any{}, nil),
				"401":         anon.do("GET", "/api/credentials", nil, nil),
				"403 csrf":    c.do("POST", "/api/tokens", map[string]any{"name": "h"}, map[string]string{csrfHeader: ""}),
				"404":         anon.do("GET", "/nothing", nil, nil),
				"405":         anon.do("GET", "/api/login", nil, nil),
				"login fails": anon.do("POST", "/api/login", map[string]any{"password": "no"}, nil),
			}
			for name, res := range answers {
				t.Run(name, func(t *testing.T) { assertSecurityHeaders(t, res, secure.hsts) })
			}
		})
	}
}

func TestSecureCookie(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opt  envOptions
	}{
		{"TLS", envOptions{tls: true}},
		{"SecureCookies", envOptions{cfg: Config{SecureCookies: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tc.opt)
			c := e.client()
			res := c.do("POST", "/api/login", map[string]any{"password": testPassword}, nil)
			if res.status != 200 {
				t.Fatalf("login: %d %s", res.status, res.body)
			}
			ck := findCookie(t, res, secureCookieName)
			if !ck.Secure || !ck.HttpOnly || ck.Path != "/" || ck.Domain != "" || ck.SameSite != http.SameSiteStrictMode {
				t.Errorf("cookie = %+v, want __Host- rules: Secure, Path=/, no Domain, HttpOnly, SameSite=Strict", ck)
			}
			// The jar does not send Secure cookies over plain HTTP; send it by hand.
			var lr loginResponse
			res.decode(t, &lr)
			hdr := map[string]string{"Cookie": secureCookieName + "=" + ck.Value}
			if res := e.client().do("GET", "/api/session", nil, hdr); res.status != 200 {
				t.Errorf("session with the __Host- cookie: %d %s", res.status, res.body)
			}
			hdr = map[string]string{"Cookie": cookieName + "=" + ck.Value}
			if res := e.client().do("GET", "/api/session", nil, hdr); res.status != 401 {
				t.Errorf("the unprefixed cookie name was accepted on a secure deployment: %d", res.status)
			}
		})
	}
}

// bubbleEnv is an admin handler on a real SQLite store built inside a
// synctest bubble, driven without a network so that fake time can advance.
type bubbleEnv struct {
	admin *Admin
	st    *sqlite.Store
}

// openStoreCipher opens a fresh SQLite store (closed at cleanup) and a
// cipher with a random key.
func openStoreCipher(t *testing.T) (*sqlite.Store, *auth.Cipher) {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "proxy.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	key := make([]byte, auth.KeySize)
	_, _ = rand.Read(key)
	c, err := auth.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	return st, c
}

func newBubbleEnv(t *testing.T, cfg Config) *bubbleEnv {
	t.Helper()
	st, c := openStoreCipher(t)
	a, err := New(cfg, Deps{Store: st, Cipher: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	if _, err := a.Service().EnsureAdminPassword(t.Context(), testPassword); err != nil {
		t.Fatal(err)
	}
	return &bubbleEnv{admin: a, st: st}
}

// serve runs one request through h in memory.
func serve(h http.Handler, method, path, remoteAddr, body string, hdr map[string]string) *httptest.ResponseRecorder {
	var req *http.Request
	if body != "" {
		req = httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
	} else {
		req = httptest.NewRequest(method, path, nil)
	}
	if remoteAddr != "" {
		req.RemoteAddr = remoteAddr
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// login returns the session cookie header value.
func (b *bubbleEnv) login(t *testing.T) string {
	t.Helper()
	rec := serve(b.admin.Handler(), "POST", "/api/login", "", `{"password":"`+testPassword+`"}`, nil)
	if rec.Code != 200 {
		t.Fatalf("login: %d %s", rec.Code, rec.Body)
	}
	for _, ck := range rec.Result().Cookies() {
		if ck.Name == cookieName {
			return ck.Name + "=" + ck.Value
		}
	}
	t.Fatal("no session cookie")
	return ""
}

func (b *bubbleEnv) session(cookie string) int {
	return serve(b.admin.Handler(), "GET", "/api/session", "", "", map[string]string{"Cookie": cookie}).Code
}

func TestSessionTimeouts(t *testing.T) {
	t.Parallel()
	t.Run("idle", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBubbleEnv(t, Config{})
			ck := b.login(t)
			steps := []struct {
				wait time.Duration
				want int
			}{
				{29 * time.Minute, 200},
				{29*time.Minute + 59*time.Second, 200}, // each use restarts the idle clock
				{10 * time.Second, 200},
				{30 * time.Minute, 401}, // 30 min unused
				{0, 401},
			}
			for i, s := range steps {
				time.Sleep(s.wait)
				if got := b.session(ck); got != s.want {
					t.Fatalf("step %d (after %v): status %d, want %d", i, s.wait, got, s.want)
				}
			}
			if _, err := b.st.GetSession(t.Context(), SessionKey(strings.TrimPrefix(ck, cookieName+"="))); err == nil {
				t.Errorf("the expired session is still stored")
			}
		})
	})
	t.Run("absolute", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBubbleEnv(t, Config{})
			start := time.Now()
			ck := b.login(t)
			for time.Since(start) < 12*time.Hour-20*time.Minute {
				time.Sleep(20 * time.Minute)
				if got := b.session(ck); got != 200 {
					t.Fatalf("after %v of activity: status %d, want 200", time.Since(start), got)
				}
			}
			time.Sleep(12*time.Hour - time.Since(start))
			if got := b.session(ck); got != 401 {
				t.Fatalf("after 12 h: status %d, want 401", got)
			}
		})
	})
	t.Run("configured", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBubbleEnv(t, Config{SessionIdle: 5 * time.Minute, SessionAbsolute: time.Hour})
			ck := b.login(t)
			time.Sleep(5*time.Minute - time.Second)
			if got := b.session(ck); got != 200 {
				t.Fatalf("before the idle timeout: %d", got)
			}
			time.Sleep(5 * time.Minute)
			if got := b.session(ck); got != 401 {
				t.Fatalf("after the idle timeout: %d", got)
			}
		})
	})
}

func TestThrottleWindowReopens(t *testing.T) {
	t.Parallel()
	// go-limiter reads the wall clock directly (not time.Now), so this
	// runs in real time with a short window. Malformed attempts are cheap
	// and count like any other.
	const window = 3 * time.Second
	e := newEnv(t, envOptions{cfg: Config{LoginAttemptsPerIP: 2, LoginWindow: window}})
	h := e.admin.Handler()
	for range 2 {
		if rec := serve(h, "POST", "/api/login", "203.0.113.9:1", "{", nil); rec.Code != 400 {
			t.Fatalf("status %d, want 400", rec.Code)
		}
	}
	rec := serve(h, "POST", "/api/login", "203.0.113.9:2", "{", nil)
	if rec.Code != 429 {
		t.Fatalf("third attempt: status %d, want 429", rec.Code)
	}
	secs, err := strconv.Atoi(rec.Header().Get("Retry-After"))
	if err != nil || secs < 1 || secs > int(window/time.Second) {
		t.Fatalf("Retry-After = %q, want 1 to 3 s", rec.Header().Get("Retry-After"))
	}
	if rec := serve(h, "POST", "/api/login", "203.0.113.10:1", "{", nil); rec.Code != 400 {
		t.Errorf("another client was throttled: %d", rec.Code)
	}
	time.Sleep(time.Duration(secs) * time.Second)
	if rec := serve(h, "POST", "/api/login", "203.0.113.9:3", `{"password":"`+testPassword+`"}`, nil); rec.Code != 200 {
		t.Errorf("after Retry-After: status %d, want 200", rec.Code)
	}
}

func TestClientKey(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"192.0.2.1:5555", "192.0.2.1"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:443", "2001:db8:1:2::/64"},
		{"[::ffff:192.0.2.1]:80", "192.0.2.1"},
		{"[fe80::1%eth0]:80", "fe80::/64"},
		{"192.0.2.1", "192.0.2.1"},
		{"not an address", "not an address"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := clientKey(tc.in); got != tc.want {
				t.Errorf("clientKey(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// sessionCookieValue is the session id the client holds.
func sessionCookieValue(t *testing.T, c *client) string {
	t.Helper()
	v, ok := c.cookies[cookieName]
	if !ok {
		t.Fatal("the client holds no session cookie")
	}
	return v
}

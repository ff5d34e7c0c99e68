package adminui

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/store"
	"github.com/atlassian-proxy/atlassian-proxy/usage"
)

// pageTour visits every page and page state (errors, check verdicts, the
// new token, confirmations, fragments) and returns the answers, and the
// one answer that shows the new API token.
func pageTour(t *testing.T, e *env, c *client) (all []response, created response) {
	t.Helper()
	var seen []response
	c.seen = &seen
	anon := e.client()
	anon.seen = &seen
	anon.do("GET", "/login", nil, nil)
	anon.post("/login", url.Values{"password": {"wrong password here"}})
	anon.do("GET", "/nothing", nil, nil)
	c.do("GET", "/", nil, nil)
	c.do("GET", "/fragments/dashboard", nil, nil)
	c.do("GET", "/credentials", nil, nil)
	c.post("/credentials", url.Values{"action": {"add"}, "email": {"tour@example.com"}, "token": {atlassianToken}, "label": {"tour"}})
	c.post("/credentials", url.Values{"action": {"add"}, "email": {"tour@example.com"}, "token": {atlassianToken}}) // 409
	c.post("/credentials", url.Values{"action": {"add"}, "email": {"bad"}, "token": {atlassianToken}})              // 400
	c.post("/credentials", url.Values{"action": {"check"}, "email": {"ok@example.com"}, "token": {atlassianToken}})
	c.post("/fragments/check", url.Values{"email": {"ok@example.com"}, "token": {atlassianToken + "x"}})
	c.post("/credentials/bulk", url.Values{"lines": {"b@example.com:" + atlassianToken + "\nbad:" + atlassianToken}})
	cs, _ := e.st.ListCredentials(t.Context())
	c.post("/credentials/"+cs[0].ID+"/delete", nil) // the confirmation page
	c.do("GET", "/credentials", nil, nil)
	created = c.postTokenForm(url.Values{"name": {"tour"}})
	c.postTokenForm(url.Values{"name": {""}, "rate_limit": {"x"}})
	ts, _ := e.st.ListTokens(t.Context())
	c.post("/tokens/"+ts[0].ID+"/limit", url.Values{"rate_limit": {"x"}})
	c.post("/tokens/"+ts[0].ID+"/revoke", nil)
	c.do("GET", "/tokens", nil, nil)
	c.do("GET", "/password", nil, nil)
	c.post("/password", url.Values{"current": {testPassword + "x"}, "new": {"short"}, "confirm": {"other"}})
	c.post("/credentials", url.Values{csrfField: {"forged"}, "email": {"x@example.com"}, "token": {atlassianToken}})
	c.seen = nil
	return seen, created
}

func tourEnv(t *testing.T) (*env, *client) {
	t.Helper()
	client, _ := fakeChecker(t, fake.Credential{Email: "ok@example.com", Token: atlassianToken})
	rec := usage.New(nil, usage.Config{})
	rec.Record(usage.Event{Model: "m", Failed: true, Error: "server_error: upstream 502"})
	e := newEnv(t, envOptions{checker: client, activity: rec})
	return e, e.pageLoggedIn(testPassword)
}

var (
	inlineScript = regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>`)
	scriptSrc    = regexp.MustCompile(`(?i)<script src="/admin/static/[a-z]+\.js\?v=[0-9a-f]+" defer>`)
	styleAttr    = regexp.MustCompile(`(?i)<[^>]+\sstyle=`)
	handlerAttr  = regexp.MustCompile(`(?i)<[^>]+\son[a-z]+=`)
	styleElem    = regexp.MustCompile(`(?i)<style`)
	postForm     = regexp.MustCompile(`(?s)<form method="post" action="([^"]+)"[^>]*>(.*?)</form>`)
)

// TestPagesFollowTheCSP: no page has an inline script, style or event
// handler (the CSP would block them; the pages must work without), every
// page carries the security headers, and every POST form but the login
// carries the session's CSRF token.
func TestPagesFollowTheCSP(t *testing.T) {
	t.Parallel()
	e, c := tourEnv(t)
	answers, _ := pageTour(t, e, c)
	if len(answers) < 20 {
		t.Fatalf("the tour saw %d answers", len(answers))
	}
	for i, res := range answers {
		body := string(res.body)
		for _, tag := range inlineScript.FindAllString(body, -1) {
			if !scriptSrc.MatchString(tag) {
				t.Errorf("answer %d: a script that is not the one static file: %s", i, tag)
			}
		}
		for name, re := range map[string]*regexp.Regexp{"style attribute": styleAttr, "event handler": handlerAttr, "style element": styleElem} {
			if m := re.FindString(body); m != "" {
				t.Errorf("answer %d has an inline %s: %s", i, name, m)
			}
		}
		if strings.Contains(body, "javascript:") {
			t.Errorf("answer %d has a javascript: URL", i)
		}
		assertSecurityHeaders(t, res, false)
		for _, m := range postForm.FindAllStringSubmatch(body, -1) {
			if m[1] == "/admin/login" {
				continue
			}
			if !strings.Contains(m[2], `name="csrf_token" value="`+c.csrf+`"`) {
				t.Errorf("answer %d: the form to %s lacks the session's CSRF token", i, m[1])
			}
		}
	}
}

// TestNoSecretInAnyPage: no page shows the Atlassian token (beyond its
// masked form), the admin password, the session id or its store key; the
// new API token appears in exactly one answer.
func TestNoSecretInAnyPage(t *testing.T) {
	t.Parallel()
	e, c := tourEnv(t)
	sessionID := sessionCookieValue(t, c)
	answers, created := pageTour(t, e, c)
	m := newTokenInput.FindSubmatch(created.body)
	if m == nil {
		t.Fatalf("the token was not shown at creation: %s", created.body)
	}
	clientToken := string(m[1])
	secrets := map[string]string{
		"atlassian token":        atlassianToken,
		"atlassian token middle": atlassianToken[4 : len(atlassianToken)-4],
		"admin password":         testPassword,
		"session id":             sessionID,
		"session key":            SessionKey(sessionID),
		"client token secret":    clientToken[len(auth.TokenPrefix)+8:],
	}
	shown := 0
	for i, res := range answers {
		for name, secret := range secrets {
			if strings.HasPrefix(name, "client token") && strings.Contains(string(res.body), clientToken) {
				shown++
				continue
			}
			if strings.Contains(string(res.body), secret) {
				t.Errorf("answer %d (%d) shows the %s", i, res.status, name)
			}
			for k, vs := range res.header {
				for _, v := range vs {
					if strings.Contains(v, secret) && !(k == "Set-Cookie" && name == "session id") {
						t.Errorf("answer %d header %s shows the %s", i, k, name)
					}
				}
			}
		}
	}
	if shown != 1 {
		t.Errorf("the new API token appeared in %d answers, want exactly 1", shown)
	}
}

func TestPageErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.pageLoggedIn(testPassword)
	wantPage(t, c.do("GET", "/nothing/here", nil, nil), http.StatusNotFound, "Page not found")
	wantPage(t, e.client().do("GET", "/nothing", nil, nil), http.StatusNotFound, "Go to the login page")
	wantPage(t, c.do("PUT", "/credentials", "", nil), http.StatusMethodNotAllowed, "Method not allowed")
	wantPage(t, c.do("POST", "/credentials", `{"email":"x"}`, nil), http.StatusUnsupportedMediaType, "URL-encoded")
	wantPage(t, c.post("/credentials", url.Values{"label": {strings.Repeat("x", 1<<20)}}), http.StatusRequestEntityTooLarge, "too large")
	wantPage(t, c.do("POST", "/credentials", "%zz", map[string]string{"Content-Type": formType, csrfHeader: ""}), http.StatusBadRequest, "could not be read")

	t.Run("cross-origin form", func(t *testing.T) {
		res := c.do("POST", "/credentials", url.Values{csrfField: {c.csrf}, "email": {"x@example.com"}, "token": {atlassianToken}}.Encode(),
			map[string]string{"Content-Type": formType, csrfHeader: "", "Sec-Fetch-Site": "cross-site"})
		wantPage(t, res, http.StatusForbidden, "sent from another site")
		assertSecurityHeaders(t, res, false)
		if cs, _ := e.st.ListCredentials(t.Context()); len(cs) != 0 {
			t.Error("a cross-origin form added a credential")
		}
	})
	t.Run("the script's header token is accepted", func(t *testing.T) {
		res := c.do("POST", "/credentials", url.Values{"email": {"hdr@example.com"}, "token": {atlassianToken}}.Encode(),
			map[string]string{"Content-Type": formType, csrfHeader: c.csrf})
		wantRedirect(t, res, flash("/credentials", "added"))
	})
}

func TestStaticAssets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	anon := e.client()
	login := string(anon.do("GET", "/login", nil, nil).body)
	for name, ctype := range map[string]string{"admin.css": "text/css; charset=utf-8", "admin.js": "text/javascript; charset=utf-8", "favicon.svg": "image/svg+xml"} {
		t.Run(name, func(t *testing.T) {
			m := regexp.MustCompile(`/admin(/static/` + regexp.QuoteMeta(name) + `\?v=[0-9a-f]{12})"`).FindStringSubmatch(login)
			if m == nil {
				t.Fatalf("the login page does not link %s with a version", name)
			}
			res := anon.do("GET", m[1], nil, nil)
			if res.status != 200 || res.header.Get("Content-Type") != ctype || len(res.body) == 0 {
				t.Fatalf("%s: %d %q (%d bytes)", name, res.status, res.header.Get("Content-Type"), len(res.body))
			}
			if got := res.header.Get("Cache-Control"); got != "public, max-age=86400" {
				t.Errorf("Cache-Control = %q", got)
			}
			if res.header.Get("X-Content-Type-Options") != "nosniff" || res.header.Get("Content-Security-Policy") == "" {
				t.Error("static answer without the security headers")
			}
			etag := res.header.Get("ETag")
			if res := anon.do("GET", m[1], nil, map[string]string{"If-None-Match": etag}); res.status != http.StatusNotModified {
				t.Errorf("conditional GET: %d, want 304", res.status)
			}
		})
	}
	for _, p := range []string{"/static/nope.css", "/web/templates/layout.html", "/static/", "/static/%2e%2e/admin.go", "/static/web/static/admin.css"} {
		if res := anon.do("GET", p, nil, nil); res.status != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, res.status)
		}
	}
}

func TestPagesOverTLS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{tls: true})
	c := e.client()
	res := c.post("/login", url.Values{"password": {testPassword}})
	wantRedirect(t, res, "/admin/")
	ck := findCookie(t, res, secureCookieName)
	if !ck.Secure || !ck.HttpOnly || ck.Path != "/" || ck.SameSite != http.SameSiteStrictMode {
		t.Errorf("cookie = %+v, want the __Host- rules", ck)
	}
	page := c.do("GET", "/", nil, nil)
	wantPage(t, page, http.StatusOK, "Dashboard")
	assertSecurityHeaders(t, page, true)
	c.csrf = formCSRF(t, page)
	res = c.post("/logout", nil)
	wantRedirect(t, res, "/admin/login?done=logout")
	if ck := findCookie(t, res, secureCookieName); ck.MaxAge >= 0 || !ck.Secure {
		t.Errorf("logout cookie = %+v", ck)
	}
}

// TestPageFailures: the store or the login limiter failing, and a form
// body that never arrives, each get an error page with a fixed message.
func TestPageFailures(t *testing.T) {
	t.Parallel()
	var u *unavailableStore
	e := newEnv(t, envOptions{wrapStore: func(s store.Store) store.Store { u = &unavailableStore{Store: s}; return u }})
	c := e.pageLoggedIn(testPassword)
	u.down.Store(true)
	for _, path := range []string{"/", "/credentials", "/password"} {
		body := wantPage(t, c.do("GET", path, nil, nil), http.StatusServiceUnavailable, "Store unavailable")
		if strings.Contains(body, "refused") {
			t.Errorf("%s: the page leaks the store's error", path)
		}
	}
	if res := c.do("GET", "/fragments/dashboard", nil, nil); res.status != http.StatusServiceUnavailable {
		t.Errorf("fragment with the store down: %d", res.status)
	}
	wantPage(t, e.client().post("/login", url.Values{"password": {testPassword}}), http.StatusServiceUnavailable, "Store unavailable")
	u.down.Store(false)

	t.Run("limiter closed", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		c := e.pageLoggedIn(testPassword)
		if err := e.admin.Close(); err != nil {
			t.Fatal(err)
		}
		wantPage(t, e.client().post("/login", url.Values{"password": {testPassword}}), http.StatusServiceUnavailable, "unavailable right now")
		wantPage(t, c.post("/password", url.Values{"current": {testPassword}, "new": {"a long new password"}, "confirm": {"a long new password"}}),
			http.StatusServiceUnavailable, "unavailable right now")
	})
	t.Run("slow form body", func(t *testing.T) {
		const timeout = 200 * time.Millisecond
		e := newEnv(t, envOptions{cfg: Config{BodyReadTimeout: timeout}})
		u, err := url.Parse(e.srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		body := "password=" + url.QueryEscape(testPassword)
		fmt.Fprintf(conn, "POST /admin/login HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s",
			u.Host, formType, len(body), body[:5])
		start := time.Now()
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantPage(t, response{status: resp.StatusCode, header: resp.Header, body: b}, http.StatusRequestTimeout, "not received in time")
		if took := time.Since(start); took > timeout+2*time.Second {
			t.Errorf("the 408 came after %s", took)
		}
	})
}

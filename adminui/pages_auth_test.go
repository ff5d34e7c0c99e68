package adminui

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
)

func TestLoginPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})

	t.Run("shown without a session", func(t *testing.T) {
		res := e.client().do("GET", "/login", nil, nil)
		body := wantPage(t, res, http.StatusOK, "Admin password", "atlassian-proxy reset-password")
		if _, ok := inputValue(body, "password"); !ok {
			t.Error("no password field")
		}
		if strings.Contains(body, csrfField) {
			t.Error("the login page carries a CSRF token without a session")
		}
		assertSecurityHeaders(t, res, false)
	})
	t.Run("logged in goes to the dashboard", func(t *testing.T) {
		c := e.pageLoggedIn(testPassword)
		wantRedirect(t, c.do("GET", "/login", nil, nil), "/admin/")
	})
	t.Run("flash after logout", func(t *testing.T) {
		wantPage(t, e.client().do("GET", "/login?done=logout", nil, nil), http.StatusOK, "You are logged out.")
	})
	t.Run("unknown flash shows nothing", func(t *testing.T) {
		body := wantPage(t, e.client().do("GET", "/login?done=%3Cscript%3Ealert(1)%3C/script%3E", nil, nil), http.StatusOK)
		if strings.Contains(body, "alert(1)") || strings.Contains(body, `class="notice ok"`) {
			t.Errorf("a made-up notice reached the page: %s", body)
		}
	})
}

func TestLoginForm(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})

	t.Run("good password", func(t *testing.T) {
		c := e.client()
		res := c.post("/login", url.Values{"password": {testPassword}})
		wantRedirect(t, res, "/admin/")
		ck := findCookie(t, res, cookieName)
		if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/admin" || len(ck.Value) < 43 {
			t.Errorf("cookie = %+v, want HttpOnly, SameSite=Strict, Path=/admin, 256 bits", ck)
		}
		body := wantPage(t, c.do("GET", "/", nil, nil), http.StatusOK, "Dashboard")
		if !strings.Contains(body, `action="/admin/logout"`) {
			t.Error("the dashboard has no logout form")
		}
	})

	noPw := newEnv(t, envOptions{password: "-"})
	ref := e.client().post("/login", url.Values{"password": {"not the password"}})
	bad := []struct {
		name   string
		e      *env
		vals   url.Values
		status int
		text   string
	}{
		{"wrong password", e, url.Values{"password": {"Correct Horse Battery Staple"}}, 401, "Invalid password."},
		{"prefix of the password", e, url.Values{"password": {testPassword[:8]}}, 401, "Invalid password."},
		{"no admin password set", noPw, url.Values{"password": {testPassword}}, 401, "Invalid password."},
		{"empty password", e, url.Values{"password": {""}}, 400, "Enter the admin password."},
		{"no field", e, url.Values{}, 400, "Enter the admin password."},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			res := tc.e.client().post("/login", tc.vals)
			body := wantPage(t, res, tc.status, tc.text)
			if res.header.Get("Set-Cookie") != "" {
				t.Error("a failed login set a cookie")
			}
			if pw := tc.vals.Get("password"); pw != "" && strings.Contains(body, pw) {
				t.Error("the typed password is shown back")
			}
			if tc.status == 401 && string(res.body) != string(ref.body) {
				t.Errorf("the answer differs from another failure's:\n%s\nwant\n%s", body, ref.body)
			}
		})
	}
	t.Run("JSON body", func(t *testing.T) {
		res := e.client().do("POST", "/login", `{"password":"`+testPassword+`"}`, nil)
		wantPage(t, res, http.StatusUnsupportedMediaType, "URL-encoded")
	})
	t.Run("body too large", func(t *testing.T) {
		res := e.client().post("/login", url.Values{"password": {strings.Repeat("a", 1<<20)}})
		wantPage(t, res, http.StatusRequestEntityTooLarge, "too large")
	})
	t.Run("generated password goes to the password page", func(t *testing.T) {
		g := newEnv(t, envOptions{password: "-"})
		pw, err := g.admin.Service().EnsureAdminPassword(t.Context(), "")
		if err != nil {
			t.Fatal(err)
		}
		c := g.client()
		wantRedirect(t, c.post("/login", url.Values{"password": {pw}}), "/admin/password")
		wantRedirect(t, c.do("GET", "/login", nil, nil), "/admin/password")
		body := wantPage(t, c.do("GET", "/password", nil, nil), http.StatusOK, "You logged in with a generated password")
		if strings.Contains(body, `href="/admin/credentials"`) {
			t.Error("the navigation offers pages that are refused until the password is changed")
		}
	})
	t.Run("new session id, the old one ended", func(t *testing.T) {
		c := e.pageLoggedIn(testPassword)
		first := sessionCookieValue(t, c)
		wantRedirect(t, c.post("/login", url.Values{"password": {testPassword}}), "/admin/")
		if second := sessionCookieValue(t, c); second == first {
			t.Fatal("the session id did not change at login")
		}
		if _, err := e.st.GetSession(t.Context(), SessionKey(first)); err == nil {
			t.Error("the session the browser had before logging in again still exists")
		}
	})
}

func TestLoginFormThrottled(t *testing.T) {
	t.Parallel()
	t.Run("per client", func(t *testing.T) {
		e := newEnv(t, envOptions{cfg: Config{LoginAttemptsPerIP: 2}})
		for i := range 2 {
			wantPage(t, e.client().post("/login", url.Values{"password": {fmt.Sprint("wrong ", i)}}), 401, "Invalid password.")
		}
		// The JSON API and the form share the buckets.
		wantError(t, e.client().do("POST", "/api/login", map[string]any{"password": testPassword}, nil), 429, "too_many_attempts", "")
		res := e.client().post("/login", url.Values{"password": {testPassword}})
		wantPage(t, res, http.StatusTooManyRequests, "Too many attempts")
		if ra, err := strconv.Atoi(res.header.Get("Retry-After")); err != nil || ra < 1 {
			t.Errorf("Retry-After = %q, want ≥ 1", res.header.Get("Retry-After"))
		}
		if res.header.Get("Set-Cookie") != "" {
			t.Error("a throttled login set a cookie")
		}
	})
	t.Run("in total", func(t *testing.T) {
		e := newEnv(t, envOptions{cfg: Config{LoginAttemptsPerIP: 10, LoginAttemptsTotal: 2}})
		h := e.admin.Handler()
		post := func(addr string) int {
			return serve(h, "POST", "/login", addr, "", map[string]string{"Content-Type": formType}).Code
		}
		for i := range 2 {
			if got := post(fmt.Sprintf("192.0.2.%d:1", i+1)); got != 400 {
				t.Fatalf("attempt %d: %d, want 400 (empty form)", i, got)
			}
		}
		if got := post("198.51.100.1:1"); got != 429 {
			t.Errorf("third attempt from a new address: %d, want 429", got)
		}
	})
}

func TestLogoutPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.pageLoggedIn(testPassword)
	other := e.pageLoggedIn(testPassword)
	id := sessionCookieValue(t, c)
	res := c.post("/logout", nil)
	wantRedirect(t, res, "/admin/login?done=logout")
	if ck := findCookie(t, res, cookieName); ck.MaxAge >= 0 {
		t.Errorf("cookie not cleared: %+v", ck)
	}
	if _, err := e.st.GetSession(t.Context(), SessionKey(id)); err == nil {
		t.Error("the session still exists after logout")
	}
	wantRedirect(t, e.client().do("GET", "/", nil, map[string]string{"Cookie": cookieName + "=" + id}), "/admin/login")
	wantPage(t, other.do("GET", "/", nil, nil), http.StatusOK, "Dashboard") // only this session ended
}

func TestPasswordPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{LoginAttemptsPerIP: 100}})
	c := e.pageLoggedIn(testPassword)
	wantPage(t, c.do("GET", "/password", nil, nil), http.StatusOK, "atlassian-proxy reset-password", "12 to 128 characters")

	const good = "a brand new passphrase"
	bad := []struct {
		name                string
		current, new, again string
		field, text         string
	}{
		{"empty current", "", good, good, "current", "Enter your current password."},
		{"empty new", testPassword, "", "", "new", "Choose a new password."},
		{"too short", testPassword, "short pass1", "short pass1", "new", "Password must be at least 12 characters"},
		{"too long", testPassword, strings.Repeat("x", 129), strings.Repeat("x", 129), "new", "Password must be at most 128 characters"},
		{"control character", testPassword, "long password\x01here", "long password\x01here", "new", "Password must not contain control characters"},
		{"mismatch", testPassword, good, good + "!", "confirm", "The two new passwords differ."},
		{"wrong current", "not the current one", good, good, "current", "Current password is incorrect"},
		{"same as current", testPassword, testPassword, testPassword, "new", "The new password must differ from the current one"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			res := c.post("/password", url.Values{"current": {tc.current}, "new": {tc.new}, "confirm": {tc.again}})
			body := wantPage(t, res, http.StatusBadRequest, tc.text)
			if !strings.Contains(body, `id="`+tc.field+`" name="`+tc.field+`"`) ||
				!regexpMatch(`name="`+tc.field+`"[^>]*aria-invalid="true"`, body) {
				t.Errorf("field %s is not marked invalid", tc.field)
			}
			for _, typed := range []string{tc.current, tc.new, tc.again} {
				if len(typed) > 3 && strings.Contains(body, typed) {
					t.Errorf("a typed password (%q) is shown back", typed)
				}
			}
			if res.header.Get("Set-Cookie") != "" {
				t.Error("a refused change touched the cookie")
			}
		})
	}
	// Nothing was changed by the refusals.
	e.loggedIn(testPassword)

	t.Run("good", func(t *testing.T) {
		other := e.pageLoggedIn(testPassword)
		old := sessionCookieValue(t, c)
		res := c.post("/password", url.Values{"current": {testPassword}, "new": {good}, "confirm": {good}})
		wantRedirect(t, res, "/admin/?done=password")
		if id := sessionCookieValue(t, c); id == old {
			t.Error("the session id did not change with the password")
		}
		wantPage(t, c.do("GET", "/?done=password", nil, nil), http.StatusOK, "Password changed. Every other session was ended.")
		wantRedirect(t, other.do("GET", "/", nil, nil), "/admin/login")
		if _, err := e.st.GetSession(t.Context(), SessionKey(old)); err == nil {
			t.Error("the session that changed the password still exists")
		}
		wantPage(t, e.client().post("/login", url.Values{"password": {testPassword}}), 401, "Invalid password.")
		e.pageLoggedIn(good)
	})
	t.Run("throttled", func(t *testing.T) {
		e := newEnv(t, envOptions{cfg: Config{LoginAttemptsPerIP: 3}})
		c := e.pageLoggedIn(testPassword) // one attempt
		for range 2 {
			wantPage(t, c.post("/password", url.Values{"current": {"guess guess guess"}, "new": {good}, "confirm": {good}}), 400, "incorrect")
		}
		res := c.post("/password", url.Values{"current": {testPassword}, "new": {good}, "confirm": {good}})
		wantPage(t, res, http.StatusTooManyRequests, "Too many attempts")
		if res.header.Get("Retry-After") == "" {
			t.Error("no Retry-After")
		}
		// Unchanged (this client may not even log in now: ask the store).
		if p, err := e.st.AdminPassword(t.Context()); err != nil || !auth.VerifyPassword(p.Hash, testPassword) {
			t.Errorf("the password changed although the change was throttled (%v)", err)
		}
	})
}

// TestDashboardRefreshIsNotActivity: the dashboard's own refreshes do not
// keep a session alive; a click does.
func TestDashboardRefreshIsNotActivity(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		b := newBubbleEnv(t, Config{})
		h := b.admin.Handler()
		req := httptest.NewRequest("POST", "/login", strings.NewReader("password="+url.QueryEscape(testPassword)))
		req.Header.Set("Content-Type", formType)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusSeeOther {
			t.Fatalf("login: %d", w.Code)
		}
		var cookie string
		for _, ck := range w.Result().Cookies() {
			cookie = ck.Name + "=" + ck.Value
		}
		get := func(path string) int {
			return serve(h, "GET", path, "", "", map[string]string{"Cookie": cookie}).Code
		}
		// 29 minutes of refreshes every 5 s, nobody at the keyboard.
		for range 29 * 12 {
			time.Sleep(5 * time.Second)
			if got := get("/fragments/dashboard"); got != 200 {
				t.Fatalf("refresh before the idle timeout: %d", got)
			}
		}
		time.Sleep(time.Minute)
		if got := get("/fragments/dashboard"); got != http.StatusUnauthorized {
			t.Fatalf("refresh after 30 idle minutes: %d, want 401", got)
		}
		if got := get("/"); got != http.StatusSeeOther {
			t.Fatalf("page after 30 idle minutes: %d, want a redirect to the login page", got)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		b := newBubbleEnv(t, Config{})
		h := b.admin.Handler()
		cookie := b.login(t)
		for range 3 {
			time.Sleep(20 * time.Minute)
			if got := serve(h, "GET", "/", "", "", map[string]string{"Cookie": cookie}).Code; got != 200 {
				t.Fatalf("a page every 20 minutes: %d", got)
			}
		}
	})
}

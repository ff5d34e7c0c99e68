package adminui

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

func TestLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})

	t.Run("good password", func(t *testing.T) {
		c := e.client()
		res := c.do("POST", "/api/login", map[string]any{"password": testPassword}, nil)
		if res.status != http.StatusOK {
			t.Fatalf("status = %d, want 200 (body %s)", res.status, res.body)
		}
		var lr loginResponse
		res.decode(t, &lr)
		if len(lr.CSRFToken) < 40 {
			t.Errorf("csrf_token = %q, want ≥ 40 chars", lr.CSRFToken)
		}
		if lr.MustChangePassword {
			t.Errorf("must_change_password = true, want false for a password from the environment")
		}
		ck := findCookie(t, res, cookieName)
		if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/admin" || ck.Secure {
			t.Errorf("cookie = %+v, want HttpOnly, SameSite=Strict, Path=/admin, not Secure", ck)
		}
		if len(ck.Value) < 43 { // 256 bits in base64url
			t.Errorf("session id %q is shorter than 256 bits", ck.Value)
		}
		if ck.MaxAge != 0 || !ck.Expires.IsZero() {
			t.Errorf("cookie MaxAge=%d Expires=%v, want a browser-session cookie", ck.MaxAge, ck.Expires)
		}
		c.csrf = lr.CSRFToken
		if res := c.do("GET", "/api/session", nil, nil); res.status != http.StatusOK {
			t.Errorf("session after login: status %d", res.status)
		}
	})

	bad := []struct {
		name   string
		body   any
		hdr    map[string]string
		status int
		code   string
		param  string
	}{
		{"wrong password", map[string]any{"password": "not the password"}, nil, 401, "invalid_password", ""},
		{"empty password", map[string]any{"password": ""}, nil, 400, "invalid_value", "password"},
		{"missing password", map[string]any{}, nil, 400, "invalid_value", "password"},
		{"no body", "", nil, 400, "invalid_json", ""},
		{"malformed JSON", `{"password":`, nil, 400, "invalid_json", ""},
		{"trailing data", `{"password":"x"} {}`, nil, 400, "invalid_json", ""},
		{"not an object", `["x"]`, nil, 400, "invalid_json", ""},
		{"wrong type", `{"password":12}`, nil, 400, "invalid_type", "password"},
		{"unknown field", `{"password":"x","user":"admin"}`, nil, 400, "unknown_field", "user"},
		{"form content type", `{"password":"x"}`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type", ""},
		{"body too large", `{"password":"` + strings.Repeat("a", 1<<20) + `"}`, nil, 413, "request_too_large", ""},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			c := e.client()
			res := c.do("POST", "/api/login", tc.body, tc.hdr)
			wantError(t, res, tc.status, tc.code, tc.param)
			if ck := res.header.Get("Set-Cookie"); ck != "" {
				t.Errorf("Set-Cookie on a failed login: %q", ck)
			}
		})
	}
}

func TestLoginNewSessionIDAndOldEnded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.loggedIn(testPassword)
	first := sessionCookieValue(t, c)
	res := c.do("POST", "/api/login", map[string]any{"password": testPassword}, nil)
	if res.status != http.StatusOK {
		t.Fatalf("second login: %d %s", res.status, res.body)
	}
	second := sessionCookieValue(t, c)
	if first == second {
		t.Fatalf("the session id did not change at login")
	}
	if _, err := e.st.GetSession(t.Context(), SessionKey(first)); err == nil {
		t.Errorf("the session the browser had before logging in again still exists")
	}
	if _, err := e.st.GetSession(t.Context(), second); err == nil {
		t.Errorf("the store holds the cookie value as a session key; want only its hash")
	}
}

func TestLoginFailuresIdentical(t *testing.T) {
	t.Parallel()
	withPw := newEnv(t, envOptions{})
	noPw := newEnv(t, envOptions{password: "-"})
	answer := func(e *env, pw string) (response, time.Duration) {
		start := time.Now()
		res := e.client().do("POST", "/api/login", map[string]any{"password": pw}, nil)
		return res, time.Since(start)
	}
	ref, _ := answer(withPw, "wrong password 1")
	cases := []struct {
		name string
		e    *env
		pw   string
	}{
		{"another wrong password", withPw, "Correct Horse Battery Staple"},
		{"prefix of the password", withPw, testPassword[:10]},
		{"password with a suffix", withPw, testPassword + " "},
		{"no admin password set", noPw, testPassword},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, d := answer(tc.e, tc.pw)
			if res.status != ref.status || string(res.body) != string(ref.body) {
				t.Errorf("answer = %d %s, want %d %s", res.status, res.body, ref.status, ref.body)
			}
			for _, h := range []string{"Content-Type", "Set-Cookie", "Retry-After", "Content-Length"} {
				if got, want := res.header.Get(h), ref.header.Get(h); got != want {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
			// Every failure runs one argon2id verification (≥ several ms):
			// an answer without one would come back in well under a millisecond.
			if d < time.Millisecond {
				t.Errorf("failure answered in %v: no password hash was checked", d)
			}
		})
	}
}

func TestLoginThrottled(t *testing.T) {
	t.Parallel()
	t.Run("per client", func(t *testing.T) {
		e := newEnv(t, envOptions{cfg: Config{LoginAttemptsPerIP: 3, LoginAttemptsTotal: 100}})
		for i := range 3 {
			res := e.client().do("POST", "/api/login", map[string]any{"password": fmt.Sprint("wrong ", i)}, nil)
			wantError(t, res, 401, "invalid_password", "")
		}
		for _, pw := range []string{"wrong again", testPassword} {
			res := e.client().do("POST", "/api/login", map[string]any{"password": pw}, nil)
			wantError(t, res, 429, "too_many_attempts", "")
			if ra := res.header.Get("Retry-After"); ra == "" || ra == "0" {
				t.Errorf("Retry-After = %q, want ≥ 1 s", ra)
			}
			if res.header.Get("Set-Cookie") != "" {
				t.Errorf("a throttled login set a cookie")
			}
		}
	})
	t.Run("in total", func(t *testing.T) {
		e := newEnv(t, envOptions{cfg: Config{LoginAttemptsPerIP: 10, LoginAttemptsTotal: 4}})
		h := e.admin.Handler()
		login := func(addr, pw string) *httptest.ResponseRecorder {
			return serve(h, "POST", "/api/login", addr, `{"password":"`+pw+`"}`, nil)
		}
		for i := range 4 {
			if rec := login(fmt.Sprintf("192.0.2.%d:1234", i+1), "wrong"); rec.Code != 401 {
				t.Fatalf("attempt %d: status %d, want 401", i, rec.Code)
			}
		}
		rec := login("198.51.100.7:4321", testPassword)
		if rec.Code != 429 || rec.Header().Get("Retry-After") == "" {
			t.Fatalf("fifth attempt from a new address: status %d Retry-After %q, want 429 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
		}
	})
	t.Run("password change attempts count", func(t *testing.T) {
		e := newEnv(t, envOptions{cfg: Config{LoginAttemptsPerIP: 3}})
		c := e.loggedIn(testPassword)
		for range 2 {
			res := c.do("POST", "/api/password", map[string]any{"current": "guess guess guess", "new": "another long password"}, nil)
			wantError(t, res, 400, "invalid_value", "current")
		}
		res := c.do("POST", "/api/password", map[string]any{"current": "guess guess guess", "new": "another long password"}, nil)
		wantError(t, res, 429, "too_many_attempts", "")
	})
}

func TestMustChangePassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{password: "-"})
	generated, err := e.admin.Service().EnsureAdminPassword(t.Context(), "")
	if err != nil || generated == "" {
		t.Fatalf("EnsureAdminPassword = %q, %v; want a generated password", generated, err)
	}
	c := e.client()
	res := c.do("POST", "/api/login", map[string]any{"password": generated}, nil)
	var lr loginResponse
	res.decode(t, &lr)
	if res.status != 200 || !lr.MustChangePassword {
		t.Fatalf("login with the generated password: %d %s, want 200 and must_change_password", res.status, res.body)
	}
	c.csrf = lr.CSRFToken

	// Everything but session, password and logout refuses: the API with
	// 403, a fragment with 403, a page with a redirect to the password page.
	for _, rt := range walkRoutes(t, e) {
		switch rt.path {
		case "/api/login", "/api/logout", "/api/session", "/api/password", "/logout", "/password":
			continue
		}
		if rt.public() {
			continue
		}
		t.Run(rt.method+" "+rt.path, func(t *testing.T) {
			res := rt.send(c, rt.concrete(), nil)
			switch {
			case rt.api():
				wantError(t, res, 403, "password_change_required", "")
			case rt.fragment():
				if res.status != http.StatusForbidden {
					t.Errorf("status %d, want 403", res.status)
				}
			default:
				wantRedirect(t, res, "/admin/password")
			}
		})
	}
	res = c.do("GET", "/api/session", nil, nil)
	var sr sessionResponse
	res.decode(t, &sr)
	if res.status != 200 || !sr.MustChangePassword || sr.CSRFToken != c.csrf {
		t.Fatalf("GET /api/session = %d %s", res.status, res.body)
	}

	res = c.do("POST", "/api/password", map[string]any{"current": generated, "new": "a brand new passphrase"}, nil)
	if res.status != http.StatusNoContent {
		t.Fatalf("change password: %d %s", res.status, res.body)
	}
	if res := c.do("GET", "/api/session", nil, nil); res.status != 401 {
		t.Errorf("session after a password change: status %d, want 401", res.status)
	}
	c2 := e.loggedIn("a brand new passphrase")
	if res := c2.do("GET", "/api/credentials", nil, nil); res.status != 200 {
		t.Errorf("credentials after the change: %d %s", res.status, res.body)
	}
}

func TestPasswordChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{LoginAttemptsPerIP: 100}})
	c := e.loggedIn(testPassword)
	bad := []struct {
		name   string
		body   any
		status int
		param  string
	}{
		{"wrong current", map[string]any{"current": "not it at all", "new": "a long enough password"}, 400, "current"},
		{"missing current", map[string]any{"new": "a long enough password"}, 400, "current"},
		{"too short", map[string]any{"current": testPassword, "new": "short pass"}, 400, "new"},
		{"11 characters", map[string]any{"current": testPassword, "new": "elevenchars"}, 400, "new"},
		{"too long", map[string]any{"current": testPassword, "new": strings.Repeat("x", 129)}, 400, "new"},
		{"same as current", map[string]any{"current": testPassword, "new": testPassword}, 400, "new"},
		{"control character", map[string]any{"current": testPassword, "new": "long password\x00here"}, 400, "new"},
		{"wrong type", `{"current":1,"new":"a long enough password"}`, 400, "current"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, c.do("POST", "/api/password", tc.body, nil), tc.status, "", tc.param)
		})
	}
	t.Run("ends every session", func(t *testing.T) {
		other := e.loggedIn(testPassword)
		newPw := strings.Repeat("é", 12) // 12 characters, 24 bytes
		res := c.do("POST", "/api/password", map[string]any{"current": testPassword, "new": newPw}, nil)
		if res.status != http.StatusNoContent {
			t.Fatalf("change: %d %s", res.status, res.body)
		}
		if ck := findCookie(t, res, cookieName); ck.MaxAge >= 0 {
			t.Errorf("cookie not cleared: %+v", ck)
		}
		for name, cl := range map[string]*client{"this": c, "other": other} {
			if res := cl.do("GET", "/api/session", nil, nil); res.status != 401 {
				t.Errorf("%s session after a password change: %d, want 401", name, res.status)
			}
		}
		wantError(t, e.client().do("POST", "/api/login", map[string]any{"password": testPassword}, nil), 401, "invalid_password", "")
		e.loggedIn(newPw)
	})
}

func TestLogout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.loggedIn(testPassword)
	other := e.loggedIn(testPassword)
	res := c.do("POST", "/api/logout", nil, nil)
	if res.status != http.StatusNoContent {
		t.Fatalf("logout: %d %s", res.status, res.body)
	}
	if ck := findCookie(t, res, cookieName); ck.MaxAge >= 0 || ck.Value != "" {
		t.Errorf("logout did not clear the cookie: %+v", ck)
	}
	if res := c.do("GET", "/api/session", nil, nil); res.status != 401 {
		t.Errorf("session after logout: %d, want 401", res.status)
	}
	if res := other.do("GET", "/api/session", nil, nil); res.status != 200 {
		t.Errorf("another session after this one logged out: %d, want 200", res.status)
	}
}

func TestCredentialsAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.loggedIn(testPassword)
	const cloud = "0b6e3f5a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"

	before := e.changed.Load()
	res := c.do("POST", "/api/credentials", map[string]any{
		"email": " ops@example.com ", "token": atlassianToken, "cloud_id": strings.ToUpper(cloud), "label": "team A", "max_concurrency": 6,
	}, nil)
	if res.status != http.StatusCreated {
		t.Fatalf("add: %d %s", res.status, res.body)
	}
	var v CredentialView
	res.decode(t, &v)
	want := CredentialView{ID: v.ID, Email: "ops@example.com", TokenMasked: "ATAT…x9Q2", TokenReadable: true,
		CloudID: cloud, Label: "team A", Enabled: true, MaxConcurrency: 6, CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt}
	if v != want {
		t.Errorf("created = %+v, want %+v", v, want)
	}
	if !strings.HasPrefix(v.ID, "cred_") || v.CreatedAt.IsZero() {
		t.Errorf("id %q created_at %v", v.ID, v.CreatedAt)
	}
	if got := e.changed.Load() - before; got != 1 {
		t.Errorf("Changed called %d times, want 1", got)
	}
	stored, err := e.st.GetCredential(t.Context(), v.ID)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(stored.Token), atlassianToken[:20]) {
		t.Errorf("the store holds the token in clear")
	}
	if _, err := e.cipher.Open("cred_other", stored.Token); err == nil {
		t.Errorf("the sealed token opens with another id: the id is not the associated data")
	}
	if plain, err := e.cipher.Open(v.ID, stored.Token); err != nil || string(plain) != atlassianToken {
		t.Errorf("Open(id) = %q, %v; want the token", plain, err)
	}

	t.Run("list", func(t *testing.T) {
		res := c.do("GET", "/api/credentials", nil, nil)
		var l listResponse[CredentialView]
		res.decode(t, &l)
		if res.status != 200 || len(l.Data) != 1 || l.Data[0] != v {
			t.Fatalf("list = %d %s", res.status, res.body)
		}
	})

	bad := []struct {
		name   string
		body   any
		status int
		code   string
		param  string
	}{
		{"duplicate", map[string]any{"email": "ops@example.com", "token": "ATATT3other-token-value-long-enough", "cloud_id": cloud}, 409, "duplicate", "email"},
		{"duplicate other case", map[string]any{"email": "OPS@Example.com", "token": "ATATT3other-token-value-long-enough", "cloud_id": cloud}, 409, "duplicate", "email"},
		{"no email", map[string]any{"token": atlassianToken}, 400, "invalid_value", "email"},
		{"malformed email", map[string]any{"email": "ops.example.com", "token": atlassianToken}, 400, "invalid_value", "email"},
		{"email with a name", map[string]any{"email": "Ops <ops@example.com>", "token": atlassianToken}, 400, "invalid_value", "email"},
		{"two emails", map[string]any{"email": "a@example.com, b@example.com", "token": atlassianToken}, 400, "invalid_value", "email"},
		{"no token", map[string]any{"email": "x@example.com"}, 400, "invalid_value", "token"},
		{"blank token", map[string]any{"email": "x@example.com", "token": "   "}, 400, "invalid_value", "token"},
		{"token with a space", map[string]any{"email": "x@example.com", "token": "ATATT3 abc"}, 400, "invalid_value", "token"},
		{"token with a newline", map[string]any{"email": "x@example.com", "token": "ATATT3\nabc"}, 400, "invalid_value", "token"},
		{"cloud id not a uuid", map[string]any{"email": "x@example.com", "token": atlassianToken, "cloud_id": "my-site"}, 400, "invalid_value", "cloud_id"},
		{"label too long", map[string]any{"email": "x@example.com", "token": atlassianToken, "label": strings.Repeat("é", 101)}, 400, "invalid_value", "label"},
		{"negative concurrency", map[string]any{"email": "x@example.com", "token": atlassianToken, "max_concurrency": -1}, 400, "invalid_value", "max_concurrency"},
		{"email not a string", `{"email":1,"token":"x"}`, 400, "invalid_type", "email"},
		{"unknown field", map[string]any{"email": "x@example.com", "token": atlassianToken, "enabled": false}, 400, "unknown_field", "enabled"},
		{"malformed JSON", `{"email":`, 400, "invalid_json", ""},
		{"too large", `{"email":"x@example.com","token":"` + strings.Repeat("a", 1<<20) + `"}`, 413, "request_too_large", ""},
	}
	for _, tc := range bad {
		t.Run("add "+tc.name, func(t *testing.T) {
			n := e.changed.Load()
			res := c.do("POST", "/api/credentials", tc.body, nil)
			d := wantError(t, res, tc.status, tc.code, tc.param)
			if strings.Contains(d.Message, atlassianToken) || strings.Contains(string(res.body), "ATATT3") {
				t.Errorf("the error shows the token: %s", res.body)
			}
			if e.changed.Load() != n {
				t.Errorf("Changed called after a failed add")
			}
		})
	}
	t.Run("add text/plain", func(t *testing.T) {
		res := c.do("POST", "/api/credentials", `{"email":"x@example.com","token":"t"}`, map[string]string{"Content-Type": "text/plain"})
		wantError(t, res, 415, "unsupported_media_type", "")
	})
	t.Run("nothing half-saved", func(t *testing.T) {
		cs, err := e.st.ListCredentials(t.Context())
		if err != nil || len(cs) != 1 {
			t.Fatalf("stored credentials = %d, %v; want only the first", len(cs), err)
		}
	})

	patches := []struct {
		name  string
		body  any
		check func(CredentialView) bool
	}{
		{"disable", map[string]any{"enabled": false}, func(v CredentialView) bool { return !v.Enabled }},
		{"limit", map[string]any{"max_concurrency": 2}, func(v CredentialView) bool { return v.MaxConcurrency == 2 && !v.Enabled }},
		{"label", map[string]any{"label": "  team B "}, func(v CredentialView) bool { return v.Label == "team B" }},
		{"all", map[string]any{"enabled": true, "max_concurrency": 0, "label": ""}, func(v CredentialView) bool {
			return v.Enabled && v.MaxConcurrency == 0 && v.Label == ""
		}},
	}
	for _, tc := range patches {
		t.Run("patch "+tc.name, func(t *testing.T) {
			n := e.changed.Load()
			res := c.do("PATCH", "/api/credentials/"+v.ID, tc.body, nil)
			var got CredentialView
			res.decode(t, &got)
			if res.status != 200 || !tc.check(got) || got.TokenMasked != "ATAT…x9Q2" {
				t.Errorf("patch = %d %s", res.status, res.body)
			}
			if e.changed.Load() != n+1 {
				t.Errorf("Changed not called once")
			}
		})
	}
	badPatches := []struct {
		name   string
		id     string
		body   any
		status int
		param  string
	}{
		{"empty", v.ID, map[string]any{}, 400, ""},
		{"nulls only", v.ID, `{"enabled":null}`, 400, ""},
		{"enabled not a bool", v.ID, `{"enabled":"yes"}`, 400, "enabled"},
		{"negative limit", v.ID, map[string]any{"max_concurrency": -3}, 400, "max_concurrency"},
		{"label too long", v.ID, map[string]any{"label": strings.Repeat("x", 101)}, 400, "label"},
		{"email not patchable", v.ID, map[string]any{"email": "new@example.com"}, 400, "email"},
		{"unknown id", "cred_0000000000000000", map[string]any{"enabled": true}, 404, ""},
	}
	for _, tc := range badPatches {
		t.Run("patch "+tc.name, func(t *testing.T) {
			wantError(t, c.do("PATCH", "/api/credentials/"+tc.id, tc.body, nil), tc.status, "", tc.param)
		})
	}

	t.Run("delete", func(t *testing.T) {
		n := e.changed.Load()
		if res := c.do("DELETE", "/api/credentials/"+v.ID, nil, nil); res.status != http.StatusNoContent || len(res.body) != 0 {
			t.Fatalf("delete: %d %s", res.status, res.body)
		}
		if e.changed.Load() != n+1 {
			t.Errorf("Changed not called")
		}
		wantError(t, c.do("DELETE", "/api/credentials/"+v.ID, nil, nil), 404, "not_found", "")
		if _, err := e.st.GetCredential(t.Context(), v.ID); err == nil {
			t.Errorf("credential still stored")
		}
	})
}

func TestTokensAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.loggedIn(testPassword)
	expires := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	res := c.do("POST", "/api/tokens", map[string]any{
		"name": "ci", "expires_at": expires.Format(time.RFC3339), "allowed_models": []string{"claude-sonnet-4", "claude-sonnet-4", " gpt-5 "}, "rate_limit": 60,
	}, nil)
	if res.status != http.StatusCreated {
		t.Fatalf("create: %d %s", res.status, res.body)
	}
	var created struct {
		Token string `json:"token"`
		TokenView
	}
	res.decode(t, &created)
	if !strings.HasPrefix(created.Token, auth.TokenPrefix) || len(created.Token) < 40 {
		t.Fatalf("token = %q", created.Token)
	}
	if !strings.HasPrefix(created.Token, created.Prefix) || len(created.Prefix) >= len(created.Token)/2 {
		t.Errorf("prefix %q does not start the token or shows too much of it", created.Prefix)
	}
	if created.Name != "ci" || !strings.HasPrefix(created.ID, "tok_") || created.RateLimit != 60 ||
		!slices.Equal(created.AllowedModels, []string{"claude-sonnet-4", "gpt-5"}) ||
		created.ExpiresAt == nil || !created.ExpiresAt.Equal(expires) || created.LastUsedAt != nil {
		t.Errorf("created = %s", res.body)
	}

	// The token works against the real token cache; revoking it stops it.
	tokens := auth.NewTokens(e.st, nil)
	if err := tokens.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, err := tokens.Verify(created.Token); err != nil || got.ID != created.ID {
		t.Fatalf("Verify(new token) = %+v, %v", got, err)
	}

	t.Run("shown once", func(t *testing.T) {
		res := c.do("GET", "/api/tokens", nil, nil)
		if res.status != 200 {
			t.Fatalf("list: %d %s", res.status, res.body)
		}
		if strings.Contains(string(res.body), created.Token) || strings.Contains(string(res.body), created.Token[len(created.Prefix):]) {
			t.Fatalf("the list shows the token: %s", res.body)
		}
		if strings.Contains(string(res.body), `"token"`) || strings.Contains(string(res.body), `"hash"`) {
			t.Errorf("the list has a token or hash field: %s", res.body)
		}
		var l listResponse[TokenView]
		res.decode(t, &l)
		if len(l.Data) != 1 || l.Data[0].ID != created.ID || l.Data[0].Prefix != created.Prefix || l.Data[0].Expired {
			t.Errorf("list = %s", res.body)
		}
	})

	t.Run("minimal", func(t *testing.T) {
		res := c.do("POST", "/api/tokens", map[string]any{"name": "laptop"}, nil)
		var got struct {
			Token string `json:"token"`
			TokenView
		}
		res.decode(t, &got)
		if res.status != 201 || got.ExpiresAt != nil || got.RateLimit != 0 || len(got.AllowedModels) != 0 || got.AllowedModels == nil {
			t.Errorf("create minimal: %d %s", res.status, res.body)
		}
	})

	bad := []struct {
		name   string
		body   any
		status int
		code   string
		param  string
	}{
		{"no name", map[string]any{}, 400, "invalid_value", "name"},
		{"blank name", map[string]any{"name": "  "}, 400, "invalid_value", "name"},
		{"name too long", map[string]any{"name": strings.Repeat("n", 101)}, 400, "invalid_value", "name"},
		{"expiry in the past", map[string]any{"name": "x", "expires_at": "2020-01-01T00:00:00Z"}, 400, "invalid_value", "expires_at"},
		{"expiry malformed", map[string]any{"name": "x", "expires_at": "tomorrow"}, 400, "invalid_value", "expires_at"},
		{"expiry far away", map[string]any{"name": "x", "expires_at": "2400-01-01T00:00:00Z"}, 400, "invalid_value", "expires_at"},
		{"expiry a number", `{"name":"x","expires_at":17}`, 400, "invalid_type", "expires_at"},
		{"empty model", map[string]any{"name": "x", "allowed_models": []string{""}}, 400, "invalid_value", "allowed_models"},
		{"model with a space", map[string]any{"name": "x", "allowed_models": []string{"a b"}}, 400, "invalid_value", "allowed_models"},
		{"models not a list", `{"name":"x","allowed_models":"gpt"}`, 400, "invalid_type", "allowed_models"},
		{"negative rate limit", map[string]any{"name": "x", "rate_limit": -1}, 400, "invalid_value", "rate_limit"},
		{"fractional rate limit", `{"name":"x","rate_limit":1.5}`, 400, "invalid_type", "rate_limit"},
		{"unknown field", map[string]any{"name": "x", "token": "sk-ap-mine"}, 400, "unknown_field", "token"},
	}
	for _, tc := range bad {
		t.Run("create "+tc.name, func(t *testing.T) {
			n := e.changed.Load()
			wantError(t, c.do("POST", "/api/tokens", tc.body, nil), tc.status, tc.code, tc.param)
			if e.changed.Load() != n {
				t.Errorf("Changed called after a failed create")
			}
		})
	}

	t.Run("revoke", func(t *testing.T) {
		n := e.changed.Load()
		if res := c.do("DELETE", "/api/tokens/"+created.ID, nil, nil); res.status != http.StatusNoContent {
			t.Fatalf("revoke: %d %s", res.status, res.body)
		}
		if e.changed.Load() != n+1 {
			t.Errorf("Changed not called")
		}
		if err := tokens.Reload(t.Context()); err != nil {
			t.Fatal(err)
		}
		if _, err := tokens.Verify(created.Token); err == nil {
			t.Errorf("a revoked token still verifies")
		}
		wantError(t, c.do("DELETE", "/api/tokens/"+created.ID, nil, nil), 404, "not_found", "")
	})
}

func TestPoolAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.loggedIn(testPassword)
	v := c.addCredential("pool@example.com", atlassianToken)

	res := c.do("GET", "/api/pool", nil, nil)
	if res.status != 200 {
		t.Fatalf("pool: %d %s", res.status, res.body)
	}
	if !strings.Contains(string(res.body), v.ID) {
		t.Errorf("pool status does not list %s: %s", v.ID, res.body)
	}
	if strings.Contains(string(res.body), atlassianToken[4:len(atlassianToken)-4]) {
		t.Errorf("pool status shows the token: %s", res.body)
	}
	var st pool.Status
	res.decode(t, &st)
	if len(st.Credentials) != 1 || st.Credentials[0].State != pool.StateReady || st.Totals.Ready != 1 {
		t.Fatalf("pool = %s, want the credential ready", res.body)
	}

	// A persisted cooldown reaches the pool at the next resync; reset clears it.
	if err := e.st.SetCredentialState(t.Context(), store.CredentialState{
		CredentialID: v.ID, State: "cooling", Reason: "rate_limited", Until: time.Now().Add(time.Hour), UpdatedAt: time.Now(),
	}); err != nil {
		t.Fatal(err)
	}
	e.resync()
	state := func() pool.CredentialStatus {
		t.Helper()
		res := c.do("GET", "/api/pool", nil, nil)
		var st pool.Status
		res.decode(t, &st)
		if res.status != 200 || len(st.Credentials) != 1 {
			t.Fatalf("pool = %d %s", res.status, res.body)
		}
		return st.Credentials[0]
	}
	if got := state(); got.State != pool.StateCooling || got.Reason != "rate_limited" || got.CooldownUntil.IsZero() {
		t.Fatalf("after a persisted cooldown: %+v, want cooling for rate_limited", got)
	}
	if res := c.do("POST", "/api/credentials/"+v.ID+"/reset", nil, nil); res.status != http.StatusNoContent {
		t.Errorf("reset: %d %s", res.status, res.body)
	}
	if got := state(); got.State != pool.StateReady {
		t.Errorf("after reset: %+v, want ready", got)
	}
	wantError(t, c.do("POST", "/api/credentials/cred_unknown/reset", nil, nil), 404, "not_found", "")

	// Disabling reaches the pool through Changed; re-enabling resets it.
	c.do("PATCH", "/api/credentials/"+v.ID, map[string]any{"enabled": false}, nil)
	if got := state(); got.State != pool.StateDisabled {
		t.Errorf("after disabling: %+v, want disabled", got)
	}
	c.do("PATCH", "/api/credentials/"+v.ID, map[string]any{"enabled": true}, nil)
	if got := state(); got.State != pool.StateReady {
		t.Errorf("after re-enabling: %+v, want ready", got)
	}
	c.do("DELETE", "/api/credentials/"+v.ID, nil, nil)
	res = c.do("GET", "/api/pool", nil, nil)
	if strings.Contains(string(res.body), v.ID) {
		t.Errorf("a removed credential is still in the pool: %s", res.body)
	}

	t.Run("no pool", func(t *testing.T) {
		e := newEnv(t, envOptions{noPool: true})
		c := e.loggedIn(testPassword)
		wantError(t, c.do("GET", "/api/pool", nil, nil), 503, "pool_unavailable", "")
		wantError(t, c.do("POST", "/api/credentials/x/reset", nil, nil), 503, "pool_unavailable", "")
	})
}

func TestStoreUnavailable(t *testing.T) {
	t.Parallel()
	var u *unavailableStore
	e := newEnv(t, envOptions{wrapStore: func(s store.Store) store.Store { u = &unavailableStore{Store: s}; return u }})
	c := e.loggedIn(testPassword)
	u.down.Store(true)
	for _, tc := range []struct{ method, path string }{{"GET", "/api/credentials"}, {"GET", "/api/session"}} {
		res := c.do(tc.method, tc.path, nil, nil)
		d := wantError(t, res, 503, "store_unavailable", "")
		if d.Message != "store unavailable" {
			t.Errorf("message = %q, want %q", d.Message, "store unavailable")
		}
		if strings.Contains(string(res.body), "sqlite") || strings.Contains(string(res.body), "refused") {
			t.Errorf("the error leaks detail: %s", res.body)
		}
	}
	wantError(t, e.client().do("POST", "/api/login", map[string]any{"password": testPassword}, nil), 503, "store_unavailable", "")
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.client()
	wantError(t, c.do("GET", "/api/nope", nil, nil), 404, "not_found", "")
	wantError(t, c.do("GET", "/api/login", nil, nil), 405, "method_not_allowed", "")
	wantError(t, c.do("PUT", "/api/credentials", `{}`, nil), 405, "method_not_allowed", "")
}

func findCookie(t *testing.T, res response, name string) *http.Cookie {
	t.Helper()
	for _, line := range res.header.Values("Set-Cookie") {
		ck, err := http.ParseSetCookie(line)
		if err == nil && ck.Name == name {
			return ck
		}
	}
	t.Fatalf("no %s cookie in %q", name, res.header.Values("Set-Cookie"))
	return nil
}

// TestNoSecretInAnyResponse runs a whole session and checks that no answer
// (body or header) carries a stored secret: the Atlassian token, the admin
// password, the session id outside its Set-Cookie, the client token
// outside its one creation answer.
func TestNoSecretInAnyResponse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	var seen []response
	c := e.client()
	c.seen = &seen
	res := c.do("POST", "/api/login", map[string]any{"password": testPassword}, nil)
	var lr loginResponse
	res.decode(t, &lr)
	c.csrf = lr.CSRFToken
	sessionID := sessionCookieValue(t, c)

	v := c.addCredential("secret@example.com", atlassianToken)
	c.do("POST", "/api/credentials", map[string]any{"email": "secret@example.com", "token": atlassianToken}, nil) // 409
	c.do("POST", "/api/credentials", map[string]any{"email": "bad", "token": atlassianToken}, nil)                // 400
	c.do("POST", "/api/credentials", map[string]any{"email": "x@example.com", "token": atlassianToken + " x"}, nil)
	c.do("POST", "/api/credentials", `{"email":"x@example.com","token":`+`"`+atlassianToken+`",`, nil)
	c.do("GET", "/api/credentials", nil, nil)
	c.do("PATCH", "/api/credentials/"+v.ID, map[string]any{"label": "x"}, nil)
	c.do("GET", "/api/pool", nil, nil)
	created := c.do("POST", "/api/tokens", map[string]any{"name": "once"}, nil)
	var tok struct {
		Token string `json:"token"`
	}
	created.decode(t, &tok)
	c.do("GET", "/api/tokens", nil, nil)
	c.do("POST", "/api/password", map[string]any{"current": testPassword + "x", "new": "short"}, nil)
	c.do("POST", "/api/password", map[string]any{"current": testPassword + "x", "new": "long enough new password"}, nil)
	c.do("GET", "/api/session", nil, nil)

	secrets := map[string]string{
		"atlassian token":        atlassianToken,
		"atlassian token middle": atlassianToken[4 : len(atlassianToken)-4],
		"admin password":         testPassword,
		"client token":           tok.Token,
		"client token secret":    tok.Token[len(auth.TokenPrefix)+8:],
		"session id":             sessionID,
		"session key":            SessionKey(sessionID),
	}
	for i, r := range seen {
		for name, secret := range secrets {
			if secret == "" {
				t.Fatalf("empty secret %s", name)
			}
			if name == "client token" && string(r.body) == string(created.body) {
				continue
			}
			if name == "client token secret" && string(r.body) == string(created.body) {
				continue
			}
			if strings.Contains(string(r.body), secret) {
				t.Errorf("answer %d (%d) shows the %s: %s", i, r.status, name, r.body)
			}
			for k, vs := range r.header {
				if k == "Set-Cookie" && name == "session id" {
					continue
				}
				for _, hv := range vs {
					if strings.Contains(hv, secret) {
						t.Errorf("answer %d header %s shows the %s", i, k, name)
					}
				}
			}
		}
	}
}

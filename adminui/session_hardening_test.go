package adminui

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// A session opened before the current password was set is refused, even
// when it escaped the password change's DeleteAllSessions (a login still
// in flight during the change, or a delete that failed).
func TestSessionOlderThanPasswordRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.loggedIn(testPassword)
	if res := c.do("GET", "/api/session", nil, nil); res.status != http.StatusOK {
		t.Fatalf("session before: %d", res.status)
	}
	hash, err := auth.HashPassword("a brand new admin password")
	if err != nil {
		t.Fatal(err)
	}
	// The password changes without the sessions being deleted.
	if err := e.st.SetAdminPassword(t.Context(), store.AdminPassword{Hash: hash, UpdatedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if res := c.do("GET", "/api/session", nil, nil); res.status != http.StatusUnauthorized {
		t.Errorf("a session older than the password: %d, want 401", res.status)
	}
	if res := c.do("GET", "/", nil, nil); res.status != http.StatusSeeOther {
		t.Errorf("the dashboard with a session older than the password: %d, want a redirect to log in", res.status)
	}
	// A login with the new password works.
	e.loggedIn("a brand new admin password")
}

// While every password-check slot is taken, a login waits a bounded time
// and is then answered 503 busy with Retry-After, never by starting one
// more 19 MiB argon2id check.
func TestLoginBusyWhenHashSlotsTaken(t *testing.T) {
	e := newEnv(t, envOptions{})
	svc := e.admin.Service()
	for range hashSlots {
		svc.hashSem <- struct{}{}
	}
	res := e.client().do("POST", "/api/login", map[string]any{"password": testPassword}, nil)
	if res.status != http.StatusServiceUnavailable || res.header.Get("Retry-After") != "1" {
		t.Errorf("login with no free slot: %d (Retry-After %q), want 503 with Retry-After 1", res.status, res.header.Get("Retry-After"))
	}
	if d := res.apiError(t); d.code() != "busy" {
		t.Errorf("code %q, want busy", d.code())
	}
	res = e.client().post("/login", url.Values{"password": {testPassword}})
	wantPage(t, res, http.StatusServiceUnavailable, "Too many password checks")
	if got := res.header.Get("Retry-After"); got != "1" {
		t.Errorf("login page with no free slot: Retry-After %q, want 1", got)
	}
	<-svc.hashSem // one slot frees: logins work again
	e.loggedIn(testPassword)
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/schematest"
)

// chat sends one non-streamed chat completion with a bearer token.
func chat(t *testing.T, base, token, model string) (int, http.Header, []byte) {
	t.Helper()
	body := `{"model":"` + model + `","messages":[{"role":"user","content":"Hi"}]}`
	req, _ := http.NewRequestWithContext(context.Background(), "POST", base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, out
}

// TestAdminAPIFlow walks what an operator does without the UI: log in with
// the generated password, change it, add two credentials, create a token,
// serve requests spread over both credentials (one of them rate limited),
// read the pool, disable and delete a credential, and log out. Everything
// survives a restart.
func TestAdminAPIFlow(t *testing.T) {
	gw := fake.Start(t, fake.Options{Credentials: []fake.Credential{
		{ID: "a", Email: "a@example.com", Token: "token-a-secret-value"},
		{ID: "b", Email: "b@example.com", Token: "token-b-secret-value"},
	}})
	p := startProxy(t, map[string]string{"UPSTREAM_URL": gw.URL})
	a, _ := login(t, p.URL, p.generatedPassword(t))

	if status, body := a.do("GET", "/admin/api/credentials", nil); status != http.StatusForbidden || !bytes.Contains(body, []byte("password_change_required")) {
		t.Fatalf("before the password change: %d %s, want 403 password_change_required", status, body)
	}
	const newPassword = "a much better passphrase"
	if status, body := a.do("POST", "/admin/api/password", map[string]string{"current": p.generatedPassword(t), "new": newPassword}); status != http.StatusNoContent {
		t.Fatalf("change password: %d %s", status, body)
	}
	a, _ = login(t, p.URL, newPassword) // a password change ends every session

	var ids []string
	for _, c := range []struct{ email, token string }{{"a@example.com", "token-a-secret-value"}, {"b@example.com", "token-b-secret-value"}} {
		status, body := a.do("POST", "/admin/api/credentials", map[string]string{"email": c.email, "token": c.token})
		if status != http.StatusCreated {
			t.Fatalf("add credential: %d %s", status, body)
		}
		if bytes.Contains(body, []byte(c.token)) {
			t.Errorf("the credential's token is in the response: %s", body)
		}
		var cred struct{ ID string }
		json.Unmarshal(body, &cred)
		ids = append(ids, cred.ID)
	}
	if status, body := a.do("POST", "/admin/api/credentials", map[string]string{"email": "a@example.com", "token": "x"}); status != http.StatusConflict {
		t.Errorf("duplicate credential: %d %s, want 409", status, body)
	}
	status, body := a.do("POST", "/admin/api/tokens", map[string]string{"name": "e2e"})
	if status != http.StatusCreated {
		t.Fatalf("create token: %d %s", status, body)
	}
	var tok struct{ ID, Token string }
	json.Unmarshal(body, &tok)

	// Credential a answers 429 for its next 3 requests: requests flow to b.
	gw.Push("a", 3, fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterSeconds: 30})
	for i := range 6 {
		status, _, body := chat(t, p.URL, tok.Token, "claude-sonnet-4")
		if status != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, status, body)
		}
		schematest.Validate(t, schematest.ChatCompletion, body)
	}
	if n := gw.Stats("b").Requests; n < 3 {
		t.Errorf("credential b served %d requests, want at least 3 (round robin and failover)", n)
	}

	status, body = a.do("GET", "/admin/api/pool", nil)
	if status != http.StatusOK {
		t.Fatalf("pool: %d %s", status, body)
	}
	var pool struct {
		Credentials []struct{ ID, State, Reason string }
		Totals      struct{ Credentials, Cooling int }
	}
	if err := json.Unmarshal(body, &pool); err != nil {
		t.Fatal(err)
	}
	if pool.Totals.Credentials != 2 || pool.Totals.Cooling != 1 {
		t.Errorf("pool totals = %+v, want 2 credentials, 1 cooling (a is rate limited)", pool.Totals)
	}
	if bytes.Contains(body, []byte("secret-value")) {
		t.Error("the pool view shows a token")
	}

	gw.ClearQueue("a") // a recovers upstream; the operator resets its cooldown
	if status, body := a.do("POST", "/admin/api/credentials/"+ids[0]+"/reset", nil); status != http.StatusNoContent {
		t.Errorf("reset: %d %s", status, body)
	}
	if status, body := a.do("PATCH", "/admin/api/credentials/"+ids[1], map[string]bool{"enabled": false}); status != http.StatusOK {
		t.Errorf("disable: %d %s", status, body)
	}
	before := gw.Stats("b").Requests
	for range 3 {
		if status, _, body := chat(t, p.URL, tok.Token, "claude-sonnet-4"); status != http.StatusOK {
			t.Fatalf("after disabling b: %d %s", status, body)
		}
	}
	if gw.Stats("b").Requests != before {
		t.Error("a disabled credential still served requests")
	}

	if code := p.stop(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	p2 := startProxy(t, map[string]string{"UPSTREAM_URL": gw.URL, "DATA_DIR": p.DataDir})
	a2, _ := login(t, p2.URL, newPassword)
	if status, _, body := chat(t, p2.URL, tok.Token, "claude-sonnet-4"); status != http.StatusOK {
		t.Fatalf("after restart: %d %s", status, body)
	}
	for _, id := range ids {
		if status, body := a2.do("DELETE", "/admin/api/credentials/"+id, nil); status != http.StatusNoContent {
			t.Errorf("delete: %d %s", status, body)
		}
	}
	status, _, body = chat(t, p2.URL, tok.Token, "claude-sonnet-4")
	if status != http.StatusServiceUnavailable || !bytes.Contains(body, []byte("no_credentials")) {
		t.Errorf("with no credentials: %d %s, want 503 no_credentials", status, body)
	}
	schematest.Validate(t, schematest.ErrorResponse, body)
	if status, _ := a2.do("POST", "/admin/api/logout", nil); status != http.StatusNoContent {
		t.Errorf("logout: %d", status)
	}
	if status, _ := a2.do("GET", "/admin/api/pool", nil); status != http.StatusUnauthorized {
		t.Errorf("after logout: %d, want 401", status)
	}
}

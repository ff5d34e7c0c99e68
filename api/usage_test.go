package api

import (
	"net/http"
	"strings"
	"testing"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/usage"
)

// Every answered request is counted: successes with their credential and
// tokens (streamed or not), failures with the error the client got; a
// client's own bad request is not an upstream failure and is not counted.
func TestUsageRecorded(t *testing.T) {
	rec := usage.New(nil, usage.Config{})
	e := newEnv(t, envOptions{usage: rec, creds: []fake.Credential{testCred("c1", fake.Behavior{})}})
	if resp, body := e.chat(chatBody("")); resp.StatusCode != http.StatusOK {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	if resp, body := e.chat(chatBody(`"stream":true,"stream_options":{"include_usage":true}`)); resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d %s", resp.StatusCode, body)
	}
	if resp, _ := e.chat(`{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}`); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown model: %d", resp.StatusCode)
	}
	e.gw.SetBehavior("c1", fake.Behavior{Fault: fake.Unauthorized})
	if resp, _ := e.chat(chatBody("")); resp.StatusCode < 500 {
		t.Fatalf("with the only credential revoked: %d, want a 5xx", resp.StatusCode)
	}
	m := rec.Minutes(1)[0]
	if m.Requests != 3 || m.Failures != 1 || m.InputTokens == 0 || m.OutputTokens == 0 {
		t.Errorf("this minute: %+v; want 3 requests (2 served, 1 failed) with tokens", m)
	}
	// Newest first: what the client was told, after the attempt that failed.
	errs := rec.RecentErrors(5)
	if len(errs) != 2 || errs[0].Attempt || errs[0].Model != "anthropic:claude-sonnet-4@20250514" ||
		errs[0].Error != "credentials_invalid: all 1 credential is invalid (the upstream refused its token); an administrator must re-enable or replace it" {
		t.Errorf("recent errors: %+v", errs)
	}
	if len(errs) == 2 && (!errs[1].Attempt || errs[1].CredentialID != "c1" || errs[1].Error != "unauthorized (HTTP 401): Unauthorized") {
		t.Errorf("the failed attempt: %+v", errs[1])
	}
	for _, x := range errs {
		if strings.Contains(x.Error, "atl-c1-secret") {
			t.Errorf("a recent error holds the credential's token: %q", x.Error)
		}
	}
}

// Every failed attempt is noted for the dashboard, also when failover then
// serves the request (the client never sees it), for streams too; a
// client's own error is not the upstream's trouble and is not noted.
func TestAttemptFailuresRecorded(t *testing.T) {
	var rec *usage.Recorder
	var e *env
	// A fresh pool for each request: the first pick of a new pool is c1
	// (ties broken round robin from the first slot), which fails over to c2.
	for _, extra := range []string{"", `"stream":true`} {
		rec = usage.New(nil, usage.Config{})
		e = newEnv(t, envOptions{usage: rec, creds: []fake.Credential{
			testCred("c1", fake.Behavior{Fault: fake.RateLimitMinute}),
			testCred("c2", fake.Behavior{}),
		}})
		if resp, body := e.chat(chatBody(extra)); resp.StatusCode != http.StatusOK {
			t.Fatalf("chat %s: %d %s", extra, resp.StatusCode, body)
		}
		m := rec.Minutes(1)[0]
		if m.Requests != 1 || m.Failures != 0 || m.AttemptFailures != 1 {
			t.Errorf("%s: this minute: %+v; want 1 request served, no failure, 1 failed attempt", extra, m)
		}
		errs := rec.RecentErrors(10)
		if len(errs) != 1 {
			t.Fatalf("%s: recent errors: %+v, want the failed attempt", extra, errs)
		}
		x := errs[0]
		if !x.Attempt || x.CredentialID != "c1" || x.Model != "anthropic:claude-sonnet-4@20250514" ||
			!strings.HasPrefix(x.Error, "rate_limited (HTTP 429): ") {
			t.Errorf("%s: attempt error = %+v", extra, x)
		}
		if strings.Contains(x.Error, "atl-c1-secret") {
			t.Errorf("an attempt error holds the credential's token: %q", x.Error)
		}
	}

	// The upstream refusing the client's request: passed back, not an
	// upstream failure.
	e.gw.SetBehavior("c1", fake.Behavior{Fault: fake.BadRequest})
	e.gw.SetBehavior("c2", fake.Behavior{Fault: fake.BadRequest})
	if resp, _ := e.chat(chatBody("")); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("client error: %d, want 400", resp.StatusCode)
	}
	if m := rec.Minutes(1)[0]; m.AttemptFailures != 1 {
		t.Errorf("after a client error: %d failed attempts, want still 1", m.AttemptFailures)
	}
}

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
	errs := rec.RecentErrors(5)
	if len(errs) != 1 || errs[0].Model != "anthropic:claude-sonnet-4@20250514" || errs[0].Error != "credentials_cooling: all 1 credential is invalid" {
		t.Errorf("recent errors: %+v", errs)
	}
	for _, x := range errs {
		if strings.Contains(x.Error, "atl-c1-secret") {
			t.Errorf("a recent error holds the credential's token: %q", x.Error)
		}
	}
}

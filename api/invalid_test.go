package api

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// TestAllCredentialsInvalid: when every credential's token is refused
// (401), the client gets 503 credentials_invalid with a message saying so
// and what to do, and no Retry-After (nothing will change on a schedule),
// streamed or not, and later requests do not reach the upstream. Once one
// credential cools down instead, the answer is credentials_cooling with a
// Retry-After again.
func TestAllCredentialsInvalid(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{
		creds: []fake.Credential{
			testCred("c1", fake.Behavior{Fault: fake.Unauthorized}),
			testCred("c2", fake.Behavior{Fault: fake.Unauthorized}),
			testCred("c3", fake.Behavior{Fault: fake.Unauthorized}),
		},
		poolCfg: pool.Config{BackoffBase: time.Minute, BackoffMax: time.Minute},
	})
	want := wantError{http.StatusServiceUnavailable, "server_error", "credentials_invalid", "",
		"all 3 credentials are invalid (the upstream refused their tokens); an administrator must re-enable or replace them"}

	resp, body, reqs, _ := e.exchange(chatBody(""))
	checkError(t, resp, body, want)
	if got := resp.Header.Get("Retry-After"); got != "" {
		t.Errorf("Retry-After = %q, want none", got)
	}
	if len(reqs) != 3 {
		t.Errorf("first request: %d upstream requests (%q), want one per credential", len(reqs), credIDs(reqs))
	}
	for _, c := range e.pool.Status().Credentials {
		if c.State != pool.StateInvalid {
			t.Errorf("%s = %s, want invalid", c.ID, c.State)
		}
	}

	resp, body, reqs, _ = e.exchange(chatBody(`"stream":true`))
	checkError(t, resp, body, want)
	if got := resp.Header.Get("Retry-After"); got != "" {
		t.Errorf("stream: Retry-After = %q, want none", got)
	}
	if len(reqs) != 0 {
		t.Errorf("a request with every credential invalid reached the upstream: %q", credIDs(reqs))
	}

	// c3 is reset and then fails with a 5xx: it cools down for a minute
	// while the other two stay invalid.
	e.gw.SetBehavior("c3", fake.Behavior{Fault: fake.InternalError})
	if err := e.pool.Reset("c3"); err != nil {
		t.Fatal(err)
	}
	resp, body = e.chat(chatBody(""))
	checkError(t, resp, body, wantError{http.StatusBadGateway, "server_error", "upstream_error", "", "1 attempt"})
	resp, body, reqs, _ = e.exchange(chatBody(""))
	checkError(t, resp, body, wantError{http.StatusServiceUnavailable, "server_error", "credentials_cooling", "",
		"all 1 credential is cooling down; earliest retry in "})
	if !strings.Contains(string(body), " s (2 more are invalid)") {
		t.Errorf("body %s does not count the 2 invalid credentials", body)
	}
	if got := retryAfterHeader(t, resp); got < 47 || got > 72 {
		t.Errorf("Retry-After = %d, want c3's cooldown: 60 s ± 20%%", got)
	}
	if len(reqs) != 0 {
		t.Errorf("a request with nothing usable reached the upstream: %q", credIDs(reqs))
	}
}

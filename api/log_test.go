package api

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/internal/logtest"
)

// accessLines returns the access log lines of a route.
func accessLines(t *testing.T, logs *logtest.Buffer, route string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range logs.Messages(t, "request") {
		if m["route"] == route {
			out = append(out, m)
		}
	}
	return out
}

func TestAccessLogAttributes(t *testing.T) {
	var logs logtest.Buffer
	e := newEnv(t, envOptions{
		logHandler: slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}),
		creds:      []fake.Credential{testCred("c1", fake.Behavior{})},
	})
	if resp, body := e.chat(chatBody("")); resp.StatusCode != 200 {
		t.Fatalf("status = %d (%s)", resp.StatusCode, body)
	}
	if resp, body := e.chat(chatBody(`"stream":true`)); resp.StatusCode != 200 {
		t.Fatalf("stream status = %d (%s)", resp.StatusCode, body)
	}
	eventually(t, 2*time.Second, "two access log lines", func() bool {
		return len(accessLines(t, &logs, "/v1/chat/completions")) == 2
	})
	for i, line := range accessLines(t, &logs, "/v1/chat/completions") {
		want := map[string]any{
			"credential_id": "c1", "attempts": float64(1), "outcome": "success",
			"model": "anthropic:claude-sonnet-4@20250514", "status": float64(200), "stream": i == 1,
		}
		for k, v := range want {
			if line[k] != v {
				t.Errorf("line %d: %s = %v, want %v (line %v)", i, k, line[k], v, line)
			}
		}
		if line["token_id"] == nil || line["request_id"] == nil {
			t.Errorf("line %d has no token_id or request_id: %v", i, line)
		}
	}
	all := logs.String()
	for _, secret := range []string{e.token, "atl-c1-secret"} {
		if strings.Contains(all, secret) {
			t.Errorf("the logs contain the secret %q", secret)
		}
	}
}

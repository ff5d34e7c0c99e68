package main

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/internal/logtest"
	"github.com/atlassian-proxy/atlassian-proxy/internal/redistest"
	"github.com/atlassian-proxy/atlassian-proxy/ratelimit"
	redisstore "github.com/atlassian-proxy/atlassian-proxy/store/redis"
)

// warnings returns the WARN records of a JSON log with message msg.
func warnings(t *testing.T, logs *logtest.Buffer, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, rec := range logs.Messages(t, msg) {
		if rec["level"] == "WARN" {
			out = append(out, rec)
		}
	}
	return out
}

const limiterWarningMsg = "a shared rate limit store failed; the limit holds per replica until Redis answers"

// A shared (Redis) limiter store that stops answering keeps limiting per
// replica, and says so in the log: one warning naming the limiter and
// Redis's error, not one per request, and never the Redis password.
func TestSharedLimiterFailureLogged(t *testing.T) {
	const password = "redis-canary-pw-0a9b8c7d6e5f4a3b"
	srv := redistest.StartWith(t, redistest.Config{Password: password})
	st, err := redisstore.Open(t.Context(), redisstore.Options{
		URL: "redis://:" + password + "@" + srv.Addr() + "/0", OpTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	logs := &logtest.Buffer{}
	a := &app{logger: slog.New(slog.NewJSONHandler(logs, nil)), redis: st}
	lim, err := a.tokenLimiters(3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lim.Close(t.Context()) })

	if _, remaining, _, ok, err := lim.Take(t.Context(), "tok"); err != nil || !ok || remaining != 2 {
		t.Fatalf("Take with Redis up: remaining %d, ok %v, err %v", remaining, ok, err)
	}
	srv.Stop(t)
	// Redis is away: the in-process store answers, with its own (full)
	// bucket of 3, and refuses the fourth request: still a limit.
	for i := range 4 {
		_, _, _, ok, err := lim.Take(t.Context(), "tok")
		if err != nil || ok != (i < 3) {
			t.Fatalf("Take %d with Redis down: ok %v, err %v", i+1, ok, err)
		}
	}
	// After ratelimit.RetryAfter the next call asks Redis again, and fails
	// again: within limiterWarnEvery that is not a second line.
	time.Sleep(ratelimit.RetryAfter + 100*time.Millisecond)
	lim.Take(t.Context(), "tok")

	w := warnings(t, logs, limiterWarningMsg)
	if len(w) != 1 {
		t.Fatalf("%d limiter warnings, want 1:\n%s", len(w), logs.String())
	}
	if w[0]["limiter"] != "token:3" {
		t.Errorf("limiter = %v, want token:3", w[0]["limiter"])
	}
	if e, _ := w[0]["err"].(string); e == "" {
		t.Error("the warning has no err")
	}
	if strings.Contains(logs.String(), password) {
		t.Error("the log holds the Redis password")
	}
}

// limiterWarning writes at most one line per interval, and the next line
// counts the failures it stood for.
func TestLimiterWarningThrottle(t *testing.T) {
	logs := &logtest.Buffer{}
	w := &limiterWarning{logger: slog.New(slog.NewJSONHandler(logs, nil)), name: "login:ip", every: time.Hour}
	boom := errors.New("connection refused")
	for range 5 {
		w.failed(boom)
	}
	if got := warnings(t, logs, limiterWarningMsg); len(got) != 1 || got[0]["failures"] != 1.0 {
		t.Fatalf("after 5 failures within the interval: %v", got)
	}
	w.mu.Lock()
	w.loggedAt = w.loggedAt.Add(-2 * time.Hour) // the interval is over
	w.mu.Unlock()
	w.failed(boom)
	got := warnings(t, logs, limiterWarningMsg)
	if len(got) != 2 {
		t.Fatalf("%d warnings after the interval, want 2", len(got))
	}
	if got[1]["failures"] != 5.0 || got[1]["limiter"] != "login:ip" || got[1]["err"] != "connection refused" {
		t.Errorf("second warning: %v (want 5 failures: 4 held back and this one)", got[1])
	}
}

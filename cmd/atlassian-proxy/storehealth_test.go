package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atlassian-proxy/atlassian-proxy/internal/logtest"
	"github.com/atlassian-proxy/atlassian-proxy/internal/metrictest"
	"github.com/atlassian-proxy/atlassian-proxy/internal/redistest"
	"github.com/atlassian-proxy/atlassian-proxy/store"
	redisstore "github.com/atlassian-proxy/atlassian-proxy/store/redis"
	"github.com/atlassian-proxy/atlassian-proxy/store/sqlite"
)

// storeHealth sweeps idle admin sessions (keeping live ones), and reports
// a store that stops answering in /ready's problems and the degraded
// gauge; the lost-data report comes from the syncer through setLost.
func TestStoreHealth(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "health.db"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for id, seen := range map[string]time.Time{"idle": now.Add(-time.Hour), "live": now} {
		if err := st.CreateSession(t.Context(), store.Session{ID: id, CSRFToken: "c", CreatedAt: seen, LastSeenAt: seen}); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	h := newStoreHealth(st, reg, slog.New(slog.DiscardHandler), nil)
	h.interval = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.run(ctx) }()
	defer func() { cancel(); <-done }()

	eventually(t, 5*time.Second, "the idle session is swept", func() bool {
		_, err := st.GetSession(t.Context(), "idle")
		return err != nil
	})
	if _, err := st.GetSession(t.Context(), "live"); err != nil {
		t.Errorf("the live session was swept too: %v", err)
	}
	if p := h.problems(); len(p) != 0 {
		t.Errorf("problems with a healthy store: %v", p)
	}

	h.setLost(true)
	if p := h.problems(); !slices.Equal(p, []string{"store_data_lost"}) {
		t.Errorf("problems after a data loss: %v", p)
	}
	h.setLost(false)

	st.Close() // the store stops answering
	eventually(t, 5*time.Second, "a store that does not answer is reported", func() bool {
		return slices.Equal(h.problems(), []string{"store_unavailable"})
	})
	v := metrictest.Values(t, reg)
	if v["atlassian_proxy_store_degraded"] != 1 || v["atlassian_proxy_store_data_lost"] != 0 {
		t.Errorf("gauges: degraded %v, data lost %v", v["atlassian_proxy_store_degraded"], v["atlassian_proxy_store_data_lost"])
	}
	if _, ok := v["atlassian_proxy_store_errors_total"]; !ok {
		t.Error("store_errors_total is not exported with the embedded store")
	}
}

// A sweep of idle admin sessions that fails is logged as a warning (once:
// the next sweep is due only sessionSweepEvery later), naming the store's
// error but no secret: not the Redis password (here in the URL too), not a
// session id or CSRF token.
func TestStoreHealthSweepFailure(t *testing.T) {
	const (
		sessID = "sess-canary-5f1d0c7e9a2b4c6d8e0f"
		csrf   = "csrf-canary-9b8a7c6d5e4f3a2b1c0d"
	)
	tests := []struct {
		name string
		// open returns a working store, what makes it stop answering, and
		// the secrets it was given.
		open func(t *testing.T) (st store.Store, breakIt func(), secrets []string)
	}{
		{
			name: "embedded store closed",
			open: func(t *testing.T) (store.Store, func(), []string) {
				st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "health.db"))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				return st, func() { st.Close() }, nil
			},
		},
		{
			name: "redis stopped",
			open: func(t *testing.T) (store.Store, func(), []string) {
				const password = "redis-canary-pw-3e7a91c4d2b8f605"
				srv := redistest.StartWith(t, redistest.Config{Password: password})
				st, err := redisstore.Open(t.Context(), redisstore.Options{
					URL: "redis://:" + password + "@" + srv.Addr() + "/0", OpTimeout: 500 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				return st, func() { srv.Stop(t) }, []string{password}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, breakIt, secrets := tt.open(t)
			secrets = append(secrets, sessID, csrf)
			old := time.Now().UTC().Add(-48 * time.Hour) // idle: the sweep would delete it
			if err := st.CreateSession(t.Context(), store.Session{ID: sessID, CSRFToken: csrf, CreatedAt: old, LastSeenAt: old}); err != nil {
				t.Fatal(err)
			}
			breakIt()

			logs := &logtest.Buffer{}
			h := newStoreHealth(st, prometheus.NewRegistry(), slog.New(slog.NewJSONHandler(logs, nil)), nil)
			h.interval = 10 * time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- h.run(ctx) }()
			defer func() { cancel(); <-done }()

			sweepWarnings := func() []map[string]any { return logs.Messages(t, "sweeping idle admin sessions failed") }
			eventually(t, 5*time.Second, "the failed sweep is logged", func() bool { return len(sweepWarnings()) > 0 })
			// More ticks: no second sweep (not within sessionSweepEvery, nor
			// while the store is reported as not answering).
			time.Sleep(10 * h.interval)
			w := sweepWarnings()
			if len(w) != 1 {
				t.Fatalf("%d sweep warnings, want 1: %v", len(w), w)
			}
			if w[0]["level"] != "WARN" {
				t.Errorf("sweep failure logged at %v, want WARN", w[0]["level"])
			}
			if e, _ := w[0]["err"].(string); !strings.Contains(e, "delete sessions before") {
				t.Errorf("the warning's err = %q, want the store's error for the sweep", e)
			}
			out := logs.String()
			for i, s := range secrets {
				if strings.Contains(out, s) {
					for _, s := range secrets {
						out = strings.ReplaceAll(out, s, "[secret]")
					}
					t.Errorf("the log holds secret %d of %d (shown as [secret]):\n%s", i+1, len(secrets), out)
				}
			}
		})
	}
}

package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atlassian-proxy/atlassian-proxy/internal/metrictest"
	"github.com/atlassian-proxy/atlassian-proxy/store"
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

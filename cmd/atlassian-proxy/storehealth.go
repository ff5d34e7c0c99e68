package main

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atlassian-proxy/atlassian-proxy/adminui"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// storeHealth watches the store: when it stops answering the server keeps
// serving chat requests from what it holds in memory (tokens, credentials,
// cooldowns) and says so in /ready's body, a metric and the log, instead of
// failing. Admin writes fail meanwhile with 503 store_unavailable.
type storeHealth struct {
	st       store.Store
	logger   *slog.Logger
	interval time.Duration

	degraded atomic.Bool
	lost     atomic.Bool
	gDegr    prometheus.Gauge
	gLost    prometheus.Gauge
}

func newStoreHealth(st store.Store, reg prometheus.Registerer, logger *slog.Logger, errors func() int64) *storeHealth {
	h := &storeHealth{st: st, logger: logger, interval: time.Second,
		gDegr: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "atlassian_proxy", Name: "store_degraded",
			Help: "1 while the store (Redis or the embedded file) does not answer and the server serves from memory.",
		}),
		gLost: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "atlassian_proxy", Name: "store_data_lost",
			Help: "1 while the shared store records that it lost its data (Redis restarted empty), from when a replica noticed until an import clears the record; also on replicas started since.",
		}),
	}
	reg.MustRegister(h.gDegr, h.gLost)
	if errors == nil {
		errors = func() int64 { return 0 } // the embedded store has no network to fail
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "atlassian_proxy", Name: "store_errors_total",
		Help: "Store (Redis) commands that failed; always 0 with the embedded store.",
	}, func() float64 { return float64(errors()) }))
	return h
}

// problems lists what /ready reports while the server still serves.
func (h *storeHealth) problems() []string {
	var p []string
	if h.degraded.Load() {
		p = append(p, "store_unavailable")
	}
	if h.lost.Load() {
		p = append(p, "store_data_lost")
	}
	return p
}

// setLost is the syncer's report of the store's loss record appearing
// (true) or being cleared by an import or the operator (false).
func (h *storeHealth) setLost(lost bool) {
	h.lost.Store(lost)
	h.gLost.Set(b2f(lost))
}

// sessionSweepEvery is how often sessions idle for longer than the admin
// UI's idle timeout are deleted (they are refused once idle anyway; this
// keeps the store from growing).
const sessionSweepEvery = 10 * time.Minute

// run pings the store every interval, and sweeps idle sessions, until ctx
// ends. A sweep runs beside the pings: a store that stalls during one must
// not delay the ping that reports it.
func (h *storeHealth) run(ctx context.Context) error {
	t := time.NewTicker(h.interval)
	defer t.Stop()
	var sweeps sync.WaitGroup
	defer sweeps.Wait()
	lastSweep := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// A sweep takes at most 5 s, far less than sessionSweepEvery: one
		// at a time.
		if time.Since(lastSweep) >= sessionSweepEvery && !h.degraded.Load() {
			lastSweep = time.Now()
			sweeps.Go(func() { h.sweep(ctx) })
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := h.st.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		was := h.degraded.Swap(err != nil)
		h.gDegr.Set(b2f(err != nil))
		switch {
		case err != nil && !was:
			h.logger.Error("the store does not answer: serving chat requests with the credentials, tokens and "+
				"cooldowns held in memory; admin changes fail until it is back", "err", err)
		case err == nil && was:
			h.logger.Warn("the store answers again; reconciling with it")
		}
	}
}

// sweep deletes the sessions idle for longer than the admin UI's timeout.
func (h *storeHealth) sweep(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := h.st.DeleteSessionsBefore(sctx, time.Now().Add(-adminui.DefaultSessionIdle))
	switch {
	case err != nil && ctx.Err() == nil:
		h.logger.Warn("sweeping idle admin sessions failed", "err", err)
	case n > 0:
		h.logger.Info("swept idle admin sessions", "count", n)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

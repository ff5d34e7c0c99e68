package pool

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "atlassian_proxy"

// metrics is the pool's metric set; a nil *metrics records nothing.
type metrics struct {
	attempts  *prometheus.CounterVec
	cooldowns *prometheus.CounterVec
	checks    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, p *Pool) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "upstream_attempts_total",
			Help: "Upstream attempts by credential id and outcome.",
		}, []string{"credential", "outcome"}),
		cooldowns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "pool", Name: "cooldowns_total",
			Help: "Credential cooldowns started, by reason.",
		}, []string{"reason"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "pool", Name: "checks_total",
			Help: "Background credits checks, by outcome.",
		}, []string{"outcome"}),
	}
	for _, o := range Outcomes() {
		if penalty(o) && o != OutcomeUnauthorized {
			m.cooldowns.WithLabelValues(o.String())
		}
	}
	logsDropped := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "pool", Name: "log_records_dropped_total",
		Help: "Credential log records dropped because the pool's log queue was full.",
	}, func() float64 { return float64(p.LogsDropped()) })
	for _, c := range []prometheus.Collector{m.attempts, m.cooldowns, m.checks, logsDropped, newCollector(p)} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("pool: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) cooldown(reason Outcome) {
	if m != nil {
		m.cooldowns.WithLabelValues(reason.String()).Inc()
	}
}

func (m *metrics) check(o Outcome) {
	if m != nil {
		m.checks.WithLabelValues(o.String()).Inc()
	}
}

// forget drops a removed credential's series.
func (m *metrics) forget(id string) {
	if m != nil {
		m.attempts.DeletePartialMatch(prometheus.Labels{"credential": id})
	}
}

// attemptCounters caches one actor's counters, created on first use so that
// an idle credential costs no series.
type attemptCounters struct {
	vec *prometheus.CounterVec
	id  string
	c   [numOutcomes]prometheus.Counter
}

func (a *attemptCounters) init(m *metrics, id string) {
	if m != nil {
		a.vec, a.id = m.attempts, id
	}
}

func (a *attemptCounters) inc(o Outcome) {
	if a.vec == nil || o >= numOutcomes {
		return
	}
	if a.c[o] == nil {
		a.c[o] = a.vec.WithLabelValues(a.id, o.String())
	}
	a.c[o].Inc()
}

// collector reports gauges computed from the snapshot at scrape time.
type collector struct {
	p                          *Pool
	credentials, inFlight, cap *prometheus.Desc
}

func newCollector(p *Pool) *collector {
	return &collector{
		p: p,
		credentials: prometheus.NewDesc(namespace+"_pool_credentials",
			"Credentials by state (ready, cooling, invalid, disabled).", []string{"state"}, nil),
		inFlight: prometheus.NewDesc(namespace+"_pool_in_flight",
			"Requests holding a credential lease.", nil, nil),
		cap: prometheus.NewDesc(namespace+"_pool_capacity",
			"Sum of the concurrency limits of ready credentials.", nil, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.credentials
	ch <- c.inFlight
	ch <- c.cap
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	t := c.p.Status().Totals
	for state, n := range map[string]int{StateReady: t.Ready, StateCooling: t.Cooling,
		StateInvalid: t.Invalid, StateDisabled: t.Disabled} {
		ch <- prometheus.MustNewConstMetric(c.credentials, prometheus.GaugeValue, float64(n), state)
	}
	ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(c.p.inFlight.Load()))
	ch <- prometheus.MustNewConstMetric(c.cap, prometheus.GaugeValue, float64(t.Capacity))
}

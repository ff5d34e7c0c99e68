package dispatch

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

const namespace = "atlassian_proxy"

// metrics is the dispatcher's metric set. Without a Registerer its
// collectors exist but are registered nowhere.
type metrics struct {
	requests  *prometheus.CounterVec
	retries   *prometheus.CounterVec
	failovers prometheus.Counter
	waiting   prometheus.GaugeFunc
	waitTime  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, q *queue) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "dispatch", Name: "requests_total",
			Help: "Dispatched requests by result: success, client_error, forbidden, or the error kind.",
		}, []string{"result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "dispatch", Name: "retries_total",
			Help: "Attempts on another credential, by the outcome of the attempt before.",
		}, []string{"outcome"}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "dispatch", Name: "failovers_total",
			Help: "Requests that committed to a credential after at least one failed attempt.",
		}),
		waiting: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "dispatch", Name: "queue_waiting",
			Help: "Requests waiting for a free credential slot.",
		}, func() float64 { return float64(q.len()) }),
		waitTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "dispatch", Name: "queue_wait_seconds",
			Help:    "Time requests spent waiting for a free credential slot.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 2.5, 5, 10, 30},
		}),
	}
	for _, r := range []string{"success", "client_error", "forbidden"} {
		m.requests.WithLabelValues(r)
	}
	for k := range kindNames {
		if kindNames[k] != "" {
			m.requests.WithLabelValues(kindNames[k])
		}
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.retries, m.failovers, m.waiting, m.waitTime} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("dispatch: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) result(r string) { m.requests.WithLabelValues(r).Inc() }

func (m *metrics) retry(after pool.Outcome) { m.retries.WithLabelValues(after.String()).Inc() }

// resultOf is the requests_total label of one Do.
func resultOf(err error) string {
	var e *Error
	switch {
	case err == nil:
		return "success"
	case errors.As(err, &e):
		return e.Kind.String()
	}
	var oe interface{ Outcome() pool.Outcome }
	if errors.As(err, &oe) && oe.Outcome() == pool.OutcomeForbidden {
		return "forbidden"
	}
	return "client_error"
}

package observability

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The rate-limit counter has one owner: the first caller registers it, the
// next ones (the API, the admin UI) get that same counter; a collector of
// another kind or shape under its name is an error naming it.
func TestRateLimitRejections(t *testing.T) {
	reg := prometheus.NewRegistry()
	first, err := RateLimitRejections(reg)
	if err != nil {
		t.Fatal(err)
	}
	second, err := RateLimitRejections(reg)
	if err != nil || second != first {
		t.Fatalf("second call = %p, %v; want the first counter %p", second, err, first)
	}
	second.WithLabelValues("token").Inc()
	if got := testCounter(t, first, "token"); got != 1 {
		t.Errorf("first counter's token = %v, want 1 (one counter)", got)
	}

	const name = MetricsNamespace + "_rate_limit_rejections_total"
	for _, tc := range []struct {
		name  string
		other prometheus.Collector
		want  string
	}{
		{"a gauge", prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: rateLimitRejectionsHelp}, []string{"limit"}), "not a counter vector"},
		{"other labels", prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: rateLimitRejectionsHelp}, []string{"limit", "route"}), "different label names"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			reg.MustRegister(tc.other)
			c, err := RateLimitRejections(reg)
			if c != nil || err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("RateLimitRejections = %v, %v; want an error naming %s: %s", c, err, name, tc.want)
			}
		})
	}
}

func testCounter(t *testing.T, c *prometheus.CounterVec, limit string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "limit" && l.GetValue() == limit {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

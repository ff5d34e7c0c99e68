package adminui

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atlassian-proxy/atlassian-proxy/observability"
)

// The login throttling's refusals are counted in the proxy's one
// rate-limit counter, atlassian_proxy_rate_limit_rejections_total, next to
// the API's limit="token". These are the label values the admin UI adds:
// a refusal by the per-client limit (LoginAttemptsPerIP: logins and
// password changes) or by the total one (LoginAttemptsTotal: logins).
const (
	LimitLoginIP    = "login_ip"
	LimitLoginTotal = "login_total"
)

// rejectionsName is the counter's full name; rejectionsHelp its help when
// the admin UI is the first to register it.
const (
	rejectionsName = observability.MetricsNamespace + "_rate_limit_rejections_total"
	rejectionsHelp = "Requests refused by a rate limit, by limit (token: the per-token limit; login_ip, login_total: admin login throttling per client address and in all)."
)

// loginRejections returns the rate-limit counter of reg with the login
// limits at zero; nil for a nil reg. The API registers the counter too:
// whichever comes second uses the first's (the API itself refuses a second
// registration, so the admin handler is built after it). A registry that
// can be gathered lends its help text, so that the two need not repeat it
// word for word.
func loginRejections(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	if reg == nil {
		return nil, nil
	}
	help := rejectionsHelp
	if g, ok := reg.(prometheus.Gatherer); ok {
		mfs, err := g.Gather()
		if err != nil {
			return nil, fmt.Errorf("adminui: read the registry: %w", err)
		}
		for _, mf := range mfs {
			if mf.GetName() == rejectionsName && mf.GetHelp() != "" {
				help = mf.GetHelp()
			}
		}
	}
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: observability.MetricsNamespace, Name: "rate_limit_rejections_total", Help: help,
	}, []string{"limit"})
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("adminui: register %s: %w", rejectionsName, err)
		}
		existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return nil, fmt.Errorf("adminui: %s is registered as a %T, not a counter vector", rejectionsName, are.ExistingCollector)
		}
		c = existing
	}
	for _, l := range []string{LimitLoginIP, LimitLoginTotal} {
		c.WithLabelValues(l)
	}
	return c, nil
}

// rejected counts one login attempt refused by limit.
func (a *Admin) rejected(limit string) {
	if a.rejections != nil {
		a.rejections.WithLabelValues(limit).Inc()
	}
}

package adminui

import (
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

// loginRejections returns the proxy's rate-limit counter on reg
// (observability.RateLimitRejections, which the API uses too) with the
// login limits at zero; nil for a nil reg.
func loginRejections(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	if reg == nil {
		return nil, nil
	}
	c, err := observability.RateLimitRejections(reg)
	if err != nil {
		return nil, fmt.Errorf("adminui: register the rate-limit counter: %w", err)
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

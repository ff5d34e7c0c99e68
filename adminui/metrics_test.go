package adminui

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atlassian-proxy/atlassian-proxy/internal/metrictest"
	"github.com/atlassian-proxy/atlassian-proxy/observability"
)

// The counter's name, and a help text for look-alike collectors.
const (
	rejectionsName = "atlassian_proxy_rate_limit_rejections_total"
	rejectionsHelp = "Requests refused by a rate limit."
)

// apiRejections takes the rate-limit counter as the API does before the
// admin handler is built (limit "token" at zero).
func apiRejections(t *testing.T, reg prometheus.Registerer) *prometheus.CounterVec {
	t.Helper()
	c, err := observability.RateLimitRejections(reg)
	if err != nil {
		t.Fatal(err)
	}
	c.WithLabelValues("token")
	return c
}

func rejections(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for k, v := range metrictest.Values(t, reg) {
		if limit, ok := strings.CutPrefix(k, rejectionsName+",limit="); ok {
			out[limit] = v
		}
	}
	return out
}

// TestLoginRejectionsCounted: refused logins and password changes count
// in atlassian_proxy_rate_limit_rejections_total, in the API's counter,
// by the limit that refused them; both limits exist at zero.
func TestLoginRejectionsCounted(t *testing.T) {
	t.Parallel()
	t.Run("per client", func(t *testing.T) {
		t.Parallel()
		reg := prometheus.NewRegistry()
		apiCounter := apiRejections(t, reg)
		e := newEnv(t, envOptions{reg: reg, cfg: Config{LoginAttemptsPerIP: 2, LoginAttemptsTotal: 100}})
		if got := rejections(t, reg); len(got) != 3 || got["token"] != 0 || got[LimitLoginIP] != 0 || got[LimitLoginTotal] != 0 {
			t.Fatalf("before any login: %v, want token, login_ip and login_total at zero", got)
		}
		anon := e.client()
		for range 2 {
			anon.post("/login", url.Values{"password": {"wrong password"}})
		}
		wantPage(t, anon.post("/login", url.Values{"password": {testPassword}}), http.StatusTooManyRequests)
		wantError(t, anon.do("POST", "/api/login", map[string]any{"password": testPassword}, nil), http.StatusTooManyRequests, "too_many_attempts", "")
		got := rejections(t, reg)
		if got[LimitLoginIP] != 2 || got[LimitLoginTotal] != 0 || got["token"] != 0 {
			t.Errorf("after two refused logins: %v, want login_ip 2", got)
		}
		apiCounter.WithLabelValues("token").Inc() // one counter: the API's counts show with the admin UI's
		if got := rejections(t, reg); got["token"] != 1 || got[LimitLoginIP] != 2 {
			t.Errorf("the API's and the admin UI's counts are apart: %v", got)
		}
	})
	t.Run("in total", func(t *testing.T) {
		t.Parallel()
		reg := prometheus.NewRegistry() // the admin UI alone registers the counter
		e := newEnv(t, envOptions{reg: reg, cfg: Config{LoginAttemptsPerIP: 100, LoginAttemptsTotal: 2}})
		anon := e.client()
		for range 2 {
			anon.post("/login", url.Values{"password": {"wrong password"}})
		}
		wantPage(t, anon.post("/login", url.Values{"password": {testPassword}}), http.StatusTooManyRequests)
		if got := rejections(t, reg); got[LimitLoginTotal] != 1 || got[LimitLoginIP] != 0 {
			t.Errorf("after a login refused by the total limit: %v, want login_total 1", got)
		}
	})
	t.Run("password change", func(t *testing.T) {
		t.Parallel()
		reg := prometheus.NewRegistry()
		e := newEnv(t, envOptions{reg: reg, cfg: Config{LoginAttemptsPerIP: 2, LoginAttemptsTotal: 100}})
		c := e.pageLoggedIn(testPassword) // one attempt
		c.post("/password", url.Values{"current": {"wrong current password"}, "new": {"a new password here"}, "confirm": {"a new password here"}})
		wantPage(t, c.post("/password", url.Values{"current": {testPassword}, "new": {"a new password here"}, "confirm": {"a new password here"}}),
			http.StatusTooManyRequests)
		if got := rejections(t, reg); got[LimitLoginIP] != 1 {
			t.Errorf("after a refused password change: %v, want login_ip 1", got)
		}
	})
}

func TestLoginRejectionsRegistration(t *testing.T) {
	t.Parallel()
	st, c := openStoreCipher(t)
	t.Run("a nil registerer counts nothing", func(t *testing.T) {
		got, err := loginRejections(nil)
		if got != nil || err != nil {
			t.Errorf("loginRejections(nil) = %v, %v", got, err)
		}
	})
	t.Run("a registerer that cannot be gathered", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		wrapped := prometheus.WrapRegistererWith(nil, reg) // registers into reg, cannot be gathered
		a, err := New(Config{}, Deps{Store: st, Cipher: c, Registerer: wrapped})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if got := rejections(t, reg); len(got) != 2 {
			t.Errorf("series = %v, want login_ip and login_total", got)
		}
	})
	for _, tc := range []struct {
		name  string
		other prometheus.Collector
		want  string
	}{
		{"other labels", prometheus.NewCounterVec(prometheus.CounterOpts{Name: rejectionsName, Help: rejectionsHelp}, []string{"limit", "route"}),
			"different label names"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			if err := reg.Register(tc.other); err != nil {
				t.Fatal(err)
			}
			a, err := New(Config{}, Deps{Store: st, Cipher: c, Registerer: reg})
			if err == nil || a != nil || !strings.Contains(err.Error(), rejectionsName) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, %v; want an error naming %s: %s", a, err, rejectionsName, tc.want)
			}
		})
	}
}

package adminui

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

func TestClientIPBehindTrustedProxies(t *testing.T) {
	a := &Admin{cfg: Config{TrustedProxies: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32"),
	}}}
	cases := []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"untrusted peer: its header is ignored", "203.0.113.9:4000", []string{"198.51.100.1"}, "203.0.113.9:4000"},
		{"trusted peer: the client it names", "10.1.2.3:5000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"a forged left part is not used", "10.1.2.3:5000", []string{"1.2.3.4, 198.51.100.1"}, "198.51.100.1"},
		{"a chain of trusted proxies is skipped", "127.0.0.1:5000", []string{"198.51.100.7, 10.9.9.9"}, "198.51.100.7"},
		{"several header lines", "10.1.2.3:5000", []string{"1.1.1.1", "198.51.100.2"}, "198.51.100.2"},
		{"no header", "10.1.2.3:5000", nil, "10.1.2.3:5000"},
		{"a malformed hop", "10.1.2.3:5000", []string{"198.51.100.1, not-an-ip"}, "10.1.2.3:5000"},
		{"only trusted hops: the one our proxy saw, not the balancer", "10.1.2.3:5000", []string{"10.0.0.1, 10.0.0.2"}, "10.0.0.2"},
		{"a hop with a port", "10.1.2.3:5000", []string{"198.51.100.4:4711"}, "198.51.100.4"},
		{"an IPv6 hop with a port", "10.1.2.3:5000", []string{"[2001:db8::5]:4711"}, "2001:db8::5"},
		{"a bracketed IPv6 hop", "10.1.2.3:5000", []string{"[2001:db8::6]"}, "2001:db8::6"},
		{"IPv4-mapped peer", "[::ffff:10.1.2.3]:5000", []string{"198.51.100.3"}, "198.51.100.3"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/api/login", nil)
			r.RemoteAddr = c.peer
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := a.clientIP(r); got != c.want {
				t.Errorf("clientIP = %q, want %q", got, c.want)
			}
		})
	}
	none := &Admin{}
	r := httptest.NewRequest("POST", "/api/login", nil)
	r.RemoteAddr = "10.1.2.3:5000"
	r.Header.Set("X-Forwarded-For", "198.51.100.1")
	if got := none.clientIP(r); got != r.RemoteAddr {
		t.Errorf("without TrustedProxies: clientIP = %q, want the peer", got)
	}
}

// Behind a trusted load balancer, login throttling counts each client
// apart; a client cannot escape its bucket by sending its own header.
func TestLoginThrottlePerForwardedClient(t *testing.T) {
	e := newEnv(t, envOptions{cfg: Config{
		LoginAttemptsPerIP: 3, LoginAttemptsTotal: 100,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	}})
	c := e.client()
	try := func(xff string) int {
		return c.do("POST", "/api/login", map[string]any{"password": "wrong password here"}, map[string]string{"X-Forwarded-For": xff}).status
	}
	for i := range 3 {
		if s := try("198.51.100.1"); s != http.StatusUnauthorized {
			t.Fatalf("attempt %d of client 1: %d, want 401", i, s)
		}
	}
	if s := try("198.51.100.1"); s != http.StatusTooManyRequests {
		t.Errorf("4th attempt of client 1: %d, want 429", s)
	}
	if s := try("1.2.3.4, 198.51.100.1"); s != http.StatusTooManyRequests {
		t.Errorf("client 1 with a forged left part: %d, want 429", s)
	}
	if s := try("198.51.100.2"); s != http.StatusUnauthorized {
		t.Errorf("client 2 behind the same balancer: %d, want 401 (its own bucket)", s)
	}
}

// Behind a trusted proxy that terminates TLS, X-Forwarded-Proto: https
// makes the session cookie Secure with the __Host- prefix and turns HSTS
// on; the same header from anyone else changes nothing.
func TestForwardedProtoFromTrustedProxy(t *testing.T) {
	e := newEnv(t, envOptions{cfg: Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}})
	res := e.client().do("POST", "/api/login", map[string]any{"password": testPassword}, map[string]string{"X-Forwarded-Proto": "https"})
	if res.status != http.StatusOK {
		t.Fatalf("login: %d %s", res.status, res.body)
	}
	ck := res.header.Get("Set-Cookie")
	if !strings.HasPrefix(ck, secureCookieName+"=") || !strings.Contains(ck, "Secure") || res.header.Get("Strict-Transport-Security") == "" {
		t.Errorf("behind a trusted TLS proxy: Set-Cookie %q, HSTS %q", ck, res.header.Get("Strict-Transport-Security"))
	}
	untrusted := newEnv(t, envOptions{cfg: Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}})
	res = untrusted.client().do("POST", "/api/login", map[string]any{"password": testPassword}, map[string]string{"X-Forwarded-Proto": "https"})
	if ck := res.header.Get("Set-Cookie"); strings.Contains(ck, "Secure") || res.header.Get("Strict-Transport-Security") != "" {
		t.Errorf("X-Forwarded-Proto from an untrusted peer was believed: %q", ck)
	}
}

// A token pasted into the email field (an email:token line) is not echoed
// back into the re-rendered form; a plain typo is kept for correction.
func TestInvalidSecretLikeValueNotEchoed(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.loggedIn(testPassword)
	const line = "ops@example.com:" + atlassianToken
	res := c.do("POST", "/credentials", "email="+url.QueryEscape(line)+"&token=x", map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if res.status != http.StatusBadRequest {
		t.Fatalf("add with an email:token line as email: %d", res.status)
	}
	if strings.Contains(string(res.body), atlassianToken[:20]) {
		t.Error("the token pasted into the email field was echoed back into the page")
	}
	res = c.do("POST", "/credentials", "email=not-an-email&token=x", map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if res.status != http.StatusBadRequest || !strings.Contains(string(res.body), `value="not-an-email"`) {
		t.Errorf("a plain typo is not kept in the form: %d", res.status)
	}
}

// Logging out also asks the browser to drop its cache of admin pages
// (a page that showed a new API token among them).
func TestLogoutClearsSiteCache(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.loggedIn(testPassword)
	res := c.do("POST", "/api/logout", nil, nil)
	if res.status != http.StatusNoContent || res.header.Get("Clear-Site-Data") != `"cache"` {
		t.Errorf("logout: %d, Clear-Site-Data %q", res.status, res.header.Get("Clear-Site-Data"))
	}
}

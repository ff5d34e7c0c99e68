package adminui

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// contentSecurityPolicy allows nothing inline and nothing from elsewhere:
// the pages load their scripts, styles and images from /admin itself.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Cookie names: the __Host- prefix makes browsers insist on Secure, Path=/
// and no Domain, so a sibling subdomain cannot plant or shadow the cookie.
const (
	cookieName       = "ap_admin_session"
	secureCookieName = "__Host-ap_admin_session"
	csrfHeader       = "X-CSRF-Token"
)

func (a *Admin) securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
		if a.secure(r) {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		next.ServeHTTP(w, r)
	})
}

// secure reports whether the admin UI is served over HTTPS for this
// request: SecureCookies, a TLS connection, or a trusted proxy (one of
// TrustedProxies, e.g. an ingress that terminates TLS) saying so with
// X-Forwarded-Proto: https.
func (a *Admin) secure(r *http.Request) bool {
	if a.cfg.SecureCookies || r.TLS != nil {
		return true
	}
	return len(a.cfg.TrustedProxies) > 0 && a.trusted(r.RemoteAddr) &&
		strings.EqualFold(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto")), "https")
}

func (a *Admin) cookieName(r *http.Request) string {
	if a.secure(r) {
		return secureCookieName
	}
	return cookieName
}

func (a *Admin) sessionCookie(r *http.Request, value string) *http.Cookie {
	c := &http.Cookie{
		Name:     a.cookieName(r),
		Value:    value,
		Path:     "/admin",
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
	}
	if a.secure(r) {
		c.Secure = true
		c.Path = "/" // required by the __Host- prefix
	}
	if value == "" {
		c.MaxAge = -1
	}
	return c
}

// sessionID is the session cookie's value, "" when absent.
func (a *Admin) sessionID(r *http.Request) string {
	c, err := r.Cookie(a.cookieName(r))
	if err != nil {
		return ""
	}
	return c.Value
}

type sessionCtxKey struct{}

func sessionFrom(ctx context.Context) (SessionInfo, bool) {
	s, ok := ctx.Value(sessionCtxKey{}).(SessionInfo)
	return s, ok
}

// requireSession answers 401 unless the request carries a live session.
func (a *Admin) requireSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := a.sessionID(r)
		sess, err := a.svc.Session(r.Context(), id)
		if err != nil {
			if errors.Is(err, ErrNoSession) {
				if id != "" {
					http.SetCookie(w, a.sessionCookie(r, ""))
				}
				renderError(w, http.StatusUnauthorized, typeAuthentication, "login_required", "", "login required")
				return
			}
			a.renderServiceError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionCtxKey{}, sess)))
	})
}

// requireCSRF answers 403 to a state-changing request whose X-CSRF-Token
// header does not match its session's token.
func (a *Admin) requireCSRF(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		if !validCSRF(r, r.Header.Get(csrfHeader)) {
			renderError(w, http.StatusForbidden, typePermission, "csrf_token_invalid", "", "missing or wrong CSRF token (header "+csrfHeader+")")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// validCSRF reports whether got is the CSRF token of r's session (in
// constant time; an empty token never matches).
func validCSRF(r *http.Request, got string) bool {
	sess, _ := sessionFrom(r.Context())
	return got != "" && sess.CSRFToken != "" && subtle.ConstantTimeCompare([]byte(got), []byte(sess.CSRFToken)) == 1
}

// requirePasswordChanged answers 403 while a generated password has not
// been changed.
func (a *Admin) requirePasswordChanged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sess, _ := sessionFrom(r.Context()); sess.MustChangePassword {
			renderError(w, http.StatusForbidden, typePermission, "password_change_required", "",
				"the admin password must be changed first (POST /admin/api/password)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// throttle takes one login attempt from the client's and the global
// bucket. When refused it answers 429 with Retry-After and returns false.
func (a *Admin) throttle(w http.ResponseWriter, r *http.Request, global bool) bool {
	ok, retry, err := a.takeAttempt(r, global)
	switch {
	case err != nil:
		renderError(w, http.StatusServiceUnavailable, typeServer, "unavailable", "", "login temporarily unavailable")
		return false
	case !ok:
		w.Header().Set("Retry-After", strconv.Itoa(retry))
		renderError(w, http.StatusTooManyRequests, typeRateLimit, "too_many_attempts", "", "too many attempts; try again later")
		return false
	}
	return true
}

// takeAttempt takes one attempt from the client's bucket and, when
// global, the global one. Refused, it returns the seconds to wait (≥ 1)
// and counts the refusal by the limit that refused (LimitLoginIP or
// LimitLoginTotal).
// The JSON API and the pages answer the result each in their own form.
func (a *Admin) takeAttempt(r *http.Request, global bool) (ok bool, retryAfter int, err error) {
	ctx := r.Context()
	limit := LimitLoginIP
	ok, reset, err := take(ctx, a.perIP, "ip:"+a.clientKey(r))
	if err == nil && ok && global {
		limit = LimitLoginTotal
		ok, reset, err = take(ctx, a.total, "all")
	}
	if err != nil {
		a.logger.LogAttrs(ctx, slog.LevelError, "login limiter", slog.String("error", err.Error()))
		return false, 0, err
	}
	if !ok {
		a.rejected(limit)
		a.logger.LogAttrs(ctx, slog.LevelWarn, "admin login throttled", slog.String("client", a.clientKey(r)), slog.String("limit", limit))
		return false, max(int(math.Ceil(time.Until(reset).Seconds())), 1), nil
	}
	return true, 0, nil
}

type takeStore interface {
	Take(ctx context.Context, key string) (tokens, remaining, reset uint64, ok bool, err error)
}

func take(ctx context.Context, st takeStore, key string) (bool, time.Time, error) {
	_, _, reset, ok, err := st.Take(ctx, key)
	if err != nil {
		return false, time.Time{}, err
	}
	return ok, time.Unix(0, int64(reset)), nil
}

// clientKey is the throttling key of r's client (see clientIP).
func (a *Admin) clientKey(r *http.Request) string {
	return clientKey(a.clientIP(r))
}

// clientIP is the address of r's client: the connection's peer, unless the
// peer is one of TrustedProxies; then the right-most address of
// X-Forwarded-For that is not itself a trusted proxy (the left part of
// the header is whatever the client chose to send, so it is never used).
func (a *Admin) clientIP(r *http.Request) string {
	peer := r.RemoteAddr
	if len(a.cfg.TrustedProxies) == 0 || !a.trusted(peer) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	client := ""
	for i := len(hops) - 1; i >= 0; i-- {
		hop, ok := hopAddr(hops[i])
		if !ok {
			if strings.TrimSpace(hops[i]) == "" {
				continue
			}
			return peer // a malformed header: keep to what we know
		}
		if client == "" {
			client = hop
		}
		if !a.trusted(hop) {
			return hop
		}
	}
	if client != "" {
		// Every hop is trusted (a client on the internal network): the
		// address our nearest proxy saw, not the load balancer everyone
		// shares, nor a left part the client may have written itself.
		return client
	}
	return peer
}

// hopAddr reads one X-Forwarded-For entry: an IP, or an IP with a port
// ("192.0.2.1:4711", "[2001:db8::1]:4711"), as some load balancers write.
func hopAddr(h string) (string, bool) {
	h = strings.TrimSpace(h)
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.String(), true
	}
	if ap, err := netip.ParseAddrPort(h); err == nil {
		return ap.Addr().String(), true
	}
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); err == nil {
		return ip.String(), true
	}
	return "", false
}

func (a *Admin) trusted(addr string) bool {
	_, ip, ok := addrIP(addr)
	if !ok {
		return false
	}
	for _, p := range a.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// clientKey is the throttling key of a client address: its IP, an IPv6
// address reduced to its /64, since one host usually owns a whole /64.
func clientKey(remoteAddr string) string {
	host, ip, ok := addrIP(remoteAddr)
	if !ok {
		return host
	}
	if ip.Is6() {
		p, err := ip.Prefix(64)
		if err == nil {
			return p.String()
		}
	}
	return ip.String()
}

// addrIP reads an address with or without a port ("192.0.2.1:4711",
// "[::1]:80", "::1"): its host part and, when that is an IP, the IP
// (IPv4-mapped addresses unmapped, zone dropped).
func addrIP(addr string) (host string, ip netip.Addr, ok bool) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err = netip.ParseAddr(host)
	if err != nil {
		return host, netip.Addr{}, false
	}
	return host, ip.Unmap().WithZone(""), true
}

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/internal/logtest"
)

// The canary test's secrets, scanner, recorder and HTTP helpers (canary_test.go runs the scenarios).

// scannerControls proves the scan can fail: every form of every canary is
// found in a text holding it, and each response that created a secret (an
// API token, a session) holds it.
func scannerControls(t *testing.T, cs []*canary, exchanges []artifact) {
	for _, c := range cs {
		for _, f := range c.forms {
			if len(scanArtifact(artifact{where: "control", text: "x " + f[1] + " y"}, []*canary{c})) != 1 {
				t.Errorf("scanner control: the %s form of %q is not found", f[0], c.name)
			}
		}
	}
	names := map[string]bool{}
	for _, c := range cs {
		names[c.name] = true
	}
	created := 0
	for _, a := range exchanges {
		if slices.ContainsFunc(slices.Collect(maps.Keys(a.allow)), func(n string) bool { return names[n] }) {
			created++
			a.allow = nil
			if len(scanArtifact(a, cs)) == 0 {
				t.Errorf("recorder control: %s does not hold the secret it created", a.where)
			}
		}
	}
	if created < 6 {
		t.Errorf("recorder control: %d secret-creating responses recorded, want at least 6", created)
	}
}

const (
	emailA = "a-canary@example.com"
	emailB = "b-canary@example.com"
	emailC = "c-canary@example.com"
	emailX = "x-canary@example.com" // unknown to the fake gateway
	model  = "anthropic:claude-sonnet-4@20250514"
)

// secrets are this run's canary values, random so that no other test or
// fixture can produce them.
type secrets struct {
	credA, credB, credC, credD       string // Atlassian tokens: A and B serve the embedded proxy, C the Redis one, D is never stored
	adminPW, shortPW, longPW         string
	key1, key2, wrongKey, badKey     string // SECRET_KEYs: embedded, Redis, valid but wrong, not base64
	shortKey                         string // base64 of 16 bytes (a wrong-length key)
	redisPW, redisWrongPW            string
	keyBytes1, keyBytes2, wrongBytes string // the decoded keys (printable by construction)
}

func rnd(n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)[:n]
}

func newSecrets() *secrets {
	s := &secrets{
		credA: "ATATT" + rnd(7) + "-CANARY-credA-" + rnd(8) + "=" + rnd(8),
		// B does not look like an Atlassian token, so that the log's
		// ATAT… pattern cannot hide a leak that value-based scrubbing missed.
		credB:        "cnry" + rnd(8) + "-plain-credB-token-" + rnd(8) + "=" + rnd(4),
		credC:        "ATATT" + rnd(7) + "-CANARY-credC-" + rnd(8) + "=" + rnd(8),
		credD:        "ATATT" + rnd(7) + "-CANARY-unstored-" + rnd(16),
		adminPW:      "Pw" + rnd(10) + " canary admin+pass&word/" + rnd(6),
		shortPW:      "Sh" + rnd(9), // 11 characters: one too few
		longPW:       "Lg" + rnd(10) + strings.Repeat("-long-canary", 10) + rnd(6),
		badKey:       "bk" + rnd(10) + "-canary-bad-secret-key!" + rnd(6),
		shortKey:     base64.StdEncoding.EncodeToString([]byte(rnd(8) + "-CANARY-")),
		redisPW:      "rds" + rnd(9) + "-canary-redis-pw-" + rnd(8),
		redisWrongPW: "rdw" + rnd(9) + "-canary-wrong-redis-" + rnd(8),
		keyBytes1:    rnd(12) + "-CANARY-SECRET-KEY-1",
		keyBytes2:    rnd(12) + "-CANARY-SECRET-KEY-2",
		wrongBytes:   rnd(12) + "-CANARY-WRONG-KEY-33",
	}
	s.key1 = base64.StdEncoding.EncodeToString([]byte(s.keyBytes1))
	s.key2 = base64.StdEncoding.EncodeToString([]byte(s.keyBytes2))
	s.wrongKey = base64.StdEncoding.EncodeToString([]byte(s.wrongBytes))
	return s
}

func (s *secrets) canaries() *canaries {
	cs := &canaries{}
	for _, c := range []struct{ name, v, email string }{
		{"credential token A", s.credA, emailA}, {"credential token B", s.credB, emailB},
		{"credential token C (Redis)", s.credC, emailC}, {"unstored credential token D", s.credD, emailX},
	} {
		cs.add(c.name, c.v, 12, [2]string{"Basic auth of " + c.email, basic(c.email, c.v)})
	}
	cs.add("admin password", s.adminPW, 12)
	cs.add("too-short new password", s.shortPW, 0)
	cs.add("too-long new password", s.longPW, 12)
	cs.add("SECRET_KEY (embedded)", s.key1, 12, [2]string{"decoded", s.keyBytes1})
	cs.add("SECRET_KEY (Redis)", s.key2, 12, [2]string{"decoded", s.keyBytes2})
	cs.add("wrong SECRET_KEY", s.wrongKey, 12, [2]string{"decoded", s.wrongBytes})
	cs.add("malformed SECRET_KEY", s.badKey, 12)
	cs.add("16-byte SECRET_KEY", s.shortKey, 12)
	cs.add("Redis password", s.redisPW, 12)
	cs.add("wrong Redis password", s.redisWrongPW, 12)
	return cs
}

func basic(email, token string) string {
	return base64.StdEncoding.EncodeToString([]byte(email + ":" + token))
}

// typo changes one character in the middle of v.
func typo(v string) string {
	i := len(v) / 2
	c := byte('A')
	if v[i] == 'A' {
		c = 'B'
	}
	return v[:i] + string(c) + v[i+1:]
}

// canary is one planted secret and every form of it that must not appear.
type canary struct {
	name  string
	value string
	forms [][2]string // {form name, text}
}

type canaries struct {
	mu   sync.Mutex
	list []*canary
}

// add registers a canary. prefix > 0 also looks for its first and last
// prefix characters (API tokens use 13: their first 12 are the display
// prefix shown by design).
func (cs *canaries) add(name, v string, prefix int, extra ...[2]string) {
	seen := map[string]bool{}
	c := &canary{name: name, value: v}
	form := func(f, s string) {
		if len(s) >= 8 && !seen[s] {
			seen[s] = true
			c.forms = append(c.forms, [2]string{f, s})
		}
	}
	form("raw", v)
	form("query-escaped", url.QueryEscape(v))
	form("path-escaped", url.PathEscape(v))
	form("base64", base64.RawStdEncoding.EncodeToString([]byte(v)))
	form("base64url", base64.RawURLEncoding.EncodeToString([]byte(v)))
	form("hex", hex.EncodeToString([]byte(v)))
	j, _ := json.Marshal(v)
	form("JSON-escaped", string(j[1:len(j)-1]))
	form("HTML-escaped", template.HTMLEscapeString(v))
	form("html/template-escaped", strings.NewReplacer("+", "&#43;").Replace(template.HTMLEscapeString(v)))
	form("JS-escaped", template.JSEscapeString(v))
	for _, e := range extra {
		form(e[0], e[1])
	}
	if prefix > 0 && len(v) > 2*prefix {
		form(fmt.Sprintf("first %d chars", prefix), v[:prefix])
		form(fmt.Sprintf("last %d chars", prefix), v[len(v)-prefix:])
	}
	cs.mu.Lock()
	cs.list = append(cs.list, c)
	cs.mu.Unlock()
}

func (cs *canaries) all() []*canary {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return append([]*canary(nil), cs.list...)
}

// artifact is one text the canaries must not be in.
type artifact struct {
	where string
	text  string
	allow map[string]bool // canary names permitted here
	// request is what the client sent, for exchanges; a canary found in
	// both is a reflection, permitted only when mayReflect.
	request    string
	mayReflect bool
}

type finding struct {
	canary, form, where, excerpt string
	reflected                    bool
}

// scanArtifact reports every occurrence in a of a form of a canary it may
// not hold.
func scanArtifact(a artifact, cs []*canary) []finding {
	var out []finding
	for _, c := range cs {
		if a.allow[c.name] {
			continue
		}
		reflected := false
		for _, g := range c.forms {
			reflected = reflected || (a.request != "" && strings.Contains(a.request, g[1]))
		}
		var covered [][2]int // occurrences reported, so that a prefix of a raw match is not reported again
		for _, f := range c.forms {
			for off := 0; ; {
				j := strings.Index(a.text[off:], f[1])
				if j < 0 {
					break
				}
				i := off + j
				off = i + len(f[1])
				if slices.ContainsFunc(covered, func(r [2]int) bool { return i < r[1] && r[0] < off }) {
					continue
				}
				covered = append(covered, [2]int{i, off})
				where, ex := locate(a.where, a.text, i, len(f[1]), c.name)
				out = append(out, finding{canary: c.name, form: f[0], where: where, excerpt: ex, reflected: reflected})
			}
		}
	}
	return out
}

// locate names the line of a multi-line text holding the match at i and
// returns it (bounded) with the match masked.
func locate(where, text string, i, n int, name string) (string, string) {
	lo, hi := max(0, i-160), min(len(text), i+n+160)
	if strings.Contains(text, "\n") {
		ls := strings.LastIndexByte(text[:i], '\n') + 1
		le := strings.IndexByte(text[i:], '\n')
		if le < 0 {
			le = len(text)
		} else {
			le += i
		}
		where = fmt.Sprintf("%s, line %d", where, strings.Count(text[:i], "\n")+1)
		lo, hi = max(ls, i-240), min(le, i+n+240)
	}
	return where, strings.ReplaceAll(text[lo:i]+"«"+name+"»"+text[i+n:hi], "\n", "⏎")
}

// artifacts collects what the scan reads: proxy outputs (read at the end),
// metrics, CLI outputs, upstream requests, store contents.
type artifacts struct {
	mu      sync.Mutex
	list    []artifact
	proxies []namedProxy
}

type namedProxy struct {
	name string
	p    *proxy
}

func (a *artifacts) add(x artifact) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.list = append(a.list, x)
}

func (a *artifacts) proxy(name string, p *proxy) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.proxies = append(a.proxies, namedProxy{name, p})
}

func (a *artifacts) snapshot() []artifact {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := append([]artifact(nil), a.list...)
	for _, np := range a.proxies {
		out = append(out, artifact{where: np.name + " stdout", text: np.p.Stdout.String()},
			artifact{where: np.name + " stderr (log)", text: np.p.Stderr.String()})
	}
	return out
}

// metrics adds the full /metrics output of p.
func (a *artifacts) metrics(t *testing.T, name string, p *proxy) {
	t.Helper()
	resp, err := http.Get(p.MetricsURL)
	if err != nil {
		t.Errorf("scrape %s metrics: %v", name, err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if !bytes.Contains(b, []byte("atlassian_proxy_")) {
		t.Errorf("%s metrics look empty: %.200s", name, b)
	}
	a.add(artifact{where: name + " /metrics", text: string(b)})
}

// upstream adds what the fake gateway received: a credential token may be
// in the auth headers of the requests (as Basic auth), nothing else.
func (a *artifacts) upstream(name string, gw *fake.Server, credNames ...string) {
	allow := map[string]bool{}
	for _, n := range credNames {
		allow[n] = true
	}
	for i, q := range gw.Requests() {
		h := q.Header.Clone()
		auth := "Authorization: " + h.Get("Authorization") + "\nX-Atlassian-EncodedToken: " + h.Get("X-Atlassian-EncodedToken")
		h.Del("Authorization")
		h.Del("X-Atlassian-EncodedToken")
		var hb bytes.Buffer
		_ = h.Write(&hb)
		where := fmt.Sprintf("%s request #%d %s %s", name, i, q.Method, q.Path)
		a.add(artifact{where: where + " (headers, body)", text: hb.String() + "\n" + string(q.Body)})
		a.add(artifact{where: where + " (auth headers)", text: auth, allow: allow})
	}
}

// run runs the binary (not waiting more than 20 s) and adds its outputs.
func (a *artifacts) run(t *testing.T, label string, env map[string]string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	return a.runReflecting(t, label, false, env, stdin, args...)
}

// runReflecting is run; with reflect, the outputs may echo the command's
// own arguments (an id that is not one, printed back as "not found").
func (a *artifacts) runReflecting(t *testing.T, label string, reflect bool, env map[string]string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	stdout, stderr, code, err := runCLI(20*time.Second, env, stdin, args...)
	if err != nil {
		t.Errorf("%s: %v (a bad configuration accepted, or the binary missing?)", label, err)
	}
	request := strings.Join(args, " ") + "\n" + stdin
	for k, v := range env {
		request += "\n" + k + "=" + v
	}
	a.add(artifact{where: "CLI " + label + " stdout", text: stdout, request: request, mayReflect: reflect})
	a.add(artifact{where: "CLI " + label + " stderr", text: stderr, request: request, mayReflect: reflect})
	return stdout, stderr, code
}

// recorder is an http.RoundTripper wrapper that keeps every exchange: the
// request as sent and the response's status, headers and body as read.
type recorder struct {
	cs  *canaries // where the clients register the session ids they get
	mu  sync.Mutex
	all []*exchange
}

type exchange struct {
	label   string
	allow   []string
	reflect bool
	request string
	status  int
	header  http.Header
	body    *logtest.Buffer
}

type exKey struct{}

type exOpts struct {
	label   string
	allow   []string
	reflect bool
}

type recTransport struct {
	rec  *recorder
	base http.RoundTripper
}

func (rt *recTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	o, _ := req.Context().Value(exKey{}).(exOpts)
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
		cl := req.ContentLength
		req = req.Clone(req.Context())
		req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), cl
	}
	var rb bytes.Buffer
	fmt.Fprintf(&rb, "%s %s\n", req.Method, req.URL)
	_ = req.Header.Write(&rb)
	rb.Write(body)
	ex := &exchange{label: o.label, allow: o.allow, reflect: o.reflect, request: rb.String(), body: &logtest.Buffer{}}
	rt.rec.mu.Lock()
	rt.rec.all = append(rt.rec.all, ex)
	rt.rec.mu.Unlock()
	resp, err := rt.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	ex.status, ex.header = resp.StatusCode, resp.Header.Clone()
	resp.Body = teeBody{resp.Body, ex.body}
	return resp, nil
}

type teeBody struct {
	io.ReadCloser
	w io.Writer
}

func (b teeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	_, _ = b.w.Write(p[:n])
	return n, err
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.all)
}

func (r *recorder) artifacts() []artifact {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []artifact
	for i, ex := range r.all {
		allow := map[string]bool{}
		for _, n := range ex.allow {
			allow[n] = true
		}
		var hb bytes.Buffer
		_ = ex.header.Write(&hb)
		first, _, _ := strings.Cut(ex.request, "\n")
		out = append(out, artifact{where: fmt.Sprintf("response #%d to %s [%s]", i, first, ex.label),
			text: fmt.Sprintf("%d\n%s\n%s", ex.status, hb.String(), ex.body.String()), allow: allow,
			request: ex.request, mayReflect: ex.reflect})
	}
	return out
}

// hc is a recorded HTTP client of one proxy, from one source address (the
// admin login throttle counts per client IP: each part of the test uses
// its own 127.0.0.x), with a cookie jar and the admin CSRF token.
type hc struct {
	t    *testing.T
	base string
	c    *http.Client
	cs   *canaries
	csrf string
}

func (r *recorder) client(t *testing.T, base, srcIP string) *hc {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(srcIP)}}
	tr := &http.Transport{DialContext: d.DialContext, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	jar, _ := cookiejar.New(nil)
	return &hc{t: t, base: base, cs: r.cs, c: &http.Client{Transport: &recTransport{rec: r, base: tr}, Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type call struct {
	label, method, path string
	json                any
	body, ctype         string
	header              map[string]string
	noCSRF              bool
	chunked             bool // send the body without a length
	timeout             time.Duration
	allow               []string // canary names this response may hold
	reflect             bool     // this response may echo the request's own input
	want                int      // expected status (0: any)
}

type result struct {
	status int
	header http.Header
	body   string
}

func (h *hc) do(c call) result {
	h.t.Helper()
	var rd io.Reader
	if c.json != nil {
		b, err := json.Marshal(c.json)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
		if c.ctype == "" {
			c.ctype = "application/json"
		}
	} else if c.body != "" {
		rd = strings.NewReader(c.body)
	}
	if c.chunked {
		rd = io.MultiReader(rd)
	}
	ctx := context.WithValue(context.Background(), exKey{}, exOpts{label: c.label, allow: c.allow, reflect: c.reflect})
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, c.method, h.base+c.path, rd)
	if err != nil {
		h.t.Fatalf("%s: %v", c.label, err)
	}
	if c.ctype != "" {
		req.Header.Set("Content-Type", c.ctype)
	}
	if h.csrf != "" && !c.noCSRF {
		req.Header.Set("X-CSRF-Token", h.csrf)
	}
	for k, v := range c.header {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := h.c.Do(req)
	if err != nil {
		if c.timeout == 0 {
			h.t.Errorf("%s: %v", c.label, err)
		}
		return result{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if c.want != 0 && resp.StatusCode != c.want {
		h.t.Errorf("%s: status %d, want %d (the error path was not the one meant): %.300s", c.label, resp.StatusCode, c.want, b)
	}
	return result{resp.StatusCode, resp.Header, string(b)}
}

// login logs in through the admin API; the session id it gets becomes a
// canary, permitted only in that response's Set-Cookie.
func (h *hc) login(label, pw string, want int) result {
	h.t.Helper()
	name := "admin session id [" + label + "]"
	r := h.do(call{label: label, method: "POST", path: "/admin/api/login", json: map[string]string{"password": pw}, want: want, allow: []string{name}})
	if r.status == http.StatusOK {
		for _, c := range (&http.Response{Header: r.header}).Cookies() {
			if strings.HasSuffix(c.Name, "ap_admin_session") && c.Value != "" {
				h.cs.add(name, c.Value, 12)
			}
		}
		var v struct {
			CSRF string `json:"csrf_token"`
		}
		_ = json.Unmarshal([]byte(r.body), &v)
		h.csrf = v.CSRF
	}
	return r
}

func (h *hc) form(label, path string, vals url.Values, want int, reflect bool) result {
	h.t.Helper()
	if h.csrf != "" {
		vals.Set("csrf_token", h.csrf)
	}
	return h.do(call{label: label, method: "POST", path: path, body: vals.Encode(), ctype: "application/x-www-form-urlencoded",
		want: want, reflect: reflect, noCSRF: true})
}

func (h *hc) addCredential(email, token string) string {
	h.t.Helper()
	r := h.do(call{label: "add credential " + email, method: "POST", path: "/admin/api/credentials",
		json: map[string]any{"email": email, "token": token}, want: http.StatusCreated})
	var v struct{ ID string }
	if err := json.Unmarshal([]byte(r.body), &v); err != nil || v.ID == "" {
		h.t.Fatalf("add credential %s: %d %s", email, r.status, r.body)
	}
	return v.ID
}

// newToken creates an API token through the admin API and registers it as
// a canary, permitted only in the response that created it.
func (h *hc) newToken(cs *canaries, name string, body map[string]any) (id, token string) {
	h.t.Helper()
	r := h.do(call{label: "create " + name, method: "POST", path: "/admin/api/tokens", json: body, allow: []string{name}, want: http.StatusCreated})
	var v struct{ ID, Token string }
	if err := json.Unmarshal([]byte(r.body), &v); err != nil || !strings.HasPrefix(v.Token, "sk-ap-") {
		h.t.Fatalf("create %s: %d %s", name, r.status, r.body)
	}
	cs.add(name, v.Token, 13)
	return v.ID, v.Token
}

func chatJSON(m string, stream bool) string {
	b, _ := json.Marshal(map[string]any{"model": m, "stream": stream, "messages": []map[string]string{{"role": "user", "content": "hi"}}})
	return string(b)
}

func (h *hc) chat(label, auth, m string, stream bool, want int) result {
	h.t.Helper()
	hdr := map[string]string{}
	if auth != "" {
		hdr["Authorization"] = auth
	}
	return h.do(call{label: label, method: "POST", path: "/v1/chat/completions", body: chatJSON(m, stream), ctype: "application/json", header: hdr, want: want})
}

// states returns every credential's state in /admin/api/pool.
func (h *hc) states(label string) map[string]string {
	h.t.Helper()
	r := h.do(call{label: label, method: "GET", path: "/admin/api/pool", want: http.StatusOK})
	var v struct {
		Credentials []struct{ ID, State string } `json:"credentials"`
	}
	_ = json.Unmarshal([]byte(r.body), &v)
	out := map[string]string{}
	for _, c := range v.Credentials {
		out[c.ID] = c.State
	}
	return out
}

// Markers of the upstream messages that quote a credential token in a form
// other than verbatim (see knownLeaks).
const (
	markURLEncoded = "(canary-urlencoded-echo)"
	markTruncated  = "(canary-truncated-echo)"
)

func urlEncodedEcho(f fake.Fault, status int) func(string, string) fake.Behavior {
	return func(tok, email string) fake.Behavior {
		return fake.Behavior{Fault: f, Status: status,
			Message: markURLEncoded + " bad request to /check?token=" + url.QueryEscape(tok) + "&user=" + url.QueryEscape(email)}
	}
}

func truncatedEcho(f fake.Fault, status int) func(string, string) fake.Behavior {
	return func(tok, _ string) fake.Behavior {
		return fake.Behavior{Fault: f, Status: status, Message: markTruncated + " token " + tok[:24] + "... is not valid"}
	}
}

// knownLeaks are leaks this test found and reported, to be fixed outside
// this file. While one still occurs it is logged, not failed; remove its
// entry once fixed, and the test holds the fix.
var knownLeaks = []struct {
	marker string   // in the upstream message, just before the leaked text
	forms  []string // the forms it leaks in
	why    string
}{}

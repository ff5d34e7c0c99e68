package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sethvargo/go-limiter"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/dispatch"
	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/schematest"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/store"
	"github.com/atlassian-proxy/atlassian-proxy/store/sqlite"
)

// The tests run the whole path for real: the handler on a loopback
// server, real auth.Tokens over a SQLite file, a real pool and dispatcher,
// the real gateway client, and the fake gateway on another loopback port.

const testModel = "claude-sonnet-4" // an alias of anthropic:claude-sonnet-4@20250514

// envOptions shape a test environment; the zero value is one healthy credential.
type envOptions struct {
	creds      []fake.Credential // nil: one credential "c1" answering OK
	noCreds    bool              // no credential at all
	cfg        Config
	poolCfg    pool.Config
	disp       dispatch.Config
	maxConc    int // per credential; 0: pool default
	ready      func(ctx context.Context) error
	fakeOpts   fake.Options
	logHandler slog.Handler
	catalog    *gateway.Catalog // nil: the default catalog
	// transport wraps the gateway client's transport (fault injection).
	transport func(http.RoundTripper) http.RoundTripper
	reg       prometheus.Registerer                      // nil: no metrics
	usage     UsageRecorder                              // nil: no usage accounting
	limiters  func(perMinute int) (limiter.Store, error) // nil: in-process stores
}

type env struct {
	t      testing.TB
	gw     *fake.Server
	store  *sqlite.Store
	tokens *auth.Tokens
	pool   *pool.Pool
	api    *API
	srv    *httptest.Server
	token  string // valid for every model
}

func testCred(id string, b fake.Behavior) fake.Credential {
	return fake.Credential{ID: id, Email: id + "@example.com", Token: "atl-" + id + "-secret", Default: b}
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	ctx := t.Context()
	creds := o.creds
	if creds == nil && !o.noCreds {
		creds = []fake.Credential{testCred("c1", fake.Behavior{})}
	}
	fo := o.fakeOpts
	fo.Credentials = creds
	gw := fake.Start(t, fo)

	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "proxy.db"))
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	logger := slog.New(slog.DiscardHandler)
	if o.logHandler != nil {
		logger = slog.New(o.logHandler)
	}
	e := &env{t: t, gw: gw, store: st, tokens: auth.NewTokens(st, logger)}
	e.token = e.addToken("default", nil)

	pc := o.poolCfg
	if pc.BackoffBase == 0 {
		pc.BackoffBase, pc.BackoffMax = time.Millisecond, 5*time.Millisecond
	}
	p, err := pool.New(pc, pool.Deps{Logger: logger})
	if err != nil {
		t.Fatalf("pool.New: %v", err)
	}
	e.pool = p
	specs := make([]pool.Spec, 0, len(creds))
	for _, c := range creds {
		specs = append(specs, pool.Spec{
			Credential:     pool.Credential{ID: c.ID, Email: c.Email, Token: c.Token},
			Enabled:        true,
			MaxConcurrency: o.maxConc,
		})
	}
	p.Sync(specs, nil)
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = p.Run(runCtx) })
	t.Cleanup(func() { stop(); wg.Wait() })
	waitRunning(t, p)

	dc := o.disp
	if dc.BackoffBase == 0 {
		dc.BackoffBase, dc.BackoffMax = time.Millisecond, 5*time.Millisecond
	}
	d, err := dispatch.New(dc, p, dispatch.Deps{Logger: logger})
	if err != nil {
		t.Fatalf("dispatch.New: %v", err)
	}
	var hc *http.Client
	if o.transport != nil {
		hc = &http.Client{Transport: o.transport(gateway.NewTransport())}
	}
	client, err := gateway.NewClient(gateway.Config{BaseURL: gw.URL}, hc)
	if err != nil {
		t.Fatalf("gateway.NewClient: %v", err)
	}
	ready := o.ready
	if ready == nil {
		ready = st.Ping
	}
	catalog := o.catalog
	if catalog == nil {
		catalog = gateway.DefaultCatalog()
	}
	a, err := New(o.cfg, Deps{
		Logger: logger, Tokens: e.tokens, Catalog: catalog,
		Upstream: client, Dispatcher: d, Ready: ready, Registerer: o.reg, Usage: o.usage,
		Limiters: o.limiters,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.api = a
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("API.Close: %v", err)
		}
	})
	e.srv = httptest.NewServer(a.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

// waitRunning waits until the pool's Run has started, so that no request
// of a test sees "the pool is not running".
func waitRunning(t testing.TB, p *pool.Pool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := p.Acquire(nil, 1)
		if l != nil {
			l.Done(pool.OutcomeCanceled, pool.Usage{})
		}
		if !errors.Is(err, pool.ErrClosed) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the pool did not start")
		}
		time.Sleep(time.Millisecond)
	}
}

// addToken stores a new client token (mutate adjusts the record) and
// reloads the token cache; it returns the token.
func (e *env) addToken(name string, mutate func(*store.APIToken)) string {
	e.t.Helper()
	tok, display, hash, err := auth.NewToken()
	if err != nil {
		e.t.Fatalf("NewToken: %v", err)
	}
	id, err := auth.NewID("tok")
	if err != nil {
		e.t.Fatalf("NewID: %v", err)
	}
	rec := store.APIToken{ID: id, Name: name, Prefix: display, Hash: hash, CreatedAt: time.Now()}
	if mutate != nil {
		mutate(&rec)
	}
	ctx := context.Background()
	if err := e.store.CreateToken(ctx, rec); err != nil {
		e.t.Fatalf("CreateToken: %v", err)
	}
	if err := e.tokens.Reload(ctx); err != nil {
		e.t.Fatalf("Reload: %v", err)
	}
	return tok
}

// request is one raw HTTP request to the proxy.
type request struct {
	method      string
	path        string
	token       string // "" sends no Authorization header
	auth        string // a raw Authorization header, overrides token
	contentType string // "" sends none; "-" is the default application/json
	body        string
	chunked     bool // send the body without a Content-Length
}

// do sends r and returns the response with its whole body.
func (e *env) do(r request) (*http.Response, []byte) {
	e.t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
		if r.chunked {
			body = io.MultiReader(body) // hides the length: chunked encoding
		}
	}
	req, err := http.NewRequestWithContext(e.t.Context(), r.method, e.srv.URL+r.path, body)
	if err != nil {
		e.t.Fatalf("NewRequest: %v", err)
	}
	switch {
	case r.auth != "":
		req.Header.Set("Authorization", r.auth)
	case r.token != "":
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	switch r.contentType {
	case "":
	case "-":
		req.Header.Set("Content-Type", "application/json")
	default:
		req.Header.Set("Content-Type", r.contentType)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read body of %s %s: %v", r.method, r.path, err)
	}
	return resp, b
}

// chat posts a chat completions body with the default token.
func (e *env) chat(body string) (*http.Response, []byte) {
	e.t.Helper()
	return e.do(request{method: http.MethodPost, path: "/v1/chat/completions", token: e.token, contentType: "-", body: body})
}

func chatBody(extra string) string {
	b := `{"model":"` + testModel + `","messages":[{"role":"user","content":"Hello"}]`
	if extra != "" {
		b += "," + extra
	}
	return b + "}"
}

// wantError describes an expected OpenAI error response.
type wantError struct {
	status int
	typ    string
	code   string // "" expects null
	param  string // "" expects null
	msg    string // a substring of the message
}

// checkError asserts an OpenAI-shaped error response.
func checkError(t *testing.T, resp *http.Response, body []byte, want wantError) {
	t.Helper()
	if resp.StatusCode != want.status {
		t.Errorf("status = %d, want %d (body %s)", resp.StatusCode, want.status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	schematest.Validate(t, schematest.ErrorResponse, body)
	var got struct {
		Error map[string]*string `json:"error"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("error body %s: %v", body, err)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := got.Error[k]; !ok {
			t.Errorf("error body %s has no %q key", body, k)
		}
	}
	str := func(p *string) string {
		if p == nil {
			return "<null>"
		}
		return *p
	}
	null := func(s string) string {
		if s == "" {
			return "<null>"
		}
		return s
	}
	if g := str(got.Error["type"]); g != want.typ {
		t.Errorf("type = %q, want %q", g, want.typ)
	}
	if g := str(got.Error["code"]); g != null(want.code) {
		t.Errorf("code = %q, want %q", g, null(want.code))
	}
	if g := str(got.Error["param"]); g != null(want.param) {
		t.Errorf("param = %q, want %q", g, null(want.param))
	}
	if g := str(got.Error["message"]); !strings.Contains(g, want.msg) || g == "" {
		t.Errorf("message = %q, want it to contain %q", g, want.msg)
	}
	for _, secret := range []string{"atl-", "secret", "Basic ", "sk-ap-", "goroutine ", ".go:"} {
		if bytes.Contains(body, []byte(secret)) {
			t.Errorf("error body %s contains %q", body, secret)
		}
	}
}

// sseEvent is one event of a raw SSE body.
type sseEvent struct {
	comment string // a comment line (": keep-alive")
	data    string
}

// parseSSE splits a raw event stream into its events and comments.
func parseSSE(t *testing.T, body []byte) []sseEvent {
	t.Helper()
	var out []sseEvent
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
		case strings.HasPrefix(line, ":"):
			out = append(out, sseEvent{comment: strings.TrimSpace(line[1:])})
		case strings.HasPrefix(line, "data: "):
			out = append(out, sseEvent{data: line[len("data: "):]})
		default:
			t.Errorf("unexpected SSE line %q", line)
		}
	}
	return out
}

// streamSummary checks every data event of a stream against the chunk
// schema (the error event against the error schema) and sums it up.
type streamSummary struct {
	chunks     []gateway.ChatCompletionChunk
	text       string
	done       bool // ended with [DONE]
	doneLast   bool // [DONE] was the last event
	errorEvent string
	keepAlives int
	usage      *gateway.Usage
}

func summarize(t *testing.T, body []byte) streamSummary {
	t.Helper()
	var s streamSummary
	events := parseSSE(t, body)
	for i, ev := range events {
		switch {
		case ev.comment != "":
			if ev.comment == "keep-alive" {
				s.keepAlives++
			}
		case ev.data == "[DONE]":
			s.done = true
			s.doneLast = i == len(events)-1
		case strings.HasPrefix(ev.data, `{"error"`):
			schematest.Validate(t, schematest.ErrorResponse, []byte(ev.data))
			s.errorEvent = ev.data
		default:
			schematest.Validate(t, schematest.ChatCompletionChunk, []byte(ev.data))
			var c gateway.ChatCompletionChunk
			if err := json.Unmarshal([]byte(ev.data), &c); err != nil {
				t.Fatalf("chunk %s: %v", ev.data, err)
			}
			s.chunks = append(s.chunks, c)
			for _, ch := range c.Choices {
				if ch.Delta.Content != nil {
					s.text += *ch.Delta.Content
				}
			}
			if c.Usage != nil {
				s.usage = c.Usage
			}
		}
	}
	return s
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// credStatus returns the pool's view of one credential.
func (e *env) credStatus(id string) pool.CredentialStatus {
	e.t.Helper()
	for _, c := range e.pool.Status().Credentials {
		if c.ID == id {
			return c
		}
	}
	e.t.Fatalf("credential %s not in the pool", id)
	return pool.CredentialStatus{}
}

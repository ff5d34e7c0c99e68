package observability_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/atlassian-proxy/atlassian-proxy/internal/logtest"
	"github.com/atlassian-proxy/atlassian-proxy/observability"
)

// lines returns the JSON log lines whose msg is msg, waiting up to 5 s for
// at least n of them (the access log line is written as the handler
// returns, which may be just after the client saw the response).
func lines(t *testing.T, b *logtest.Buffer, msg string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := b.Messages(t, msg)
		if len(out) >= n || time.Now().After(deadline) {
			if len(out) < n {
				t.Fatalf("got %d %q log lines, want %d; log:\n%s", len(out), msg, n, b.String())
			}
			return out
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newTestLogger(t *testing.T) (*slog.Logger, *logtest.Buffer) {
	t.Helper()
	buf := &logtest.Buffer{}
	l, err := observability.NewLogger(buf, observability.LogConfig{Level: "debug"})
	if err != nil {
		t.Fatal(err)
	}
	return l, buf
}

// renderJSON500 stands for openaierr.Render.
func renderJSON500(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusInternalServerError)
	io.WriteString(w, `{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}`)
}

// newRouter returns a chi router with the middlewares in the documented
// order.
func newRouter(logger *slog.Logger, reg *testRegistry) chi.Router {
	r := chi.NewRouter()
	r.Use(observability.RequestID, observability.AccessLog(logger))
	if reg != nil {
		r.Use(observability.HTTPMetrics(reg.Registry))
	}
	r.Use(observability.Recover(logger, renderJSON500))
	return r
}

func get(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(body)
}

func newRequest(t *testing.T, method, url string, header http.Header) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return req
}

var generatedID = regexp.MustCompile(`^[0-9a-f]{24}$`)

func TestRequestID(t *testing.T) {
	long64 := strings.Repeat("a", 64)
	tests := []struct {
		name     string
		incoming []string
		want     string // "" = a generated id
	}{
		{"none", nil, ""},
		{"kept", []string{"abc-123_X.y"}, "abc-123_X.y"},
		{"64 chars kept", []string{long64}, long64},
		{"65 chars replaced", []string{long64 + "a"}, ""},
		{"empty replaced", []string{""}, ""},
		{"space replaced", []string{"abc def"}, ""},
		{"injection replaced", []string{"x\"}\n{\"level\":\"ERROR\""}, ""},
		{"unicode replaced", []string{"é"}, ""},
	}
	var seen string
	h := observability.RequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = observability.RequestIDFrom(r.Context())
	}))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.incoming != nil {
				req.Header[observability.RequestIDHeader] = tt.incoming
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			got := rec.Header().Get(observability.RequestIDHeader)
			if got != seen {
				t.Errorf("response header %q, context %q; want equal", got, seen)
			}
			if tt.want != "" && got != tt.want {
				t.Errorf("request id = %q, want %q", got, tt.want)
			}
			if tt.want == "" && !generatedID.MatchString(got) {
				t.Errorf("request id = %q, want a generated one (24 hex)", got)
			}
		})
	}
	if got := observability.RequestIDFrom(context.Background()); got != "" {
		t.Errorf("RequestIDFrom(empty context) = %q, want \"\"", got)
	}
}

func TestAccessLog(t *testing.T) {
	logger, logs := newTestLogger(t)
	r := newRouter(logger, nil)
	r.Get("/v1/models/{id}", func(w http.ResponseWriter, r *http.Request) {
		observability.AddLogAttrs(r.Context(), slog.String("credential_id", "cred_1"))
		// Handlers may add from other goroutines too.
		var wg sync.WaitGroup
		wg.Go(func() { observability.AddLogAttrs(r.Context(), slog.Int("attempts", 2), slog.String("outcome", "ok")) })
		wg.Wait()
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "hello")
	})
	r.Get("/fail", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad gateway", http.StatusBadGateway)
	})
	r.Get("/empty", func(w http.ResponseWriter, r *http.Request) {})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)

	tests := []struct {
		name      string
		path      string
		reqID     string
		wantPath  string
		wantRoute string
		status    int
		bytes     int
		level     string
		extra     map[string]any
	}{
		{"matched with attrs", "/v1/models/abc?key=sk-ap-querysecretvalue0000", "req-1", "/v1/models/abc", "/v1/models/{id}",
			http.StatusCreated, 5, "INFO", map[string]any{"credential_id": "cred_1", "attempts": 2.0, "outcome": "ok"}},
		{"not found", "/nope", "req-2", "/nope", "unmatched", http.StatusNotFound, len("404 page not found\n"), "INFO", nil},
		{"server error at level error", "/fail", "req-3", "/fail", "/fail", http.StatusBadGateway, len("bad gateway\n"), "ERROR", nil},
		{"nothing written is 200", "/empty", "req-4", "/empty", "/empty", http.StatusOK, 0, "INFO", nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := get(t, newRequest(t, http.MethodGet, srv.URL+tt.path, http.Header{"X-Request-Id": {tt.reqID}}))
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.status)
			}
			line := lines(t, logs, "request", i+1)[i]
			want := map[string]any{
				"level": tt.level, "method": "GET", "path": tt.wantPath, "route": tt.wantRoute,
				"status": float64(tt.status), "bytes": float64(tt.bytes), "request_id": tt.reqID, "remote": "127.0.0.1",
			}
			for k, v := range tt.extra {
				want[k] = v
			}
			for k, v := range want {
				if line[k] != v {
					t.Errorf("%s = %#v, want %#v", k, line[k], v)
				}
			}
			if d, ok := line["duration_ms"].(float64); !ok || d < 0 {
				t.Errorf("duration_ms = %#v, want a non-negative number", line["duration_ms"])
			}
			if _, ok := line["aborted"]; ok {
				t.Errorf("aborted is set on a completed request")
			}
			if strings.Contains(logs.String(), "querysecret") {
				t.Errorf("the query string reached the log")
			}
		})
	}
}

func TestAddLogAttrsOutsideAccessLog(t *testing.T) {
	observability.AddLogAttrs(context.Background(), slog.String("k", "v")) // must not panic
}

func TestRecover(t *testing.T) {
	const secret = "sk-ap-PANICSECRETabcdefghijklmnopqrstuvwxyz0123456"
	logger, logs := newTestLogger(t)
	r := newRouter(logger, nil)
	r.Post("/boom", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream") // dropped before the 500
		panic("boom with " + secret)
	})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)

	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/boom", strings.NewReader(`{"body":"BODYSECRET"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, req)
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("status = %d, want 500", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json (rendered by render)", ct)
	}
	if !strings.Contains(body, `"server_error"`) || strings.Contains(body, "boom") {
		t.Errorf("body = %s, want the rendered error without the panic", body)
	}
	if resp.Header.Get(observability.RequestIDHeader) == "" {
		t.Errorf("X-Request-Id missing from the 500")
	}
	p := lines(t, logs, "panic in handler", 1)[0]
	if p["level"] != "ERROR" || !strings.Contains(p["panic"].(string), "boom with") ||
		!strings.Contains(p["stack"].(string), "middleware_test.go") || p["path"] != "/boom" ||
		p["request_id"] != resp.Header.Get(observability.RequestIDHeader) {
		t.Errorf("panic log line = %v", p)
	}
	a := lines(t, logs, "request", 1)[0]
	if a["status"] != 500.0 || a["route"] != "/boom" {
		t.Errorf("access log status, route = %v, %v; want 500, /boom", a["status"], a["route"])
	}
	for _, s := range []string{secret, "PANICSECRET", "BODYSECRET"} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("log contains %q:\n%s", s, logs.String())
		}
	}
}

func TestRecoverRepanics(t *testing.T) {
	tests := []struct {
		name        string
		handler     http.HandlerFunc
		wantStarted bool // a "panic in handler" line with response_started=true
	}{
		{"ErrAbortHandler passes through unlogged", func(w http.ResponseWriter, r *http.Request) {
			panic(http.ErrAbortHandler)
		}, false},
		{"panic after the response started aborts", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "data: partial\n\n")
			panic("mid-stream")
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, logs := newTestLogger(t)
			h := observability.AccessLog(logger)(observability.Recover(logger, renderJSON500)(tt.handler))
			rec := httptest.NewRecorder()
			func() {
				defer func() {
					v := recover()
					if err, _ := v.(error); !errors.Is(err, http.ErrAbortHandler) {
						t.Errorf("recovered %v, want http.ErrAbortHandler", v)
					}
				}()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil))
			}()
			if rec.Code == http.StatusInternalServerError {
				t.Errorf("a 500 was rendered, want none")
			}
			out := logs.String()
			if got := strings.Contains(out, `"response_started":true`); got != tt.wantStarted {
				t.Errorf("panic logged with response_started = %v, want %v:\n%s", got, tt.wantStarted, out)
			}
			if !tt.wantStarted && strings.Contains(out, "panic in handler") {
				t.Errorf("ErrAbortHandler was logged as a panic:\n%s", out)
			}
			if a := lines(t, logs, "request", 1)[0]; a["aborted"] != true {
				t.Errorf("access log line aborted = %v, want true", a["aborted"])
			}
		})
	}
}

// TestStreamingThroughMiddlewares sends a server-sent event stream through
// every middleware over a real connection: each event must reach the
// client when flushed, not when the handler returns, and
// http.ResponseController must reach the connection through the wrappers.
func TestStreamingThroughMiddlewares(t *testing.T) {
	logger, logs := newTestLogger(t)
	reg := newTestRegistry()
	r := newRouter(logger, reg)
	next := make(chan struct{})
	handlerErr := make(chan error, 1)
	r.Get("/v1/stream", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(http.Flusher); !ok {
			handlerErr <- errors.New("the wrapped writer is not an http.Flusher")
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			handlerErr <- fmt.Errorf("ResponseController.SetWriteDeadline through the wrappers: %w", err)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			if i%2 == 0 {
				w.(http.Flusher).Flush()
			} else if err := rc.Flush(); err != nil {
				handlerErr <- fmt.Errorf("ResponseController.Flush: %w", err)
				return
			}
			select { // wait until the client has read the event
			case <-next:
			case <-r.Context().Done():
				handlerErr <- r.Context().Err()
				return
			}
		}
		handlerErr <- nil
	})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			select {
			case herr := <-handlerErr:
				t.Fatalf("event %d: %v; handler: %v", i, err, herr)
			default:
				t.Fatalf("event %d: %v (was it flushed?)", i, err)
			}
		}
		if want := fmt.Sprintf("data: %d\n", i); line != want {
			t.Fatalf("event %d = %q, want %q", i, line, want)
		}
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		next <- struct{}{}
	}
	if err := <-handlerErr; err != nil {
		t.Fatal(err)
	}
	a := lines(t, logs, "request", 1)[0]
	if a["status"] != 200.0 || a["bytes"] != float64(3*len("data: 0\n\n")) || a["route"] != "/v1/stream" {
		t.Errorf("access log = %v", a)
	}
}

func TestHealth(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(observability.Health))
	t.Cleanup(srv.Close)
	resp, body := get(t, newRequest(t, http.MethodGet, srv.URL, nil))
	if resp.StatusCode != http.StatusOK || body != `{"status":"ok"}` {
		t.Errorf("Health = %d %q, want 200 {\"status\":\"ok\"}", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
}

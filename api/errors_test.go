package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/dispatch"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

func TestAuthErrors(t *testing.T) {
	e := newEnv(t, envOptions{})
	expired := e.addToken("expired", func(r *store.APIToken) { r.ExpiresAt = time.Now().Add(-time.Hour) })
	tests := []struct {
		name string
		req  request
		want wantError
	}{
		{"chat without token", request{method: "POST", path: "/v1/chat/completions", contentType: "-", body: chatBody("")},
			wantError{401, "invalid_request_error", "invalid_api_key", "", "didn't provide an API key"}},
		{"chat with unknown token", request{method: "POST", path: "/v1/chat/completions", token: "sk-ap-notatoken", contentType: "-", body: chatBody("")},
			wantError{401, "invalid_request_error", "invalid_api_key", "", "Incorrect API key"}},
		{"chat with expired token", request{method: "POST", path: "/v1/chat/completions", token: expired, contentType: "-", body: chatBody("")},
			wantError{401, "invalid_request_error", "invalid_api_key", "", "expired"}},
		{"chat with basic auth", request{method: "POST", path: "/v1/chat/completions", auth: "Basic dXNlcjpwYXNz", contentType: "-", body: chatBody("")},
			wantError{401, "invalid_request_error", "invalid_api_key", "", "Bearer"}},
		{"chat with empty bearer", request{method: "POST", path: "/v1/chat/completions", auth: "Bearer ", contentType: "-", body: chatBody("")},
			wantError{401, "invalid_request_error", "invalid_api_key", "", "Bearer"}},
		{"models with unknown token", request{method: "GET", path: "/v1/models", token: "sk-ap-wrong"},
			wantError{401, "invalid_request_error", "invalid_api_key", "", "Incorrect API key"}},
		{"model with expired token", request{method: "GET", path: "/v1/models/" + testModel, token: expired},
			wantError{401, "invalid_request_error", "invalid_api_key", "", "expired"}},
		// Auth comes before anything about the body.
		{"no token and a bad body", request{method: "POST", path: "/v1/chat/completions", contentType: "text/plain", body: "x"},
			wantError{401, "invalid_request_error", "invalid_api_key", "", "API key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.do(tt.req)
			checkError(t, resp, body, tt.want)
			if strings.Contains(string(body), tt.req.token) && tt.req.token != "" {
				t.Errorf("body %s echoes the token", body)
			}
		})
	}
	if n := len(e.gw.Requests()); n != 0 {
		t.Errorf("the upstream saw %d requests, want 0", n)
	}
}

func TestRequestErrors(t *testing.T) {
	e := newEnv(t, envOptions{cfg: Config{MaxBodyBytes: 1024}})
	restricted := e.addToken("restricted", func(r *store.APIToken) { r.AllowedModels = []string{"claude-opus-4"} })
	big := chatBody(`"user":"` + strings.Repeat("x", 2000) + `"`)
	chat := func(contentType, body string) request {
		return request{method: "POST", path: "/v1/chat/completions", token: e.token, contentType: contentType, body: body}
	}
	tests := []struct {
		name string
		req  request
		want wantError
	}{
		{"malformed JSON", chat("-", `{"model":`),
			wantError{400, "invalid_request_error", "", "", "not valid JSON"}},
		{"missing model", chat("-", `{"messages":[{"role":"user","content":"x"}]}`),
			wantError{400, "invalid_request_error", "", "model", "model"}},
		{"empty messages", chat("-", `{"model":"`+testModel+`","messages":[]}`),
			wantError{400, "invalid_request_error", "", "messages", "messages"}},
		{"wrong field type", chat("-", chatBody(`"temperature":"hot"`)),
			wantError{400, "invalid_request_error", "", "temperature", "Invalid type for 'temperature'"}},
		{"wrong nested type", chat("-", `{"model":"m","messages":[{"role":"user","content":"x"},{"role":true}]}`),
			wantError{400, "invalid_request_error", "", "messages[1].role", "messages[1].role"}},
		{"tool message without tool_call_id", chat("-", `{"model":"m","messages":[{"role":"tool","content":"x"}]}`),
			wantError{400, "invalid_request_error", "", "messages[0].tool_call_id", "tool_call_id"}},
		{"unknown model", chat("-", `{"model":"gpt-99","messages":[{"role":"user","content":"x"}]}`),
			wantError{404, "invalid_request_error", "model_not_found", "model", "'gpt-99' does not exist"}},
		{"model not allowed", request{method: "POST", path: "/v1/chat/completions", token: restricted, contentType: "-", body: chatBody("")},
			wantError{403, "permission_error", "model_not_allowed", "model", "not allowed"}},
		{"body too large", chat("-", big),
			wantError{413, "invalid_request_error", "request_too_large", "", "1024 bytes"}},
		{"chunked body too large", request{method: "POST", path: "/v1/chat/completions", token: e.token, contentType: "-", body: big, chunked: true},
			wantError{413, "invalid_request_error", "request_too_large", "", "1024 bytes"}},
		{"form content type", chat("application/x-www-form-urlencoded", chatBody("")),
			wantError{415, "invalid_request_error", "unsupported_media_type", "", "Content-Type: application/json"}},
		{"text content type", chat("text/plain", chatBody("")),
			wantError{415, "invalid_request_error", "unsupported_media_type", "", "text/plain"}},
		{"malformed content type", chat("application/json; ===", chatBody("")),
			wantError{415, "invalid_request_error", "unsupported_media_type", "", "Unsupported Content-Type"}},
		{"wrong method on chat", request{method: "GET", path: "/v1/chat/completions", token: e.token},
			wantError{405, "invalid_request_error", "method_not_allowed", "", "Allowed: POST"}},
		{"wrong method on models", request{method: "POST", path: "/v1/models", token: e.token, contentType: "-", body: "{}"},
			wantError{405, "invalid_request_error", "method_not_allowed", "", "Allowed: GET"}},
		{"wrong method on a model", request{method: "DELETE", path: "/v1/models/" + testModel, token: e.token},
			wantError{405, "invalid_request_error", "method_not_allowed", "", "Allowed: GET"}},
		{"unknown route", request{method: "GET", path: "/v1/embeddings", token: e.token},
			wantError{404, "invalid_request_error", "unknown_url", "", "/v1/embeddings"}},
		{"unknown root route", request{method: "GET", path: "/nope"},
			wantError{404, "invalid_request_error", "unknown_url", "", "/nope"}},
		{"unknown model by id", request{method: "GET", path: "/v1/models/anthropic:nope@1"},
			wantError{404, "invalid_request_error", "model_not_found", "model", "'anthropic:nope@1'"}},
		{"empty model id", request{method: "GET", path: "/v1/models/"},
			wantError{404, "invalid_request_error", "model_not_found", "model", "does not exist"}},
		{"restricted token asks for another model", request{method: "GET", path: "/v1/models/" + testModel, token: restricted},
			wantError{404, "invalid_request_error", "model_not_found", "model", testModel}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.do(tt.req)
			checkError(t, resp, body, tt.want)
			if tt.want.status == http.StatusMethodNotAllowed {
				want := strings.TrimSuffix(tt.want.msg[len("Allowed: "):], ".")
				if got := resp.Header.Get("Allow"); got != want {
					t.Errorf("Allow = %q, want %q", got, want)
				}
			}
		})
	}
	if n := len(e.gw.Requests()); n != 0 {
		t.Errorf("the upstream saw %d requests, want 0", n)
	}
}

func TestMissingContentTypeIsJSON(t *testing.T) {
	e := newEnv(t, envOptions{})
	resp, body := e.do(request{method: "POST", path: "/v1/chat/completions", token: e.token, body: chatBody("")})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s), want 200", resp.StatusCode, body)
	}
	resp, body = e.do(request{method: "POST", path: "/v1/chat/completions", token: e.token, contentType: "application/json; charset=utf-8", body: chatBody("")})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("with charset: status = %d (%s), want 200", resp.StatusCode, body)
	}
}

// TestUpstreamErrors covers what reaches the client when the upstream or
// the pool cannot serve: pass-through client errors, the double 403, and
// every dispatch failure.
func TestUpstreamErrors(t *testing.T) {
	tests := []struct {
		name       string
		opts       envOptions
		before     func(t *testing.T, e *env) // earlier requests that set the pool up
		want       wantError
		retryAfter string // "" expects no Retry-After; "*" any positive value
	}{
		{
			name: "upstream 400 passed through",
			opts: envOptions{creds: []fake.Credential{testCred("c1", fake.Behavior{Fault: fake.BadRequest, Message: "messages: roles must alternate"})}},
			want: wantError{400, "invalid_request_error", "", "", "messages: roles must alternate"},
		},
		{
			name: "upstream context overflow keeps its code",
			opts: envOptions{creds: []fake.Credential{testCred("c1", fake.Behavior{Fault: fake.ContextOverflow})}},
			want: wantError{400, "invalid_request_error", "context_length_exceeded", "", ""},
		},
		{
			name: "upstream 413 passed through",
			opts: envOptions{creds: []fake.Credential{testCred("c1", fake.Behavior{Fault: fake.TooLarge})}},
			want: wantError{413, "invalid_request_error", "", "", "too large"},
		},
		{
			name: "two credentials answering 403",
			opts: envOptions{creds: []fake.Credential{
				testCred("c1", fake.Behavior{Fault: fake.Forbidden}), testCred("c2", fake.Behavior{Fault: fake.Forbidden})}},
			want: wantError{403, "permission_error", "upstream_forbidden", "", ""},
		},
		{
			name: "no credentials",
			opts: envOptions{noCreds: true},
			want: wantError{503, "server_error", "no_credentials", "", "no credentials"},
		},
		{
			name:       "all rate limited",
			opts:       envOptions{creds: []fake.Credential{testCred("c1", fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterSeconds: 40})}},
			want:       wantError{429, "rate_limit_error", "rate_limit_exceeded", "", "rate limited"},
			retryAfter: "41",
		},
		{
			name: "upstream failed",
			opts: envOptions{creds: []fake.Credential{testCred("c1", fake.Behavior{Fault: fake.InternalError}), testCred("c2", fake.Behavior{Fault: fake.Overloaded})}},
			want: wantError{502, "server_error", "upstream_error", "", ""},
		},
		{
			name: "all cooling",
			opts: envOptions{
				creds:   []fake.Credential{testCred("c1", fake.Behavior{Fault: fake.Unavailable})},
				poolCfg: pool.Config{BackoffBase: time.Minute, BackoffMax: time.Minute},
			},
			before: func(t *testing.T, e *env) {
				resp, body := e.chat(chatBody(""))
				checkError(t, resp, body, wantError{502, "server_error", "upstream_error", "", ""})
			},
			want:       wantError{503, "server_error", "credentials_cooling", "", ""},
			retryAfter: "*",
		},
		{
			name: "retry budget exhausted",
			opts: envOptions{
				creds: []fake.Credential{testCred("c1", fake.Behavior{Fault: fake.BadGateway}), testCred("c2", fake.Behavior{Fault: fake.BadGateway})},
				disp:  dispatch.Config{RetryBudgetRatio: 1e-9, RetryBudgetPerSecond: 1e-9},
			},
			want: wantError{502, "server_error", "retry_budget_exhausted", "", ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.opts)
			if tt.before != nil {
				tt.before(t, e)
			}
			resp, body := e.chat(chatBody(""))
			checkError(t, resp, body, tt.want)
			switch got := resp.Header.Get("Retry-After"); {
			case tt.retryAfter == "*" && (got == "" || got == "0"):
				t.Errorf("Retry-After = %q, want a positive number", got)
			case tt.retryAfter != "*" && got != tt.retryAfter:
				t.Errorf("Retry-After = %q, want %q", got, tt.retryAfter)
			}
		})
	}
}

// TestQueueErrors fills a one-slot pool with a hanging request and checks
// the two ways a waiting request fails.
func TestQueueErrors(t *testing.T) {
	tests := []struct {
		name string
		disp dispatch.Config
		want wantError
	}{
		{"queue timeout", dispatch.Config{QueueTimeout: 50 * time.Millisecond},
			wantError{503, "server_error", "queue_timeout", "", ""}},
		{"queue full", dispatch.Config{QueueMax: 1, QueueTimeout: 10 * time.Second},
			wantError{503, "server_error", "queue_full", "", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{
				creds:   []fake.Credential{testCred("c1", fake.Behavior{Fault: fake.Hang})},
				maxConc: 1,
				disp:    tt.disp,
			})
			ctx, cancel := context.WithCancel(t.Context())
			hold := func() (done chan struct{}) {
				done = make(chan struct{})
				go func() {
					defer close(done)
					req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/chat/completions", strings.NewReader(chatBody("")))
					req.Header.Set("Authorization", "Bearer "+e.token)
					if resp, err := e.srv.Client().Do(req); err == nil {
						resp.Body.Close()
					}
				}()
				return done
			}
			var held []chan struct{}
			held = append(held, hold())
			eventually(t, 5*time.Second, "the first request holds the slot", func() bool { return e.credStatus("c1").InFlight == 1 })
			if tt.disp.QueueMax == 1 {
				held = append(held, hold()) // takes the only queue place
				time.Sleep(50 * time.Millisecond)
			}
			resp, body := e.chat(chatBody(""))
			checkError(t, resp, body, tt.want)
			if got := resp.Header.Get("Retry-After"); got == "" {
				t.Errorf("Retry-After is missing")
			}
			cancel()
			for _, d := range held {
				<-d
			}
		})
	}
}

func TestRecoverRendersOpenAIError(t *testing.T) {
	e := newEnv(t, envOptions{ready: func(context.Context) error { panic("the store exploded at /secret/path.go:12") }})
	resp, body := e.do(request{method: "GET", path: "/ready"})
	checkError(t, resp, body, wantError{500, "server_error", "internal_error", "", "server had an error"})
	if strings.Contains(string(body), "exploded") {
		t.Errorf("body %s leaks the panic", body)
	}
}

func TestDispatchStatusCoversEveryKind(t *testing.T) {
	for k := dispatch.NoCredentials; k <= dispatch.Canceled; k++ {
		status, typ, code := dispatchStatus(k)
		if status < 400 || typ == "" || code == "" {
			t.Errorf("dispatchStatus(%s) = %d, %q, %q; want an error status, type and code", k, status, typ, code)
		}
	}
	if !errors.Is(&dispatch.Error{Kind: dispatch.Canceled, Last: context.Canceled}, context.Canceled) {
		t.Errorf("a canceled dispatch error does not unwrap to context.Canceled")
	}
}

func TestNewChecksConfigAndDeps(t *testing.T) {
	e := newEnv(t, envOptions{})
	full := Deps{Tokens: e.tokens, Catalog: e.api.catalog, Upstream: e.api.up, Dispatcher: e.api.disp}
	tests := []struct {
		name    string
		cfg     Config
		deps    func(d Deps) Deps
		wantErr string
	}{
		{"defaults", Config{}, func(d Deps) Deps { return d }, ""},
		{"negative body limit", Config{MaxBodyBytes: -1}, func(d Deps) Deps { return d }, "MaxBodyBytes"},
		{"negative keep-alive", Config{StreamKeepAlive: -time.Second}, func(d Deps) Deps { return d }, "StreamKeepAlive"},
		{"no tokens", Config{}, func(d Deps) Deps { d.Tokens = nil; return d }, "Tokens"},
		{"nothing", Config{}, func(Deps) Deps { return Deps{} }, "Tokens, Catalog, Upstream, Dispatcher"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(tt.cfg, tt.deps(full))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if a.cfg.MaxBodyBytes != DefaultMaxBodyBytes || a.cfg.StreamKeepAlive != DefaultStreamKeepAlive {
					t.Errorf("config = %+v, want the defaults", a.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New error = %v, want one naming %q", err, tt.wantErr)
			}
		})
	}
}

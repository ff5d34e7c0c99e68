package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/schematest"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// The dispatcher classifies errors through this interface.
var _ interface {
	Outcome() pool.Outcome
	RetryAfter() time.Duration
} = (*Error)(nil)

var alice = pool.Credential{
	ID: "cred_alice", Email: "alice@example.com", Token: "alice-secret-token-123",
	CloudID: "11111111-2222-4333-8444-555555555555",
}

const testUA = "atlassian-proxy/test"

// startFake serves a fake gateway that knows alice and returns a client for it.
func startFake(t *testing.T) (*fake.Server, *Client) {
	t.Helper()
	srv := fake.Start(t, fake.Options{Credentials: []fake.Credential{
		{ID: alice.ID, Email: alice.Email, Token: alice.Token, CloudID: alice.CloudID},
	}})
	c, err := NewClient(Config{BaseURL: srv.URL, UserAgent: testUA}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return srv, c
}

func mustModel(t *testing.T, name string) Model {
	t.Helper()
	m, ok := DefaultCatalog().Lookup(name)
	if !ok {
		t.Fatalf("model %q not in catalog", name)
	}
	return m
}

func hello(model string) *ChatRequest {
	return &ChatRequest{Model: model, Messages: []Message{{Role: "user", Content: json.RawMessage(`"Hello"`)}}}
}

// asError asserts err is an *Error.
func asError(t *testing.T, err error) *Error {
	t.Helper()
	var ge *Error
	if !errors.As(err, &ge) {
		t.Fatalf("error %v (%T) is not a *gateway.Error", err, err)
	}
	return ge
}

// noSecrets fails if s contains any of alice's secrets.
func noSecrets(t *testing.T, s string) {
	t.Helper()
	for _, secret := range []string{alice.Email, alice.Token, basicToken(alice)} {
		if strings.Contains(s, secret) {
			t.Errorf("%q contains the secret %q", s, secret)
		}
	}
}

func TestRequestHeadersAndBody(t *testing.T) {
	tests := []struct {
		name      string
		model     string
		stream    bool
		cred      pool.Credential
		upstream  string
		wantCloud bool
	}{
		{"bedrock prefix stripped once", "bedrock:anthropic.claude-sonnet-4-20250514-v1:0", false, alice, "anthropic.claude-sonnet-4-20250514-v1:0", true},
		{"anthropic prefix", "anthropic:claude-sonnet-4@20250514", true, alice, "claude-sonnet-4@20250514", true},
		{"google prefix", "google:gemini-2.5-pro-preview-03-25", false, alice, "gemini-2.5-pro-preview-03-25", true},
		{"alias", "claude-opus-4-5", true, alice, "anthropic.claude-opus-4-5-20251101-v1:0", true},
		{"no cloud id", "gpt-5", false, pool.Credential{ID: alice.ID, Email: alice.Email, Token: alice.Token}, "gpt-5-2025-08-07", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, c := startFake(t)
			m := mustModel(t, tt.model)
			if tt.stream {
				s, err := c.Stream(t.Context(), tt.cred, m, hello(tt.model))
				if err != nil {
					t.Fatal(err)
				}
				s.Close()
			} else if _, err := c.Complete(t.Context(), tt.cred, m, hello(tt.model)); err != nil {
				t.Fatal(err)
			}
			r, ok := srv.LastRequest()
			if !ok {
				t.Fatal("no request recorded")
			}
			if r.CredentialID != alice.ID || r.Method != http.MethodPost || r.Path != PathUnifiedChat {
				t.Errorf("request = %s %s as %q", r.Method, r.Path, r.CredentialID)
			}
			enc := base64.StdEncoding.EncodeToString([]byte(alice.Email + ":" + alice.Token))
			wantHeaders := map[string]string{
				"Authorization":            "Basic " + enc,
				"X-Atlassian-Encodedtoken": enc,
				"Content-Type":             "application/json",
				"User-Agent":               testUA,
				"Accept":                   "application/json",
			}
			if tt.stream {
				wantHeaders["Accept"] = "text/event-stream"
			}
			if tt.wantCloud {
				wantHeaders["X-Atlassian-Cloudid"] = alice.CloudID
				wantHeaders["X-Rovodev-Billing-Cloudid"] = alice.CloudID
			}
			for k, want := range wantHeaders {
				if got := r.Header.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			// Nothing else that could pass for Atlassian's own CLI.
			for k := range r.Header {
				switch k {
				case "Authorization", "X-Atlassian-Encodedtoken", "Content-Type", "User-Agent", "Accept",
					"Accept-Encoding", "Content-Length":
				case "X-Atlassian-Cloudid", "X-Rovodev-Billing-Cloudid":
					if !tt.wantCloud {
						t.Errorf("header %s sent without a cloud id", k)
					}
				default:
					t.Errorf("unexpected header %s: %q", k, r.Header.Get(k))
				}
			}
			if r.Model != tt.upstream {
				t.Errorf("platform_attributes.model = %q, want %q", r.Model, tt.upstream)
			}
			var body struct {
				RequestPayload map[string]json.RawMessage `json:"request_payload"`
			}
			if err := json.Unmarshal(r.Body, &body); err != nil {
				t.Fatal(err)
			}
			if got, want := string(body.RequestPayload["stream"]), map[bool]string{true: "true", false: "false"}[tt.stream]; got != want {
				t.Errorf("stream = %s, want the JSON boolean %s", got, want)
			}
			if _, ok := body.RequestPayload["model"]; ok {
				t.Error("request_payload contains model")
			}
		})
	}
}

func TestCompleteOK(t *testing.T) {
	srv, c := startFake(t)
	m := mustModel(t, "claude-sonnet-4")
	tests := []struct {
		name     string
		b        fake.Behavior
		wantText *string
	}{
		{"parts", fake.Behavior{}, ptr(fake.DefaultText)},
		{"custom text", fake.Behavior{Text: "Bonjour."}, ptr("Bonjour.")},
		{"string content", fake.Behavior{Content: fake.ContentString, Text: "plain"}, ptr("plain")},
		{"null content", fake.Behavior{Content: fake.ContentNull}, nil},
		{"empty content", fake.Behavior{Content: fake.ContentEmpty}, nil},
		{"no ids", fake.Behavior{NoIDs: true}, ptr(fake.DefaultText)},
		{"no usage", fake.Behavior{NoUsage: true}, ptr(fake.DefaultText)},
		{"thinking part first", fake.Behavior{Thinking: "let me see"}, ptr(fake.DefaultText)},
		{"only a thinking part", fake.Behavior{Thinking: "let me see", Content: fake.ContentEmpty}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.Push(alice.ID, 1, tt.b)
			cc, err := c.Complete(t.Context(), alice, m, hello("claude-sonnet-4"))
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := json.Marshal(cc)
			schematest.Validate(t, schematest.ChatCompletion, raw)
			got := cc.Choices[0].Message.Content
			if (got == nil) != (tt.wantText == nil) || (got != nil && *got != *tt.wantText) {
				t.Errorf("content = %v, want %v", got, tt.wantText)
			}
			if cc.Model != "claude-sonnet-4" || cc.Choices[0].FinishReason != "stop" || cc.ID == "" || cc.Created == 0 {
				t.Errorf("completion = %s", raw)
			}
			if tt.b.NoUsage != (cc.Usage == nil) {
				t.Errorf("usage = %+v, want present %v", cc.Usage, !tt.b.NoUsage)
			}
			if cc.Usage != nil && (cc.Usage.PromptTokens <= 0 || cc.Usage.TotalTokens != cc.Usage.PromptTokens+cc.Usage.CompletionTokens) {
				t.Errorf("usage = %+v", *cc.Usage)
			}
		})
	}
}

func TestCompleteToolCalls(t *testing.T) {
	srv, c := startFake(t)
	srv.SetBehavior(alice.ID, fake.Behavior{Content: fake.ContentNull, ToolCalls: []fake.ToolCall{
		{ID: "toolu_1", Name: "weather", Arguments: json.RawMessage(`{"city": "Paris"}`)},
		{ID: "toolu_2", Name: "time", Arguments: json.RawMessage(`"{\"tz\":\"UTC\"}"`)},
		{Name: "noop", Arguments: json.RawMessage(`null`)},
		{ID: "toolu_4", Name: "none"},
	}})
	req := hello("claude-sonnet-4")
	req.Tools = []Tool{{Type: "function", Function: FunctionSpec{Name: "weather"}}}
	cc, err := c.Complete(t.Context(), alice, mustModel(t, "claude-sonnet-4"), req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(cc)
	schematest.Validate(t, schematest.ChatCompletion, raw)
	ch := cc.Choices[0]
	if ch.FinishReason != "tool_calls" || ch.Message.Content != nil {
		t.Errorf("finish %q content %v, want tool_calls and null", ch.FinishReason, ch.Message.Content)
	}
	want := []string{`{"city":"Paris"}`, `{"tz":"UTC"}`, `{}`, `{}`}
	if len(ch.Message.ToolCalls) != len(want) {
		t.Fatalf("got %d tool calls, want %d", len(ch.Message.ToolCalls), len(want))
	}
	for i, tc := range ch.Message.ToolCalls {
		if tc.Function.Arguments != want[i] || tc.ID == "" || tc.Type != "function" {
			t.Errorf("tool call %d = %+v, want arguments %s", i, tc, want[i])
		}
	}
	for _, chunk := range Chunks(cc) {
		raw, _ := json.Marshal(chunk)
		schematest.Validate(t, schematest.ChatCompletionChunk, raw)
	}
}

// faultCase is one upstream failure and its expected classification.
type faultCase struct {
	name      string
	b         fake.Behavior
	status    int
	kind      pool.Outcome
	retry     time.Duration // checked within ±2 s when non-zero
	code      string
	msgSubstr string
}

func faultCases() []faultCase {
	return []faultCase{
		{"429 minute", fake.Behavior{Fault: fake.RateLimitMinute}, 429, pool.OutcomeRateLimited, 31 * time.Second, CodeMinuteLimit, "Rate limit"},
		{"429 minute short", fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterSeconds: 5}, 429, pool.OutcomeRateLimited, 6 * time.Second, CodeMinuteLimit, ""},
		{"429 Retry-After seconds", fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterHeader: "7"}, 429, pool.OutcomeRateLimited, 7 * time.Second, CodeMinuteLimit, ""},
		{"429 Retry-After date", fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterHeader: time.Now().Add(20 * time.Second).UTC().Format(http.TimeFormat)}, 429, pool.OutcomeRateLimited, 20 * time.Second, CodeMinuteLimit, ""},
		{"429 no retry given", fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterSeconds: -1}, 429, pool.OutcomeRateLimited, 10 * time.Second, CodeMinuteLimit, ""},
		{"429 daily", fake.Behavior{Fault: fake.RateLimitDaily}, 429, pool.OutcomeQuotaExhausted, time.Hour, CodeDailyLimit, "Daily"},
		{"429 daily long", fake.Behavior{Fault: fake.RateLimitDaily, RetryAfterSeconds: 50000}, 429, pool.OutcomeQuotaExhausted, 50000 * time.Second, CodeDailyLimit, ""},
		{"429 daily no retry given", fake.Behavior{Fault: fake.RateLimitDaily, RetryAfterSeconds: -1}, 429, pool.OutcomeQuotaExhausted, 0, CodeDailyLimit, "Daily"},
		{"401", fake.Behavior{Fault: fake.Unauthorized}, 401, pool.OutcomeUnauthorized, 0, "", ""},
		{"403", fake.Behavior{Fault: fake.Forbidden}, 403, pool.OutcomeForbidden, 0, "", "Forbidden"},
		{"403 user blocked", fake.Behavior{Fault: fake.UserBlocked}, 403, pool.OutcomeForbidden, 0, CodeUserBlocked, "blocked"},
		{"400 message", fake.Behavior{Fault: fake.BadRequest, Message: "messages.1.content: field required"}, 400, pool.OutcomeClientError, 0, "", "messages.1.content: field required"},
		{"400 context overflow", fake.Behavior{Fault: fake.ContextOverflow}, 400, pool.OutcomeClientError, 0, CodeContextLength, "exceed context limit"},
		{"413", fake.Behavior{Fault: fake.TooLarge}, 413, pool.OutcomeClientError, 0, "", "too large"},
		{"404", fake.Behavior{Fault: fake.Status, Status: 404, Message: "no such model"}, 404, pool.OutcomeClientError, 0, "", "no such model"},
		{"422", fake.Behavior{Fault: fake.Status, Status: 422}, 422, pool.OutcomeClientError, 0, "", "status 422"},
		{"500", fake.Behavior{Fault: fake.InternalError}, 500, pool.OutcomeServerError, 0, "", "status 500"},
		{"502", fake.Behavior{Fault: fake.BadGateway}, 502, pool.OutcomeServerError, 0, "", "status 502"},
		{"503", fake.Behavior{Fault: fake.Unavailable}, 503, pool.OutcomeServerError, 0, "", "Unavailable"},
		{"503 Retry-After", fake.Behavior{Fault: fake.Unavailable, RetryAfterHeader: "3"}, 503, pool.OutcomeServerError, 3 * time.Second, "", ""},
		{"529", fake.Behavior{Fault: fake.Overloaded}, 529, pool.OutcomeServerError, 0, "", "Overloaded"},
		{"dropped connection", fake.Behavior{Fault: fake.Drop}, 0, pool.OutcomeTransport, 0, "", "could not be reached"},
	}
}

func checkFault(t *testing.T, tc faultCase, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	ge := asError(t, err)
	if ge.Status != tc.status || ge.Kind != tc.kind || ge.Outcome() != tc.kind || ge.Code != tc.code {
		t.Errorf("got status %d kind %v code %q, want %d %v %q (%v)", ge.Status, ge.Kind, ge.Code, tc.status, tc.kind, tc.code, err)
	}
	if tc.retry != 0 {
		if d := ge.RetryAfter() - tc.retry; d < -2*time.Second || d > 2*time.Second {
			t.Errorf("retry = %v, want %v", ge.RetryAfter(), tc.retry)
		}
	} else if ge.Retry != 0 {
		t.Errorf("retry = %v, want 0", ge.Retry)
	}
	if ge.Message == "" || !strings.Contains(ge.Message, tc.msgSubstr) {
		t.Errorf("message = %q, want it to contain %q", ge.Message, tc.msgSubstr)
	}
	noSecrets(t, err.Error())
	noSecrets(t, ge.Message)
}

func TestCompleteFaults(t *testing.T) {
	srv, c := startFake(t)
	m := mustModel(t, "claude-sonnet-4")
	extra := []faultCase{
		{"cut before body", fake.Behavior{Fault: fake.CutBeforeFirstEvent}, 0, pool.OutcomeTransport, 0, "", ""},
		{"cut mid body", fake.Behavior{Fault: fake.CutMidStream}, 0, pool.OutcomeTransport, 0, "", ""},
		{"malformed body", fake.Behavior{Fault: fake.Malformed}, 200, pool.OutcomeServerError, 0, "", "malformed"},
	}
	for _, tc := range append(faultCases(), extra...) {
		t.Run(tc.name, func(t *testing.T) {
			srv.Push(alice.ID, 1, tc.b)
			_, err := c.Complete(t.Context(), alice, m, hello("claude-sonnet-4"))
			checkFault(t, tc, err)
		})
	}
	t.Run("recovers after the queued faults", func(t *testing.T) {
		if _, err := c.Complete(t.Context(), alice, m, hello("claude-sonnet-4")); err != nil {
			t.Fatal(err)
		}
	})
}

func TestUnknownCredential(t *testing.T) {
	_, c := startFake(t)
	for _, cred := range []pool.Credential{
		{ID: "x", Email: alice.Email, Token: "wrong-token"},
		{ID: "y", Email: "bob@example.com", Token: alice.Token},
		{},
	} {
		_, err := c.Complete(t.Context(), cred, mustModel(t, "gpt-5"), hello("gpt-5"))
		if ge := asError(t, err); ge.Kind != pool.OutcomeUnauthorized || ge.Status != 401 {
			t.Errorf("%s: got %v, want 401 unauthorized", cred.ID, err)
		}
		if cred.Token != "" && strings.Contains(err.Error(), cred.Token) {
			t.Errorf("error %q contains the token", err)
		}
	}
}

func TestErrorMessagesAreSafe(t *testing.T) {
	srv, c := startFake(t)
	m := mustModel(t, "claude-sonnet-4")
	leaky := "bad token " + alice.Token + " for " + alice.Email + "; Authorization: Basic " + basicToken(alice) + " rejected"
	t.Run("secrets redacted", func(t *testing.T) {
		srv.Push(alice.ID, 1, fake.Behavior{Fault: fake.BadRequest, Message: leaky})
		_, err := c.Complete(t.Context(), alice, m, hello("m"))
		ge := asError(t, err)
		noSecrets(t, ge.Message)
		noSecrets(t, err.Error())
		if !strings.Contains(ge.Message, "rejected") || !strings.Contains(ge.Message, "[redacted]") {
			t.Errorf("message = %q, want the rest kept", ge.Message)
		}
	})
	t.Run("long message truncated", func(t *testing.T) {
		srv.Push(alice.ID, 1, fake.Behavior{Fault: fake.BadRequest, Message: strings.Repeat("é", 3000)})
		_, err := c.Complete(t.Context(), alice, m, hello("m"))
		if n := utf8.RuneCountInString(asError(t, err).Message); n > maxMessageLen+1 {
			t.Errorf("message has %d runes, want at most %d", n, maxMessageLen+1)
		}
	})
	t.Run("control characters removed", func(t *testing.T) {
		srv.Push(alice.ID, 1, fake.Behavior{Fault: fake.BadRequest, Message: "line1\nline2\x00\x1b[31m"})
		_, err := c.Complete(t.Context(), alice, m, hello("m"))
		if msg := asError(t, err).Message; strings.ContainsAny(msg, "\n\x00\x1b") {
			t.Errorf("message = %q contains control characters", msg)
		}
	})
	t.Run("bearer tokens redacted", func(t *testing.T) {
		if got := sanitize("header Bearer sk-ap-abcdef123456 was sent", pool.Credential{}); strings.Contains(got, "sk-ap-abcdef") {
			t.Errorf("sanitize = %q", got)
		}
	})
}

func TestErrorBodyIsBounded(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"message":"` + big + `"}`))
	}))
	defer hs.Close()
	c, err := NewClient(Config{BaseURL: hs.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Complete(t.Context(), alice, mustModel(t, "gpt-5"), hello("gpt-5"))
	ge := asError(t, err)
	// 64 KiB of a 1 MiB body is not JSON: the message falls back to a generic one.
	if ge.Kind != pool.OutcomeClientError || ge.Message != "the upstream rejected the request (status 400)" {
		t.Errorf("got %v, want a client error with the generic message", err)
	}
}

func TestCanceledAndTimeout(t *testing.T) {
	srv, c := startFake(t)
	srv.SetBehavior(alice.ID, fake.Behavior{Fault: fake.Hang})
	m := mustModel(t, "claude-sonnet-4")
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err := c.Complete(ctx, alice, m, hello("m"))
		if ge := asError(t, err); ge.Kind != pool.OutcomeCanceled || !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want canceled wrapping context.Canceled", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := c.Stream(ctx, alice, m, hello("m"))
		if ge := asError(t, err); ge.Kind != pool.OutcomeTimeout || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want timeout wrapping context.DeadlineExceeded", err)
		}
	})
	t.Run("in-flight released", func(t *testing.T) {
		deadline := time.Now().Add(2 * time.Second)
		for srv.Stats(alice.ID).InFlight != 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if n := srv.Stats(alice.ID).InFlight; n != 0 {
			t.Errorf("in flight = %d after the clients gave up, want 0", n)
		}
	})
}

func TestTransportErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := NewClient(Config{BaseURL: "http://" + addr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Complete(t.Context(), alice, mustModel(t, "gpt-5"), hello("gpt-5"))
	if ge := asError(t, err); ge.Kind != pool.OutcomeTransport || ge.Status != 0 {
		t.Errorf("got %v, want a transport error", err)
	}
	noSecrets(t, err.Error())

	t.Run("transport timeout", func(t *testing.T) {
		release := make(chan struct{})
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}))
		defer hs.Close()
		defer close(release)
		tr := NewTransport()
		tr.ResponseHeaderTimeout = 50 * time.Millisecond
		c, err := NewClient(Config{BaseURL: hs.URL}, &http.Client{Transport: tr})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Complete(t.Context(), alice, mustModel(t, "gpt-5"), hello("gpt-5"))
		if ge := asError(t, err); ge.Kind != pool.OutcomeTimeout {
			t.Errorf("got %v, want a timeout", err)
		}
	})
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	hs := httptest.NewServer(http.RedirectHandler(other.URL+"/steal", http.StatusTemporaryRedirect))
	defer hs.Close()
	c, err := NewClient(Config{BaseURL: hs.URL}, &http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Complete(t.Context(), alice, mustModel(t, "gpt-5"), hello("gpt-5"))
	if ge := asError(t, err); ge.Kind != pool.OutcomeServerError || ge.Status != http.StatusTemporaryRedirect {
		t.Errorf("got %v, want a server error for the 307", err)
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests, want 0", n)
	}
}

func TestConnectionReuse(t *testing.T) {
	g := fake.New(fake.Options{Credentials: []fake.Credential{{ID: alice.ID, Email: alice.Email, Token: alice.Token}}})
	hs := httptest.NewUnstartedServer(g)
	var conns atomic.Int32
	hs.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	hs.Start()
	defer hs.Close()
	defer g.Close()
	c, err := NewClient(Config{BaseURL: hs.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := mustModel(t, "claude-sonnet-4")
	g.Push(alice.ID, 3, fake.Behavior{Fault: fake.RateLimitMinute})
	g.Push(alice.ID, 2, fake.Behavior{Fault: fake.InternalError})
	for i := range 20 {
		if i%2 == 0 {
			_, _ = c.Complete(t.Context(), alice, m, hello("m"))
			continue
		}
		s, err := c.Stream(t.Context(), alice, m, hello("m"))
		if err == nil {
			for _, err := s.Next(); err == nil; _, err = s.Next() {
			}
			s.Close()
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("20 sequential requests opened %d connections, want 1", n)
	}
}

func TestCheckCredits(t *testing.T) {
	srv, c := startFake(t)
	t.Run("ok", func(t *testing.T) {
		cr, err := c.CheckCredits(t.Context(), alice)
		if err != nil {
			t.Fatal(err)
		}
		if cr.Status != "OK" || cr.Balance.MonthlyTotal != 2000 || cr.Balance.DailyTotal != 5000000 {
			t.Errorf("credits = %+v", cr)
		}
		if r, _ := srv.LastRequest(); r.Method != http.MethodGet || r.Path != PathCreditsCheck || r.Header.Get("X-Atlassian-EncodedToken") == "" {
			t.Errorf("request = %s %s", r.Method, r.Path)
		}
	})
	tests := []struct {
		name    string
		fault   fake.Fault
		status  int
		kind    pool.Outcome
		blocked bool
	}{
		{"unauthorized", fake.Unauthorized, 401, pool.OutcomeUnauthorized, false},
		{"user blocked", fake.UserBlocked, 403, pool.OutcomeForbidden, true},
		{"server error", fake.BadGateway, 502, pool.OutcomeServerError, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.SetBehavior(alice.ID, fake.Behavior{Fault: tt.fault})
			defer srv.SetBehavior(alice.ID, fake.Behavior{})
			_, err := c.CheckCredits(t.Context(), alice)
			ge := asError(t, err)
			if ge.Status != tt.status || ge.Kind != tt.kind || IsUserBlocked(err) != tt.blocked {
				t.Errorf("got %v (blocked %v), want %d %v blocked %v", err, IsUserBlocked(err), tt.status, tt.kind, tt.blocked)
			}
		})
	}
	t.Run("rate limited", func(t *testing.T) {
		srv.SetBehavior(alice.ID, fake.Behavior{Fault: fake.RateLimitDaily, RetryAfterSeconds: 120})
		defer srv.SetBehavior(alice.ID, fake.Behavior{})
		cr, err := c.CheckCredits(t.Context(), alice)
		if err != nil {
			t.Fatal(err)
		}
		if cr.Status != "RATE_LIMITED" || cr.RetryAfterSeconds != 120 || cr.Balance.DailyRemaining != 0 {
			t.Errorf("credits = %+v", cr)
		}
	})
	t.Run("blocked in a 200", func(t *testing.T) {
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"status":"USER_BLOCKED","balance":{}}`))
		}))
		defer hs.Close()
		c, _ := NewClient(Config{BaseURL: hs.URL}, nil)
		_, err := c.CheckCredits(t.Context(), alice)
		if ge := asError(t, err); ge.Kind != pool.OutcomeForbidden || !IsUserBlocked(err) {
			t.Errorf("got %v, want forbidden USER_BLOCKED", err)
		}
	})
}

func TestSites(t *testing.T) {
	_, c := startFake(t)
	sites, err := c.Sites(t.Context(), alice)
	if err != nil {
		t.Fatal(err)
	}
	if len(sites) != 1 || sites[0].SiteID != alice.CloudID || !sites[0].HasActiveRovoDevSKU {
		t.Errorf("sites = %+v", sites)
	}
}

func TestNewClientConfig(t *testing.T) {
	for _, base := range []string{"ftp://x", "http://", "::", "https://user:pw@host", "https://host/?q=1"} {
		if _, err := NewClient(Config{BaseURL: base}, nil); err == nil {
			t.Errorf("NewClient(%q): no error", base)
		}
	}
	c, err := NewClient(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.base != DefaultBaseURL || !strings.HasPrefix(c.ua, "atlassian-proxy/") {
		t.Errorf("defaults: base %q ua %q", c.base, c.ua)
	}
	c, _ = NewClient(Config{BaseURL: "http://host:1/prefix/"}, nil)
	if c.base != "http://host:1/prefix" {
		t.Errorf("base = %q, want the trailing slash trimmed", c.base)
	}
}

func TestUnknownRoute(t *testing.T) {
	_, c := startFake(t)
	_, err := c.Complete(t.Context(), alice, Model{ID: "x", Upstream: "x", Route: "bedrock"}, hello("x"))
	if ge := asError(t, err); ge.Kind != pool.OutcomeClientError {
		t.Errorf("got %v, want a client error", err)
	}
}

func TestErrorString(t *testing.T) {
	e := &Error{Status: 429, Kind: pool.OutcomeRateLimited, Code: CodeMinuteLimit, Message: "slow down", Err: errors.New("cause")}
	if got, want := e.Error(), "gateway: rate_limited (status 429, MINUTE_LIMIT_EXCEEDED): slow down: cause"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if errors.Unwrap(e).Error() != "cause" {
		t.Error("Unwrap lost the cause")
	}
}

package fake_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
)

var bob = fake.Credential{ID: "cred_bob", Email: "bob@example.com", Token: "bob-token", CloudID: "c0ffee00-0000-4000-8000-000000000001"}

func start(t *testing.T) *fake.Server {
	t.Helper()
	return fake.Start(t, fake.Options{Credentials: []fake.Credential{bob}})
}

const okBody = `{"request_payload":{"messages":[{"role":"user","content":"Hi"}],"stream":false},"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`

func streamBody() string { return strings.Replace(okBody, `"stream":false`, `"stream":true`, 1) }

// post sends a chat request as cred (nil: no auth headers).
func post(t *testing.T, srv *fake.Server, cred *fake.Credential, body string, mutate ...func(*http.Request)) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/rovodev/v2/proxy/ai/v2/beta/chat", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		enc := base64.StdEncoding.EncodeToString([]byte(cred.Email + ":" + cred.Token))
		req.Header.Set("Authorization", "Basic "+enc)
		req.Header.Set("X-Atlassian-EncodedToken", enc)
	}
	req.Header.Set("Content-Type", "application/json")
	for _, m := range mutate {
		m(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func get(t *testing.T, srv *fake.Server, path string, cred *fake.Credential) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
	if cred != nil {
		req.SetBasicAuth(cred.Email, cred.Token)
		req.Header.Set("X-Atlassian-EncodedToken", strings.TrimPrefix(req.Header.Get("Authorization"), "Basic "))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&v)
	return resp.StatusCode, v
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

func TestAuthentication(t *testing.T) {
	srv := start(t)
	wrong := bob
	wrong.Token = "nope"
	tests := []struct {
		name   string
		cred   *fake.Credential
		mutate func(*http.Request)
		want   int
	}{
		{"valid", &bob, nil, 200},
		{"no headers", nil, nil, 401},
		{"wrong token", &wrong, nil, 401},
		{"unknown email", &fake.Credential{Email: "eve@example.com", Token: "bob-token"}, nil, 401},
		{"encoded token missing", &bob, func(r *http.Request) { r.Header.Del("X-Atlassian-EncodedToken") }, 401},
		{"encoded token differs", &bob, func(r *http.Request) { r.Header.Set("X-Atlassian-EncodedToken", "Ym9iQGV4YW1wbGUuY29tOng=") }, 401},
		{"bearer instead of basic", &bob, func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer "+r.Header.Get("X-Atlassian-EncodedToken"))
		}, 401},
		{"not base64", &bob, func(r *http.Request) {
			r.Header.Set("Authorization", "Basic !!!")
			r.Header.Set("X-Atlassian-EncodedToken", "!!!")
		}, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mut []func(*http.Request)
			if tt.mutate != nil {
				mut = append(mut, tt.mutate)
			}
			resp := post(t, srv, tt.cred, okBody, mut...)
			if resp.StatusCode != tt.want {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.want)
			}
			r, _ := srv.LastRequest()
			if wantID := map[bool]string{true: bob.ID, false: ""}[tt.want == 200]; r.CredentialID != wantID || r.Status != tt.want {
				t.Errorf("recorded credential %q status %d, want %q %d", r.CredentialID, r.Status, wantID, tt.want)
			}
		})
	}
}

func TestValidation(t *testing.T) {
	srv := start(t)
	tests := []struct {
		name, body, wantMsg string
	}{
		{"not JSON", `nope`, "not a JSON object"},
		{"model in payload", `{"request_payload":{"model":"x","messages":[{"role":"user","content":"Hi"}]},"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`, "must not contain model"},
		{"no platform_attributes", `{"request_payload":{"messages":[{"role":"user","content":"Hi"}]}}`, "platform_attributes"},
		{"empty model", `{"request_payload":{"messages":[{"role":"user","content":"Hi"}]},"platform_attributes":{"model":""}}`, "platform_attributes.model is required"},
		{"prefixed model", `{"request_payload":{"messages":[{"role":"user","content":"Hi"}]},"platform_attributes":{"model":"bedrock:anthropic.claude-sonnet-4-20250514-v1:0"}}`, "unknown model"},
		{"last-colon bug", `{"request_payload":{"messages":[{"role":"user","content":"Hi"}]},"platform_attributes":{"model":"0"}}`, "unknown model"},
		{"stream as string", `{"request_payload":{"messages":[{"role":"user","content":"Hi"}],"stream":"true"},"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`, "stream must be a boolean"},
		{"unknown payload field", `{"request_payload":{"messages":[{"role":"user","content":"Hi"}],"stream_options":{}},"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`, "unknown field request_payload.stream_options"},
		{"unknown top-level field", `{"model":"x","request_payload":{"messages":[{"role":"user","content":"Hi"}]},"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`, "unknown top-level field"},
		{"no messages", `{"request_payload":{"messages":[]},"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`, "messages must be a non-empty array"},
		{"message without role", `{"request_payload":{"messages":[{"content":"Hi"}]},"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`, "role is required"},
		{"content as object", `{"request_payload":{"messages":[{"role":"user","content":{"a":1}}]},"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`, "must be a string or a list of parts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(t, srv, &bob, tt.body)
			body := readAll(t, resp)
			if resp.StatusCode != 400 || !strings.Contains(body, tt.wantMsg) {
				t.Errorf("got %d %s, want 400 containing %q", resp.StatusCode, body, tt.wantMsg)
			}
		})
	}
	t.Run("any model", func(t *testing.T) {
		srv := fake.Start(t, fake.Options{Credentials: []fake.Credential{bob}, AnyModel: true})
		resp := post(t, srv, &bob, strings.Replace(okBody, "claude-sonnet-4@20250514", "my-model", 1))
		if resp.StatusCode != 200 {
			t.Errorf("status = %d, want 200", resp.StatusCode)
		}
	})
	t.Run("body too large", func(t *testing.T) {
		srv := fake.Start(t, fake.Options{Credentials: []fake.Credential{bob}, MaxBody: 100})
		resp := post(t, srv, &bob, okBody+strings.Repeat(" ", 200))
		if resp.StatusCode != 413 {
			t.Errorf("status = %d, want 413", resp.StatusCode)
		}
	})
}

func TestNonStreamedAnswer(t *testing.T) {
	srv := start(t)
	srv.SetBehavior(bob.ID, fake.Behavior{ToolCalls: []fake.ToolCall{{ID: "t1", Name: "f", Arguments: json.RawMessage(`{"a":1}`)}}})
	resp := post(t, srv, &bob, okBody)
	var got struct {
		ResponsePayload struct {
			ID      string `json:"id"`
			Created int64  `json:"created"`
			Choices []struct {
				Index   int `json:"index"`
				Message struct {
					Role      string            `json:"role"`
					Content   []json.RawMessage `json:"content"`
					ToolCalls []json.RawMessage `json:"tool_calls"`
				} `json:"message"`
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
		} `json:"response_payload"`
		PlatformAttributes struct {
			Model   string `json:"model"`
			Metrics struct {
				Usage map[string]int `json:"usage"`
			} `json:"metrics"`
		} `json:"platform_attributes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	p := got.ResponsePayload
	if p.ID == "" || p.Created == 0 || len(p.Choices) != 1 || p.Choices[0].FinishReason != "tool_use" ||
		len(p.Choices[0].Message.Content) != 1 || len(p.Choices[0].Message.ToolCalls) != 1 {
		t.Errorf("payload = %+v", p)
	}
	if got.PlatformAttributes.Model != "claude-sonnet-4@20250514" || got.PlatformAttributes.Metrics.Usage["total_tokens"] == 0 {
		t.Errorf("platform_attributes = %+v", got.PlatformAttributes)
	}
}

// events reads SSE data lines.
func events(t *testing.T, r io.Reader) ([]string, error) {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			out = append(out, data)
		}
	}
	return out, sc.Err()
}

func TestStreamedAnswer(t *testing.T) {
	srv := start(t)
	t.Run("shape", func(t *testing.T) {
		srv.Push(bob.ID, 1, fake.Behavior{Text: "a b"})
		resp := post(t, srv, &bob, streamBody())
		if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Errorf("content type %q", ct)
		}
		evs, err := events(t, resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		// role, "a ", "b", final, [DONE]
		if len(evs) != 5 || evs[4] != "[DONE]" {
			t.Fatalf("events = %q", evs)
		}
		if !strings.Contains(evs[0], `"content":[]`) || !strings.Contains(evs[1], `"text":"a "`) ||
			!strings.Contains(evs[3], `"finish_reason":"end_turn"`) || !strings.Contains(evs[3], `"usage"`) || strings.Contains(evs[2], `"usage"`) {
			t.Errorf("events = %q", evs)
		}
	})
	t.Run("no [DONE]", func(t *testing.T) {
		srv.Push(bob.ID, 1, fake.Behavior{NoDone: true})
		evs, _ := events(t, post(t, srv, &bob, streamBody()).Body)
		if len(evs) == 0 || evs[len(evs)-1] == "[DONE]" {
			t.Errorf("events = %q", evs)
		}
	})
	t.Run("cut midway", func(t *testing.T) {
		srv.Push(bob.ID, 1, fake.Behavior{Fault: fake.CutMidStream, CutAfter: 2})
		evs, err := events(t, post(t, srv, &bob, streamBody()).Body)
		if len(evs) != 2 || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("events %q error %v, want 2 events and an unexpected EOF", evs, err)
		}
	})
	t.Run("cut after finish", func(t *testing.T) {
		srv.Push(bob.ID, 1, fake.Behavior{Fault: fake.CutAfterFinish, Text: "a b"})
		evs, err := events(t, post(t, srv, &bob, streamBody()).Body)
		// role, "a ", "b", final; then the cut instead of [DONE]
		if len(evs) != 4 || !strings.Contains(evs[3], `"finish_reason":"end_turn"`) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("events %q error %v, want 4 events, the last with its finish_reason, and an unexpected EOF", evs, err)
		}
	})
	t.Run("cut after finish, not streamed", func(t *testing.T) {
		srv.Push(bob.ID, 1, fake.Behavior{Fault: fake.CutAfterFinish})
		resp := post(t, srv, &bob, okBody)
		if body := readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(body, `"finish_reason":"end_turn"`) {
			t.Errorf("got %d %s, want a whole answer", resp.StatusCode, body)
		}
	})
	t.Run("tool call deltas", func(t *testing.T) {
		srv.Push(bob.ID, 1, fake.Behavior{Text: "a", ToolCallDeltas: true, ArgumentPiece: 5, ToolCalls: []fake.ToolCall{
			{ID: "call_1", Name: "weather", Arguments: json.RawMessage(`{"city":"Paris"}`)},
			{Name: "time", Arguments: json.RawMessage(`"{\"tz\":\"é\"}"`)},
			{ID: "call_3", Name: "noargs"},
		}})
		evs, err := events(t, post(t, srv, &bob, streamBody()).Body)
		if err != nil {
			t.Fatal(err)
		}
		type call struct {
			Index    *int   `json:"index"`
			ID       string `json:"id"`
			Function struct {
				Name      *string `json:"name"`
				Arguments string  `json:"arguments"`
			} `json:"function"`
		}
		var calls []call
		last := ""
		for _, e := range evs {
			if e == "[DONE]" {
				continue
			}
			var ev struct {
				ResponsePayload struct {
					Choices []struct {
						Message struct {
							ToolCalls []call `json:"tool_calls"`
						} `json:"message"`
						FinishReason *string `json:"finish_reason"`
					} `json:"choices"`
				} `json:"response_payload"`
			}
			if err := json.Unmarshal([]byte(e), &ev); err != nil {
				t.Fatalf("event %s: %v", e, err)
			}
			ch := ev.ResponsePayload.Choices[0]
			calls = append(calls, ch.Message.ToolCalls...)
			if ch.FinishReason != nil {
				last = *ch.FinishReason
				if len(ch.Message.ToolCalls) != 0 {
					t.Errorf("the final event repeats the tool calls: %s", e)
				}
			}
		}
		if last != "tool_use" {
			t.Errorf("finish_reason = %q, want tool_use", last)
		}
		args := map[int]string{}
		names := map[int]string{}
		for _, c := range calls {
			if c.Index == nil {
				t.Fatalf("a delta without index: %+v", c)
			}
			if c.Function.Name != nil {
				if _, dup := names[*c.Index]; dup || c.Function.Arguments != "" {
					t.Errorf("call %d: name sent again or with arguments: %+v", *c.Index, c)
				}
				names[*c.Index] = *c.Function.Name
			} else if c.ID != "" || len(c.Function.Arguments) > 6 {
				t.Errorf("call %d: a follow-up delta carries an id or a piece over 5 bytes: %+v", *c.Index, c)
			}
			args[*c.Index] += c.Function.Arguments
		}
		want := map[int][2]string{0: {"weather", `{"city":"Paris"}`}, 1: {"time", `{"tz":"é"}`}, 2: {"noargs", ""}}
		for i, w := range want {
			if names[i] != w[0] || args[i] != w[1] {
				t.Errorf("call %d = %q %q, want %q %q", i, names[i], args[i], w[0], w[1])
			}
		}
	})
	t.Run("cut before first event", func(t *testing.T) {
		srv.Push(bob.ID, 1, fake.Behavior{Fault: fake.CutBeforeFirstEvent})
		resp := post(t, srv, &bob, streamBody())
		evs, err := events(t, resp.Body)
		if resp.StatusCode != 200 || len(evs) != 0 || err == nil {
			t.Errorf("status %d events %q error %v", resp.StatusCode, evs, err)
		}
	})
	t.Run("thinking first", func(t *testing.T) {
		srv.Push(bob.ID, 1, fake.Behavior{Thinking: "hm", ThinkingTime: 50 * time.Millisecond, Text: "a b"})
		start := time.Now()
		evs, err := events(t, post(t, srv, &bob, streamBody()).Body)
		if err != nil {
			t.Fatal(err)
		}
		// role, thinking, "a ", "b", final, [DONE]
		if len(evs) != 6 || evs[5] != "[DONE]" {
			t.Fatalf("events = %q", evs)
		}
		if !strings.Contains(evs[0], `"content":[]`) || !strings.Contains(evs[1], `"content":[{"thinking":"hm","type":"thinking"}]`) ||
			!strings.Contains(evs[2], `"text":"a "`) {
			t.Errorf("events = %q", evs)
		}
		if d := time.Since(start); d < 50*time.Millisecond {
			t.Errorf("answered in %v, want at least the thinking time 50ms", d)
		}
	})
	t.Run("thinking first, cut after it", func(t *testing.T) {
		srv.Push(bob.ID, 1, fake.Behavior{Thinking: "hm", Fault: fake.CutMidStream, CutAfter: 2})
		evs, err := events(t, post(t, srv, &bob, streamBody()).Body)
		if len(evs) != 2 || !strings.Contains(evs[1], `"type":"thinking"`) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("events %q error %v, want the role and thinking events and an unexpected EOF", evs, err)
		}
	})
	t.Run("thinking first, not streamed", func(t *testing.T) {
		srv.Push(bob.ID, 1, fake.Behavior{Thinking: "hm", Text: "a"})
		body := readAll(t, post(t, srv, &bob, okBody))
		if !strings.Contains(body, `"content":[{"thinking":"hm","type":"thinking"},{"text":"a","type":"text"}]`) {
			t.Errorf("body = %s, want the thinking part before the text", body)
		}
	})
	t.Run("slow", func(t *testing.T) {
		srv.Push(bob.ID, 1, fake.Behavior{EventDelay: 30 * time.Millisecond, Text: "a b"})
		start := time.Now()
		evs, _ := events(t, post(t, srv, &bob, streamBody()).Body)
		if d := time.Since(start); d < 90*time.Millisecond || len(evs) != 5 {
			t.Errorf("%d events in %v, want 5 taking at least 90ms", len(evs), d)
		}
	})
}

func TestFaultStatuses(t *testing.T) {
	srv := start(t)
	tests := []struct {
		b          fake.Behavior
		want       int
		bodySubstr string
		retryAfter string
	}{
		{fake.Behavior{Fault: fake.RateLimitMinute}, 429, `"retryAfterSeconds":30`, ""},
		{fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterHeader: "12"}, 429, `"status":"MINUTE_LIMIT_EXCEEDED"`, "12"},
		{fake.Behavior{Fault: fake.RateLimitDaily}, 429, `"status":"DAILY_LIMIT_EXCEEDED"`, ""},
		{fake.Behavior{Fault: fake.RateLimitDaily, RetryAfterSeconds: -1}, 429, `"dailyRemaining":0`, ""},
		{fake.Behavior{Fault: fake.Unauthorized}, 401, "Unauthorized", ""},
		{fake.Behavior{Fault: fake.Forbidden}, 403, "Forbidden", ""},
		{fake.Behavior{Fault: fake.UserBlocked}, 403, "USER_BLOCKED", ""},
		{fake.Behavior{Fault: fake.BadRequest, Message: "bad thing"}, 400, "bad thing", ""},
		{fake.Behavior{Fault: fake.ContextOverflow}, 400, "exceed context limit", ""},
		{fake.Behavior{Fault: fake.TooLarge}, 413, "too large", ""},
		{fake.Behavior{Fault: fake.InternalError}, 500, "Internal Server Error", ""},
		{fake.Behavior{Fault: fake.BadGateway}, 502, "502 Bad Gateway", ""},
		{fake.Behavior{Fault: fake.Unavailable}, 503, "Service Unavailable", ""},
		{fake.Behavior{Fault: fake.Overloaded}, 529, "overloaded_error", ""},
		{fake.Behavior{Fault: fake.Status, Status: 404, Message: "gone"}, 404, "gone", ""},
		{fake.Behavior{Fault: fake.Malformed}, 200, "<html>", ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.b.Fault)+"/"+tt.retryAfter, func(t *testing.T) {
			srv.Push(bob.ID, 1, tt.b)
			resp := post(t, srv, &bob, okBody)
			body := readAll(t, resp)
			if resp.StatusCode != tt.want || !strings.Contains(body, tt.bodySubstr) || resp.Header.Get("Retry-After") != tt.retryAfter {
				t.Errorf("got %d %q Retry-After %q, want %d containing %q, %q", resp.StatusCode, body, resp.Header.Get("Retry-After"), tt.want, tt.bodySubstr, tt.retryAfter)
			}
			if tt.b.Fault == fake.RateLimitDaily && tt.b.RetryAfterSeconds < 0 && strings.Contains(body, "retryAfterSeconds") {
				t.Errorf("body %s has retryAfterSeconds", body)
			}
		})
	}
	t.Run("drop", func(t *testing.T) {
		srv.Push(bob.ID, 1, fake.Behavior{Fault: fake.Drop})
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/rovodev/v2/proxy/ai/v2/beta/chat", strings.NewReader(okBody))
		req.SetBasicAuth(bob.Email, bob.Token)
		req.Header.Set("X-Atlassian-EncodedToken", strings.TrimPrefix(req.Header.Get("Authorization"), "Basic "))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			t.Errorf("got status %d, want a transport error", resp.StatusCode)
		}
	})
}

func TestQueueAndRuntimeChanges(t *testing.T) {
	srv := start(t)
	srv.Push(bob.ID, 2, fake.Behavior{Fault: fake.RateLimitMinute})
	srv.Push(bob.ID, 1, fake.Behavior{Fault: fake.InternalError})
	var got []int
	for range 4 {
		got = append(got, post(t, srv, &bob, okBody).StatusCode)
	}
	srv.SetBehavior(bob.ID, fake.Behavior{Fault: fake.Unavailable})
	got = append(got, post(t, srv, &bob, okBody).StatusCode, post(t, srv, &bob, okBody).StatusCode)
	srv.Push(bob.ID, 1, fake.Behavior{})
	srv.Push(bob.ID, 5, fake.Behavior{Fault: fake.Unauthorized})
	srv.ClearQueue(bob.ID)
	got = append(got, post(t, srv, &bob, okBody).StatusCode)
	want := []int{429, 429, 500, 200, 503, 503, 503}
	if !equal(got, want) {
		t.Errorf("statuses = %v, want %v", got, want)
	}
	if n := len(srv.RequestsFor(bob.ID)); n != len(want) {
		t.Errorf("recorded %d requests, want %d", n, len(want))
	}
	if st := srv.Stats(bob.ID); st.Requests != len(want) || st.InFlight != 0 || st.MaxInFlight != 1 {
		t.Errorf("stats = %+v", st)
	}
	srv.RemoveCredential(bob.ID)
	if got := post(t, srv, &bob, okBody).StatusCode; got != 401 {
		t.Errorf("removed credential: status %d, want 401", got)
	}
	srv.Reset()
	if n := len(srv.Requests()); n != 0 {
		t.Errorf("after Reset: %d requests", n)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestConcurrencyIsRecorded(t *testing.T) {
	srv := start(t)
	srv.SetBehavior(bob.ID, fake.Behavior{Fault: fake.Hang})
	const n = 6
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/rovodev/v2/proxy/ai/v2/beta/chat", strings.NewReader(okBody))
			req.SetBasicAuth(bob.Email, bob.Token)
			req.Header.Set("X-Atlassian-EncodedToken", strings.TrimPrefix(req.Header.Get("Authorization"), "Basic "))
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats(bob.ID).InFlight < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := srv.Stats(bob.ID); st.InFlight != n || st.MaxInFlight != n {
		t.Errorf("stats while hanging = %+v, want %d in flight", st, n)
	}
	cancel()
	wg.Wait()
	for srv.Stats(bob.ID).InFlight > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := srv.Stats(bob.ID); st.InFlight != 0 || st.MaxInFlight != n {
		t.Errorf("stats after cancel = %+v, want 0 in flight, max %d", st, n)
	}
	if m := srv.MaxInFlight(); m[bob.ID] != n {
		t.Errorf("MaxInFlight = %v", m)
	}
}

func TestCreditsAndSites(t *testing.T) {
	srv := start(t)
	tests := []struct {
		fault      fake.Fault
		wantStatus int
		wantField  string
	}{
		{fake.OK, 200, "OK"},
		{fake.Forbidden, 200, "OK"},
		{fake.RateLimitMinute, 200, "RATE_LIMITED"},
		{fake.Unauthorized, 401, ""},
		{fake.UserBlocked, 403, "USER_BLOCKED"},
		{fake.Unavailable, 503, ""},
	}
	for _, tt := range tests {
		t.Run("credits/"+string(tt.fault), func(t *testing.T) {
			srv.SetBehavior(bob.ID, fake.Behavior{Fault: tt.fault})
			status, body := get(t, srv, "/rovodev/v3/credits/check", &bob)
			if status != tt.wantStatus || (tt.wantField != "" && body["status"] != tt.wantField) {
				t.Errorf("got %d %v, want %d status %q", status, body, tt.wantStatus, tt.wantField)
			}
			if tt.wantStatus == 200 {
				if _, ok := body["balance"].(map[string]any)["monthlyRemaining"]; !ok {
					t.Errorf("body %v has no balance", body)
				}
			}
		})
	}
	t.Run("credits/rate_limit_daily without retryAfterSeconds", func(t *testing.T) {
		srv.SetBehavior(bob.ID, fake.Behavior{Fault: fake.RateLimitDaily, RetryAfterSeconds: -1})
		status, body := get(t, srv, "/rovodev/v3/credits/check", &bob)
		if _, has := body["retryAfterSeconds"]; status != 200 || body["status"] != "RATE_LIMITED" || has {
			t.Errorf("got %d %v, want 200 RATE_LIMITED without retryAfterSeconds", status, body)
		}
	})
	srv.SetBehavior(bob.ID, fake.Behavior{})
	if status, _ := get(t, srv, "/rovodev/v3/credits/check", nil); status != 401 {
		t.Errorf("credits without auth: %d, want 401", status)
	}
	status, body := get(t, srv, "/rovodev/v3/sites", &bob)
	sites, _ := body["sites"].([]any)
	if status != 200 || len(sites) != 1 || sites[0].(map[string]any)["siteId"] != bob.CloudID {
		t.Errorf("sites: %d %v", status, body)
	}
	if status, _ := get(t, srv, "/rovodev/v3/nothing", &bob); status != 404 {
		t.Errorf("unknown path: %d, want 404", status)
	}
	if status, _ := get(t, srv, "/rovodev/v2/proxy/ai/v2/beta/chat", &bob); status != 405 {
		t.Errorf("GET chat: %d, want 405", status)
	}
}

func TestRecordsRequests(t *testing.T) {
	srv := start(t)
	post(t, srv, &bob, okBody, func(r *http.Request) { r.Header.Set("X-Atlassian-CloudId", bob.CloudID) })
	r, ok := srv.LastRequest()
	if !ok {
		t.Fatal("nothing recorded")
	}
	if r.CredentialID != bob.ID || r.Email != bob.Email || r.Model != "claude-sonnet-4@20250514" || r.Stream ||
		r.Header.Get("X-Atlassian-CloudId") != bob.CloudID || !bytes.Equal(r.Body, []byte(okBody)) || r.Status != 200 || r.Time.IsZero() {
		t.Errorf("recorded %+v", r)
	}
	r.Body[0] = 'X'
	if again, _ := srv.LastRequest(); again.Body[0] == 'X' {
		t.Error("LastRequest shares its body with the recorder")
	}
}

func TestKeepRequests(t *testing.T) {
	srv := fake.Start(t, fake.Options{Credentials: []fake.Credential{bob}, KeepRequests: 3})
	for i := range 10 {
		post(t, srv, &bob, strings.Replace(okBody, "Hi", "Hi"+strconv.Itoa(i), 1))
	}
	reqs := srv.Requests()
	if len(reqs) < 3 || len(reqs) >= 6 {
		t.Fatalf("kept %d requests, want between 3 and 5", len(reqs))
	}
	last := reqs[len(reqs)-1]
	if !strings.Contains(string(last.Body), "Hi9") || last.Status != 200 {
		t.Errorf("last request = %s status %d", last.Body, last.Status)
	}
	if st := srv.Stats(bob.ID); st.Requests != 10 {
		t.Errorf("stats = %+v, want 10 requests", st)
	}
	srv.Reset()
	post(t, srv, &bob, okBody)
	if r, _ := srv.LastRequest(); r.Status != 200 {
		t.Errorf("status after Reset = %d, want 200 recorded", r.Status)
	}
}

func TestCloseReleasesHangs(t *testing.T) {
	g := fake.New(fake.Options{Credentials: []fake.Credential{bob}})
	g.SetBehavior(bob.ID, fake.Behavior{Fault: fake.Hang})
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequest(http.MethodPost, "/rovodev/v2/proxy/ai/v2/beta/chat", strings.NewReader(okBody))
		req.SetBasicAuth(bob.Email, bob.Token)
		req.Header.Set("X-Atlassian-EncodedToken", strings.TrimPrefix(req.Header.Get("Authorization"), "Basic "))
		g.ServeHTTP(discard{http.Header{}}, req)
	}()
	for deadline := time.Now().Add(5 * time.Second); g.Stats(bob.ID).InFlight == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	g.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not release a hanging request")
	}
}

type discard struct{ h http.Header }

func (d discard) Header() http.Header       { return d.h }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

func TestStartWithoutOptions(t *testing.T) {
	srv := fake.Start(t)
	if status, _ := get(t, srv, "/rovodev/v3/credits/check", &bob); status != 401 {
		t.Errorf("status = %d, want 401 (no credentials registered)", status)
	}
	srv.AddCredential(bob)
	if status, _ := get(t, srv, "/rovodev/v3/credits/check", &bob); status != 200 {
		t.Errorf("status = %d, want 200 after AddCredential", status)
	}
}

func TestParseFault(t *testing.T) {
	for _, f := range fake.Faults() {
		name := string(f)
		if f == fake.OK {
			name = "ok"
		}
		if got, err := fake.ParseFault(name); err != nil || got != f {
			t.Errorf("ParseFault(%q) = %q, %v", name, got, err)
		}
	}
	if _, err := fake.ParseFault("nope"); err == nil || !strings.Contains(err.Error(), "one of: ok, rate_limit_minute, rate_limit_daily,") {
		t.Errorf("ParseFault(nope): err %v, want one listing the faults", err)
	}
}

func TestUnknownCredentialPanics(t *testing.T) {
	srv := start(t)
	defer func() {
		if recover() == nil {
			t.Error("SetBehavior on an unknown credential did not panic")
		}
	}()
	srv.SetBehavior("nobody", fake.Behavior{})
}

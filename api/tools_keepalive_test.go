package api

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/atlassian-proxy/atlassian-proxy/dispatch"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/schematest"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/usage"
)

const toolsStreamBody = `{"model":"` + testModel + `","stream":true,
	"messages":[{"role":"user","content":"Weather?"}],
	"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}`

// A streamed request with tools is one non-streamed upstream call, which
// answers only when the whole answer is written: while it works, the
// event stream starts with keep-alive comments (proxies that cut silent
// connections keep it), then carries the answer as usual, also to the
// official client.
func TestStreamWithToolsKeepAlive(t *testing.T) {
	e := newEnv(t, envOptions{
		cfg:      Config{StreamKeepAlive: 30 * time.Millisecond},
		fakeOpts: fake.Options{Latency: 250 * time.Millisecond},
		creds: []fake.Credential{testCred("c1", fake.Behavior{
			ToolCalls: []fake.ToolCall{{ID: "call_1", Name: "get_weather", Arguments: json.RawMessage(`{"city":"Paris"}`)}},
			Content:   fake.ContentNull,
		})},
	})
	resp, body := e.chat(toolsStreamBody)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status = %d, content type %q (%s)", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	s := summarize(t, body)
	if s.keepAlives < 3 {
		t.Errorf("keep-alive comments = %d, want several during 250 ms of silence:\n%s", s.keepAlives, body)
	}
	if !strings.HasPrefix(string(body), ": keep-alive\n\n") {
		t.Errorf("the stream does not start with a keep-alive comment:\n%s", body)
	}
	if !s.doneLast || s.errorEvent != "" || len(s.chunks) == 0 {
		t.Fatalf("done last, error, chunks = %v, %q, %d; want the answer then [DONE]", s.doneLast, s.errorEvent, len(s.chunks))
	}
	var calls int
	for _, c := range s.chunks {
		for _, ch := range c.Choices {
			calls += len(ch.Delta.ToolCalls)
		}
	}
	if calls == 0 {
		t.Errorf("no tool call in the chunks:\n%s", body)
	}

	acc, _, err := readStream(t, e.client(e.token).Chat.Completions.NewStreaming(t.Context(), openai.ChatCompletionNewParams{
		Model:    testModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Weather in Paris?")},
		Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
			Name: "get_weather", Parameters: openai.FunctionParameters{"type": "object"},
		})},
	}))
	if err != nil {
		t.Fatalf("official client: %v", err)
	}
	if tc := acc.Choices[0].Message.ToolCalls; len(tc) != 1 || tc[0].Function.Arguments != `{"city":"Paris"}` {
		t.Errorf("official client: tool calls = %+v", tc)
	}
}

// Once keep-alives went out, the status is sent: a failure after that ends
// the stream with an SSE error event in OpenAI's shape and no [DONE], and
// counts as a stream abort. A failure that comes before the first
// keep-alive is still an HTTP error.
func TestStreamWithToolsFailsAfterKeepAlive(t *testing.T) {
	bad := testCred("c1", fake.Behavior{Fault: fake.BadRequest, Message: "tool schema rejected"})
	t.Run("after keep-alives", func(t *testing.T) {
		e, reg := newMetricsEnv(t, envOptions{
			cfg:      Config{StreamKeepAlive: 30 * time.Millisecond},
			fakeOpts: fake.Options{Latency: 200 * time.Millisecond},
			creds:    []fake.Credential{bad},
		})
		resp, body := e.chat(toolsStreamBody)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status = %d (%s), want 200: the stream had started", resp.StatusCode, body)
		}
		s := summarize(t, body)
		if s.keepAlives == 0 || s.done || len(s.chunks) != 0 {
			t.Errorf("keep-alives, [DONE], chunks = %d, %v, %d; want keep-alives then only the error", s.keepAlives, s.done, len(s.chunks))
		}
		var ev struct {
			Error struct{ Type, Message string }
		}
		if err := json.Unmarshal([]byte(s.errorEvent), &ev); err != nil || ev.Error.Type != "invalid_request_error" || ev.Error.Message != "tool schema rejected" {
			t.Errorf("error event = %q, want the upstream's invalid_request_error", s.errorEvent)
		}
		// The upstream refused the request: not a broken upstream.
		if got := counter(t, reg, abortsName, "reason="+abortUpstreamRefused); got != 1 {
			t.Errorf("%s{reason=%q} = %v, want 1", abortsName, abortUpstreamRefused, got)
		}
		if got := counter(t, reg, abortsName, "reason="+abortUpstreamBroken); got != 0 {
			t.Errorf("%s{reason=%q} = %v, want 0", abortsName, abortUpstreamBroken, got)
		}
	})
	t.Run("before a keep-alive", func(t *testing.T) {
		e := newEnv(t, envOptions{creds: []fake.Credential{bad}})
		resp, body := e.chat(toolsStreamBody)
		if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("status = %d, content type %q (%s); want a 400 JSON error", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		schematest.Validate(t, schematest.ErrorResponse, body)
	})
}

// Keep-alives count from the first attempt, not from the queue: a request
// that waits for a free slot and gives up there gets an HTTP error with
// its Retry-After, as any request does.
func TestStreamWithToolsQueueTimeoutIsHTTP(t *testing.T) {
	e := newEnv(t, envOptions{
		cfg:      Config{StreamKeepAlive: 20 * time.Millisecond},
		disp:     dispatch.Config{QueueTimeout: 200 * time.Millisecond},
		maxConc:  1,
		fakeOpts: fake.Options{Latency: 600 * time.Millisecond},
	})
	busy := make(chan struct{})
	go func() {
		defer close(busy)
		e.chat(chatBody("")) // holds the only slot for 600 ms
	}()
	eventually(t, 2*time.Second, "the slot is taken", func() bool { return e.credStatus("c1").InFlight == 1 })
	resp, body := e.chat(toolsStreamBody)
	<-busy
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("status %d, Retry-After %q, content type %q (%s); want a 503 JSON error with Retry-After",
			resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("Content-Type"), body)
	}
	if !strings.Contains(string(body), `"queue_timeout"`) {
		t.Errorf("body = %s, want queue_timeout", body)
	}
}

// When the shutdown grace is over (AbortStreams), a request with tools
// still waiting for its upstream answer ends at once: after keep-alives,
// with a server_shutting_down event and no [DONE], counted as a shutdown
// abort; the credential is not blamed.
func TestStreamWithToolsAbortedAtShutdown(t *testing.T) {
	e, reg := newMetricsEnv(t, envOptions{
		cfg:   Config{StreamKeepAlive: 20 * time.Millisecond},
		creds: []fake.Credential{testCred("c1", fake.Behavior{Fault: fake.Hang})},
	})
	go func() {
		eventually(t, 2*time.Second, "the upstream call started", func() bool { return e.credStatus("c1").InFlight == 1 })
		time.Sleep(100 * time.Millisecond) // a few keep-alives
		e.api.AbortStreams()
	}()
	resp, body := e.chat(toolsStreamBody)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s), want 200: the stream had started", resp.StatusCode, body)
	}
	s := summarize(t, body)
	if s.keepAlives == 0 || s.done || !strings.Contains(s.errorEvent, `"server_shutting_down"`) {
		t.Errorf("keep-alives %d, [DONE] %v, error %q; want keep-alives then server_shutting_down", s.keepAlives, s.done, s.errorEvent)
	}
	if got := counter(t, reg, abortsName, "reason="+abortShutdown); got != 1 {
		t.Errorf("%s{reason=%q} = %v, want 1", abortsName, abortShutdown, got)
	}
	eventually(t, 2*time.Second, "the lease is returned", func() bool { return e.credStatus("c1").InFlight == 0 })
	if st := e.credStatus("c1"); st.Failures != 0 || st.State != pool.StateReady {
		t.Errorf("credential = %+v, want no penalty for a shutdown", st)
	}
}

// panickyUsage is a usage recorder whose attempt notes panic: a bug of
// ours while the keep-alive goroutine writes.
type panickyUsage struct{ UsageRecorder }

func (panickyUsage) RecordAttemptFailure(string, string, string) {
	panic("injected fault: recording a failed attempt")
}

// A panic in the handler while keep-alives are going stops their goroutine
// before the recovery middleware answers: the process survives (the race
// detector sees no concurrent write) and the stream ends without [DONE].
func TestStreamWithToolsPanicStopsKeepAlives(t *testing.T) {
	e := newEnv(t, envOptions{
		cfg:      Config{StreamKeepAlive: 10 * time.Millisecond},
		fakeOpts: fake.Options{Latency: 150 * time.Millisecond},
		usage:    panickyUsage{usage.New(nil, usage.Config{})},
		creds:    []fake.Credential{testCred("c1", fake.Behavior{Fault: fake.InternalError})},
	})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.srv.URL+"/v1/chat/completions", strings.NewReader(toolsStreamBody))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The recovery middleware cannot answer a 500 once the stream started:
	// it cuts the connection, so the read ends with an error.
	if resp.StatusCode != http.StatusOK || err == nil {
		t.Fatalf("status %d, read error %v (%s); want 200 and a cut stream", resp.StatusCode, err, body)
	}
	if s := summarize(t, body); s.keepAlives == 0 || s.done {
		t.Errorf("keep-alives %d, [DONE] %v; want keep-alives and no [DONE]", s.keepAlives, s.done)
	}
	time.Sleep(50 * time.Millisecond) // a leftover goroutine would write (and crash) now
	if resp, body := e.do(request{method: http.MethodGet, path: "/v1/models", token: e.token}); resp.StatusCode != http.StatusOK {
		t.Errorf("after the panic: GET /v1/models = %d %s", resp.StatusCode, body)
	}
}

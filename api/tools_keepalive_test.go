package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/schematest"
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

	stream := e.client(e.token).Chat.Completions.NewStreaming(t.Context(), openai.ChatCompletionNewParams{
		Model:    testModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Weather in Paris?")},
		Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
			Name: "get_weather", Parameters: openai.FunctionParameters{"type": "object"},
		})},
	})
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		chunk := stream.Current()
		schematest.Validate(t, schematest.ChatCompletionChunk, []byte(chunk.RawJSON()))
		acc.AddChunk(chunk)
	}
	if err := stream.Err(); err != nil {
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
		if got := counter(t, reg, abortsName, "reason="+abortUpstreamBroken); got != 1 {
			t.Errorf("%s{reason=%q} = %v, want 1", abortsName, abortUpstreamBroken, got)
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

package gateway

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/schematest"
	publicschema "github.com/atlassian-proxy/atlassian-proxy/gateway/schematest"
)

// schemaCheck validates without a testing.TB (for fuzz bodies).
var schemaCheck = publicschema.Check

var testNow = time.Unix(1_760_000_000, 0)

// completionFromBody translates a non-streamed unified response (as
// Client.completion does, without the protocol log).
func completionFromBody(body []byte, model string, now time.Time) (*ChatCompletion, error) {
	r, err := decodeResponse(body)
	if err != nil {
		return nil, err
	}
	return translateCompletion(r, model, now), nil
}

// completion translates body and fails the test on error.
func completion(t *testing.T, body string) *ChatCompletion {
	t.Helper()
	c, err := completionFromBody([]byte(body), "client-model", testNow)
	if err != nil {
		t.Fatalf("completionFromBody: %v", err)
	}
	raw, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	schematest.Validate(t, schematest.ChatCompletion, raw)
	return c
}

func TestFinishReason(t *testing.T) {
	tests := []struct {
		name, upstream, calls, want string
	}{
		{"end_turn", `"end_turn"`, ``, "stop"},
		{"max_tokens", `"max_tokens"`, ``, "length"},
		{"tool_use", `"tool_use"`, ``, "tool_calls"},
		{"stop kept", `"stop"`, ``, "stop"},
		{"length kept", `"length"`, ``, "length"},
		{"tool_calls kept", `"tool_calls"`, ``, "tool_calls"},
		{"content_filter kept", `"content_filter"`, ``, "content_filter"},
		{"stop_sequence", `"stop_sequence"`, ``, "stop"},
		{"gemini upper case", `"MAX_TOKENS"`, ``, "length"},
		{"unknown", `"something_new"`, ``, "stop"},
		{"missing", `null`, ``, "stop"},
		{"empty", `""`, ``, "stop"},
		{"missing with tool calls", `null`, `,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]`, "tool_calls"},
		{"end_turn with tool calls", `"end_turn"`, `,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]`, "tool_calls"},
		{"gemini STOP with tool calls", `"STOP"`, `,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]`, "tool_calls"},
		{"unknown with tool calls", `"weird"`, `,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]`, "tool_calls"},
		{"max_tokens with tool calls kept", `"max_tokens"`, `,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]`, "length"},
		{"SAFETY with tool calls kept", `"SAFETY"`, `,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]`, "content_filter"},
		{"STOP with a nameless call (dropped)", `"STOP"`, `,"tool_calls":[{"id":"c","type":"function","function":{"arguments":"{}"}}]`, "stop"},
		{"gemini SAFETY", `"SAFETY"`, ``, "content_filter"},
		{"gemini RECITATION", `"RECITATION"`, ``, "content_filter"},
		{"context window exceeded", `"model_context_window_exceeded"`, ``, "length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"response_payload":{"id":"x","created":1,"choices":[{"index":0,"message":{"role":"assistant","content":[{"type":"text","text":"hi"}]` +
				tt.calls + `},"finish_reason":` + tt.upstream + `}]}}`
			c := completion(t, body)
			if got := c.Choices[0].FinishReason; got != tt.want {
				t.Errorf("finish_reason = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMapFinishReasonTable(t *testing.T) {
	tests := []struct {
		in, want string
		known    bool
	}{
		{"end_turn", "stop", true}, {"stop", "stop", true}, {"STOP", "stop", true}, {"stop_sequence", "stop", true},
		{"max_tokens", "length", true}, {"length", "length", true}, {"MAX_TOKENS", "length", true},
		{"model_context_window_exceeded", "length", true},
		{"tool_use", "tool_calls", true}, {"tool_calls", "tool_calls", true}, {"function_call", "tool_calls", true},
		{"content_filter", "content_filter", true}, {"refusal", "content_filter", true},
		{"SAFETY", "content_filter", true}, {"RECITATION", "content_filter", true}, {"BLOCKLIST", "content_filter", true},
		{"PROHIBITED_CONTENT", "content_filter", true}, {"SPII", "content_filter", true},
		{"", "stop", false}, {"weird", "stop", false}, {"FINISH_REASON_UNSPECIFIED", "stop", false}, {"pause_turn", "stop", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got, known := mapFinishReason(tt.in); got != tt.want || known != tt.known {
				t.Errorf("mapFinishReason(%q) = %q, %v; want %q, %v", tt.in, got, known, tt.want, tt.known)
			}
		})
	}
}

func TestFinishWithTools(t *testing.T) {
	tests := []struct {
		reason   string
		hasTools bool
		want     string
	}{
		{"stop", true, "tool_calls"},
		{"stop", false, "stop"},
		{"length", true, "length"},
		{"content_filter", true, "content_filter"},
		{"tool_calls", true, "tool_calls"},
		{"tool_calls", false, "tool_calls"},
	}
	for _, tt := range tests {
		if got := finishWithTools(tt.reason, tt.hasTools); got != tt.want {
			t.Errorf("finishWithTools(%q, %v) = %q, want %q", tt.reason, tt.hasTools, got, tt.want)
		}
	}
}

func TestToolCallArguments(t *testing.T) {
	tests := []struct {
		name, args, want string
	}{
		{"object", `{"city": "Paris", "n": [1, 2]}`, `{"city":"Paris","n":[1,2]}`},
		{"string kept", `"{\"city\": \"Paris\"}"`, `{"city": "Paris"}`},
		{"non-JSON string kept", `"city=Paris"`, `city=Paris`},
		{"null", `null`, `{}`},
		{"empty string", `""`, `{}`},
		{"array", `[1,2]`, `[1,2]`},
		{"missing", ``, `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := ""
			if tt.args != "" {
				args = `,"arguments":` + tt.args
			}
			body := `{"response_payload":{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[` +
				`{"id":"call_1","type":"function","function":{"name":"weather"` + args + `}}]},"finish_reason":"tool_use"}]}}`
			c := completion(t, body)
			tc := c.Choices[0].Message.ToolCalls
			if len(tc) != 1 {
				t.Fatalf("got %d tool calls, want 1", len(tc))
			}
			if got := tc[0].Function.Arguments; got != tt.want {
				t.Errorf("arguments = %q, want %q", got, tt.want)
			}
			if tc[0].ID != "call_1" || tc[0].Type != "function" || tc[0].Function.Name != "weather" || tc[0].Index != nil {
				t.Errorf("tool call = %+v, want id call_1, type function, name weather, no index", tc[0])
			}
			if c.Choices[0].Message.Content != nil {
				t.Errorf("content = %q, want null", *c.Choices[0].Message.Content)
			}
			if c.Choices[0].FinishReason != "tool_calls" {
				t.Errorf("finish_reason = %q, want tool_calls", c.Choices[0].FinishReason)
			}
		})
	}
}

func TestToolCallWithoutNameDropped(t *testing.T) {
	c := completion(t, `{"response_payload":{"choices":[{"message":{"tool_calls":[{"id":"a","function":{"arguments":{}}},{"id":"b","function":{"name":"f"}}]},"finish_reason":"tool_use"}]}}`)
	if tc := c.Choices[0].Message.ToolCalls; len(tc) != 1 || tc[0].ID != "b" {
		t.Errorf("tool calls = %+v, want only b", tc)
	}
}

func TestToolCallDefaults(t *testing.T) {
	c := completion(t, `{"response_payload":{"choices":[{"message":{"tool_calls":[{"function":{"name":"f","arguments":{}}}]}}]}}`)
	tc := c.Choices[0].Message.ToolCalls[0]
	if !strings.HasPrefix(tc.ID, "call_") || len(tc.ID) < 10 {
		t.Errorf("id = %q, want a generated call_ id", tc.ID)
	}
	if tc.Type != "function" {
		t.Errorf("type = %q, want function", tc.Type)
	}
	if c.Choices[0].FinishReason != "tool_calls" {
		t.Errorf("finish_reason = %q, want tool_calls", c.Choices[0].FinishReason)
	}
}

func TestContentForms(t *testing.T) {
	str := func(s string) *string { return &s }
	tests := []struct {
		name    string
		content string
		want    *string
	}{
		{"one part", `[{"type":"text","text":"Hello"}]`, str("Hello")},
		{"parts joined", `[{"type":"text","text":"Hel"},{"type":"text","text":"lo"}]`, str("Hello")},
		{"part without type", `[{"text":"Hello"}]`, str("Hello")},
		{"non-text parts skipped", `[{"type":"image","url":"x"},{"type":"text","text":"Hi"}]`, str("Hi")},
		{"only non-text parts", `[{"type":"image","url":"x"}]`, nil},
		{"string", `"Hello"`, str("Hello")},
		{"empty string", `""`, str("")},
		{"null", `null`, nil},
		{"empty list", `[]`, nil},
		{"unicode", `[{"type":"text","text":"héllo \u2603 🎉"}]`, str("héllo ☃ 🎉")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := completion(t, `{"response_payload":{"id":"a","created":2,"choices":[{"index":0,"message":{"role":"assistant","content":`+tt.content+`},"finish_reason":"end_turn"}]}}`)
			got := c.Choices[0].Message.Content
			switch {
			case tt.want == nil && got != nil:
				t.Errorf("content = %q, want null", *got)
			case tt.want != nil && got == nil:
				t.Errorf("content = null, want %q", *tt.want)
			case tt.want != nil && *got != *tt.want:
				t.Errorf("content = %q, want %q", *got, *tt.want)
			}
		})
	}
}

func TestCompletionEnvelope(t *testing.T) {
	t.Run("ids kept", func(t *testing.T) {
		c := completion(t, `{"response_payload":{"id":"msg_1","created":1700000000,"choices":[{"index":0,"message":{"content":[]},"finish_reason":"end_turn"}]},"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`)
		if c.ID != "msg_1" || c.Created != 1700000000 || c.Object != "chat.completion" || c.Model != "client-model" {
			t.Errorf("got id %q created %d object %q model %q, want msg_1 1700000000 chat.completion client-model", c.ID, c.Created, c.Object, c.Model)
		}
		if c.Choices[0].Message.Role != "assistant" {
			t.Errorf("role = %q, want assistant", c.Choices[0].Message.Role)
		}
	})
	t.Run("missing id created index filled", func(t *testing.T) {
		c := completion(t, `{"response_payload":{"choices":[{"message":{"content":[{"type":"text","text":"a"}]}},{"message":{"content":[{"type":"text","text":"b"}]}}]}}`)
		if !strings.HasPrefix(c.ID, "chatcmpl-") || len(c.ID) < 20 {
			t.Errorf("id = %q, want chatcmpl-<random>", c.ID)
		}
		if c.Created != testNow.Unix() {
			t.Errorf("created = %d, want now %d", c.Created, testNow.Unix())
		}
		if c.Choices[0].Index != 0 || c.Choices[1].Index != 1 {
			t.Errorf("indexes = %d, %d, want 0, 1", c.Choices[0].Index, c.Choices[1].Index)
		}
		if c.Usage != nil {
			t.Errorf("usage = %+v, want nil", c.Usage)
		}
	})
	t.Run("two ids differ", func(t *testing.T) {
		a := completion(t, `{"response_payload":{"choices":[]}}`)
		b := completion(t, `{"response_payload":{"choices":[]}}`)
		if a.ID == b.ID {
			t.Errorf("two generated ids are both %q", a.ID)
		}
	})
	t.Run("created as float or string", func(t *testing.T) {
		for _, v := range []string{`1700000000.0`, `"1700000000"`, `1.7e9`} {
			c := completion(t, `{"response_payload":{"created":`+v+`,"choices":[]}}`)
			if c.Created != 1700000000 {
				t.Errorf("created %s → %d, want 1700000000", v, c.Created)
			}
		}
	})
	t.Run("odd numbers do not fail the response", func(t *testing.T) {
		c := completion(t, `{"response_payload":{"created":"soon","choices":[{"index":{"x":1},"message":{"content":"ok"}}]},`+
			`"platform_attributes":{"metrics":{"usage":{"input_tokens":1e300,"output_tokens":null}}}}`)
		if c.Created != testNow.Unix() || *c.Choices[0].Message.Content != "ok" {
			t.Errorf("completion = %+v", c)
		}
	})
	t.Run("no choices", func(t *testing.T) {
		c := completion(t, `{"response_payload":{"id":"z","choices":[]}}`)
		if len(c.Choices) != 1 || c.Choices[0].FinishReason != "stop" || c.Choices[0].Message.Content == nil {
			t.Errorf("choices = %+v, want one empty stop choice", c.Choices)
		}
	})
	t.Run("delta instead of message", func(t *testing.T) {
		c := completion(t, `{"response_payload":{"choices":[{"delta":{"content":[{"type":"text","text":"d"}]},"finish_reason":"end_turn"}]}}`)
		if c.Choices[0].Message.Content == nil || *c.Choices[0].Message.Content != "d" {
			t.Errorf("content = %v, want d", c.Choices[0].Message.Content)
		}
	})
	t.Run("logprobs and refusal are null", func(t *testing.T) {
		c := completion(t, `{"response_payload":{"choices":[{"message":{"content":"x"}}]}}`)
		raw, _ := json.Marshal(c)
		for _, want := range []string{`"logprobs":null`, `"refusal":null`} {
			if !strings.Contains(string(raw), want) {
				t.Errorf("%s missing from %s", want, raw)
			}
		}
		if strings.Contains(string(raw), "system_fingerprint") {
			t.Errorf("system_fingerprint present in %s", raw)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, body := range []string{`not json`, `{}`, `{"response_payload":null}`, `[]`} {
			if _, err := completionFromBody([]byte(body), "m", testNow); err == nil {
				t.Errorf("completionFromBody(%s): no error", body)
			}
		}
	})
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name, attrs string
		want        *Usage
	}{
		{"metrics usage", `{"metrics":{"usage":{"input_tokens":10,"output_tokens":5,"total_tokens":15}}}`, &Usage{10, 5, 15}},
		{"total computed", `{"metrics":{"usage":{"input_tokens":10,"output_tokens":5}}}`, &Usage{10, 5, 15}},
		{"openai names", `{"metrics":{"usage":{"prompt_tokens":3,"completion_tokens":4}}}`, &Usage{3, 4, 7}},
		{"floats", `{"metrics":{"usage":{"input_tokens":10.0,"output_tokens":"5"}}}`, &Usage{10, 5, 15}},
		{"no metrics", `{"model":"m"}`, nil},
		{"empty usage", `{"metrics":{"usage":{}}}`, nil},
		{"null usage", `{"metrics":{"usage":null}}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := completion(t, `{"response_payload":{"choices":[{"message":{"content":"x"},"finish_reason":"end_turn"}]},"platform_attributes":`+tt.attrs+`}`)
			switch {
			case tt.want == nil && c.Usage != nil:
				t.Errorf("usage = %+v, want nil", *c.Usage)
			case tt.want != nil && (c.Usage == nil || *c.Usage != *tt.want):
				t.Errorf("usage = %+v, want %+v", c.Usage, *tt.want)
			}
		})
	}
}

func TestChunks(t *testing.T) {
	text := "It is sunny."
	c := &ChatCompletion{
		ID: "chatcmpl-1", Object: "chat.completion", Created: 42, Model: "claude-sonnet-4",
		Choices: []Choice{{
			Message: ResponseMessage{Role: "assistant", Content: &text, ToolCalls: []ToolCall{
				{ID: "call_a", Type: "function", Function: FunctionCall{Name: "weather", Arguments: `{"city":"Paris"}`}},
				{ID: "call_b", Type: "function", Function: FunctionCall{Name: "time", Arguments: `{}`}},
			}},
			FinishReason: "tool_calls",
		}},
		Usage: &Usage{1, 2, 3},
	}
	chunks := Chunks(c)
	if len(chunks) != 5 {
		t.Fatalf("got %d chunks, want 5 (role, content, 2 tool calls, finish)", len(chunks))
	}
	for i, ch := range chunks {
		raw, _ := json.Marshal(ch)
		schematest.Validate(t, schematest.ChatCompletionChunk, raw)
		if ch.ID != "chatcmpl-1" || ch.Created != 42 || ch.Model != "claude-sonnet-4" || ch.Object != "chat.completion.chunk" {
			t.Errorf("chunk %d envelope = %s", i, raw)
		}
		if ch.Usage != nil {
			t.Errorf("chunk %d carries usage", i)
		}
		if last := i == len(chunks)-1; (ch.Choices[0].FinishReason != nil) != last {
			t.Errorf("chunk %d finish_reason = %v", i, ch.Choices[0].FinishReason)
		}
	}
	if chunks[0].Choices[0].Delta.Role != "assistant" {
		t.Errorf("first delta role = %q, want assistant", chunks[0].Choices[0].Delta.Role)
	}
	if got := *chunks[1].Choices[0].Delta.Content; got != text {
		t.Errorf("content chunk = %q, want %q", got, text)
	}
	for i, want := range []string{"call_a", "call_b"} {
		tc := chunks[2+i].Choices[0].Delta.ToolCalls
		if len(tc) != 1 || tc[0].Index == nil || *tc[0].Index != i || tc[0].ID != want || tc[0].Type != "function" {
			t.Errorf("tool chunk %d = %+v", i, tc)
		}
	}
	if got := chunks[2].Choices[0].Delta.ToolCalls[0].Function.Arguments; got != `{"city":"Paris"}` {
		t.Errorf("arguments = %q", got)
	}
	if got := *chunks[4].Choices[0].FinishReason; got != "tool_calls" {
		t.Errorf("finish = %q, want tool_calls", got)
	}
	if c.Choices[0].Message.ToolCalls[0].Index != nil {
		t.Error("Chunks modified the completion's tool calls")
	}

	t.Run("no text", func(t *testing.T) {
		c := &ChatCompletion{ID: "x", Created: 1, Model: "m", Choices: []Choice{{Message: ResponseMessage{Role: "assistant"}, FinishReason: "stop"}}}
		if got := len(Chunks(c)); got != 2 {
			t.Errorf("got %d chunks, want 2 (role, finish)", got)
		}
	})
}

func TestUsageChunk(t *testing.T) {
	ch := UsageChunk("chatcmpl-1", 42, "m", Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3})
	raw, err := json.Marshal(ch)
	if err != nil {
		t.Fatal(err)
	}
	schematest.Validate(t, schematest.ChatCompletionChunk, raw)
	want := `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":42,"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`
	if string(raw) != want {
		t.Errorf("got  %s\nwant %s", raw, want)
	}
}

func FuzzTranslate(f *testing.F) {
	f.Add([]byte(`{"response_payload":{"id":"x","created":1,"choices":[{"index":0,"message":{"role":"assistant","content":[{"type":"text","text":"hi"}],` +
		`"tool_calls":[{"id":"c","function":{"name":"f","arguments":{"a":1}}}]},"finish_reason":"end_turn"}]},` +
		`"platform_attributes":{"metrics":{"usage":{"input_tokens":1,"output_tokens":2}}}}`))
	f.Add([]byte(`{"response_payload":{"choices":[{"delta":{"content":"x","tool_calls":[{"index":3,"function":{"arguments":"{"}}]}}]}}`))
	f.Add([]byte(`{"platform_attributes":{"metrics":{"usage":{"total_tokens":"5"}}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		// Never panics; whatever translates marshals to valid OpenAI JSON.
		if c, err := completionFromBody(body, "m", testNow); err == nil {
			raw, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			if err := schemaCheck(schematest.ChatCompletion, raw); err != nil {
				t.Fatalf("invalid completion %s: %v", raw, err)
			}
			for _, ch := range Chunks(c) {
				raw, _ := json.Marshal(ch)
				if err := schemaCheck(schematest.ChatCompletionChunk, raw); err != nil {
					t.Fatalf("invalid chunk %s: %v", raw, err)
				}
			}
		}
		ev, err := parseEvent(body)
		if err != nil || ev == nil {
			return
		}
		s := &Stream{id: "x", created: 1, model: "m"}
		s.handle(ev)
		s.end()
		for _, ch := range s.pending {
			raw, _ := json.Marshal(ch)
			if err := schemaCheck(schematest.ChatCompletionChunk, raw); err != nil {
				t.Fatalf("invalid chunk %s: %v", raw, err)
			}
		}
	})
}

package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"

	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/schematest"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// readStream reads an official-client stream to its end, checking each
// chunk against OpenAI's chunk schema, and returns what the chunks add up
// to, how many there were and the stream's error.
func readStream(t *testing.T, stream *ssestream.Stream[openai.ChatCompletionChunk]) (*openai.ChatCompletionAccumulator, int, error) {
	t.Helper()
	var acc openai.ChatCompletionAccumulator
	n := 0
	for stream.Next() {
		chunk := stream.Current()
		schematest.Validate(t, schematest.ChatCompletionChunk, []byte(chunk.RawJSON()))
		acc.AddChunk(chunk)
		n++
	}
	return &acc, n, stream.Err()
}

// client is the official OpenAI client pointed at the proxy.
func (e *env) client(token string) *openai.Client {
	c := openai.NewClient(
		option.WithBaseURL(e.srv.URL+"/v1/"),
		option.WithAPIKey(token),
		option.WithMaxRetries(0),
		option.WithHTTPClient(e.srv.Client()),
	)
	return &c
}

func TestHealthAndReady(t *testing.T) {
	e := newEnv(t, envOptions{})
	tests := []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{"/health", 200, `{"status":"ok"}`},
		{"/ready", 200, `{"status":"ready"}`},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, body := e.do(request{method: "GET", path: tt.path})
			if resp.StatusCode != tt.wantStatus || strings.TrimSpace(string(body)) != tt.wantBody {
				t.Errorf("GET %s = %d %s, want %d %s", tt.path, resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Errorf("no X-Request-Id on the response")
			}
		})
	}
	t.Run("ready when the store is gone", func(t *testing.T) {
		if err := e.store.Close(); err != nil {
			t.Fatalf("close store: %v", err)
		}
		resp, body := e.do(request{method: "GET", path: "/ready"})
		if resp.StatusCode != http.StatusServiceUnavailable || strings.TrimSpace(string(body)) != `{"status":"unavailable"}` {
			t.Errorf("GET /ready = %d %s, want 503 unavailable", resp.StatusCode, body)
		}
	})
}

func TestModels(t *testing.T) {
	catalog, err := gateway.LoadCatalog(strings.NewReader(`{"models":[
		{"id":"anthropic:claude-sonnet-4@20250514","upstream":"claude-sonnet-4@20250514","route":"unified","owned_by":"anthropic","created":1747267200,"aliases":["claude-sonnet-4"]},
		{"id":"bedrock:anthropic.claude-opus-4-20250514-v1:0","upstream":"anthropic.claude-opus-4-20250514-v1:0","route":"unified","owned_by":"anthropic","created":1747267200},
		{"id":"vertex:publishers/anthropic/models/claude-opus-4-6","upstream":"claude-opus-4-6","route":"unified","owned_by":"anthropic","created":1770000000}]}`))
	if err != nil {
		t.Fatalf("LoadCatalog: %v", err)
	}
	e := newEnv(t, envOptions{catalog: catalog})
	restricted := e.addToken("restricted", func(r *store.APIToken) { r.AllowedModels = []string{"claude-sonnet-4"} })
	allIDs := []string{"anthropic:claude-sonnet-4@20250514", "bedrock:anthropic.claude-opus-4-20250514-v1:0", "vertex:publishers/anthropic/models/claude-opus-4-6"}

	t.Run("list without a token", func(t *testing.T) {
		resp, body := e.do(request{method: "GET", path: "/v1/models"})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status = %d (%s), want 200", resp.StatusCode, body)
		}
		schematest.Validate(t, schematest.ModelList, body)
		var list gateway.ModelList
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range list.Data {
			ids = append(ids, m.ID)
		}
		if !slices.Equal(ids, allIDs) {
			t.Errorf("ids = %q, want %q", ids, allIDs)
		}
	})
	t.Run("list with the official client", func(t *testing.T) {
		page, err := e.client(e.token).Models.List(t.Context())
		if err != nil {
			t.Fatalf("Models.List: %v", err)
		}
		if len(page.Data) != len(allIDs) || page.Data[0].OwnedBy != "anthropic" || page.Data[0].Created != 1747267200 {
			t.Errorf("models = %+v, want the catalog", page.Data)
		}
	})
	t.Run("list with a restricted token", func(t *testing.T) {
		resp, body := e.do(request{method: "GET", path: "/v1/models", token: restricted})
		var list gateway.ModelList
		if err := json.Unmarshal(body, &list); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /v1/models = %d %s", resp.StatusCode, body)
		}
		if len(list.Data) != 1 || list.Data[0].ID != allIDs[0] {
			t.Errorf("models = %+v, want only %s", list.Data, allIDs[0])
		}
	})
	for _, tt := range []struct{ name, path, want string }{
		{"colon and at", "/v1/models/anthropic:claude-sonnet-4@20250514", allIDs[0]},
		{"alias", "/v1/models/claude-sonnet-4", allIDs[0]},
		{"two colons", "/v1/models/bedrock:anthropic.claude-opus-4-20250514-v1:0", allIDs[1]},
		{"slashes", "/v1/models/vertex:publishers/anthropic/models/claude-opus-4-6", allIDs[2]},
		{"escaped slashes", "/v1/models/vertex:publishers%2Fanthropic%2Fmodels%2Fclaude-opus-4-6", allIDs[2]},
		{"escaped colon and at", "/v1/models/anthropic%3Aclaude-sonnet-4%4020250514", allIDs[0]},
	} {
		t.Run("get "+tt.name, func(t *testing.T) {
			resp, body := e.do(request{method: "GET", path: tt.path})
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s = %d %s, want 200", tt.path, resp.StatusCode, body)
			}
			schematest.Validate(t, schematest.Model, body)
			var m gateway.ModelObject
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatal(err)
			}
			if m.ID != tt.want || m.Object != "model" {
				t.Errorf("model = %+v, want id %s", m, tt.want)
			}
		})
	}
	t.Run("get with the official client", func(t *testing.T) {
		for _, id := range allIDs {
			m, err := e.client(e.token).Models.Get(t.Context(), id)
			if err != nil {
				t.Fatalf("Models.Get(%q): %v", id, err)
			}
			if m.ID != id {
				t.Errorf("Models.Get(%q).ID = %q", id, m.ID)
			}
		}
		_, err := e.client(e.token).Models.Get(t.Context(), "nope/nope:1")
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" || !strings.Contains(apiErr.Message, "'nope/nope:1'") {
			t.Errorf("Models.Get(unknown) error = %v, want a 404 model_not_found naming the model", err)
		}
	})
}

func TestChatCompletion(t *testing.T) {
	e := newEnv(t, envOptions{})
	c, err := e.client(e.token).Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
		Model: testModel,
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("Be brief."),
			openai.UserMessage("Hello"),
		},
		MaxTokens:   openai.Int(100),
		Temperature: openai.Float(0.5),
	})
	if err != nil {
		t.Fatalf("Chat.Completions.New: %v", err)
	}
	schematest.Validate(t, schematest.ChatCompletion, []byte(c.RawJSON()))
	if len(c.Choices) != 1 || c.Choices[0].Message.Content != fake.DefaultText || c.Choices[0].FinishReason != "stop" {
		t.Errorf("completion = %s, want the fake's text and finish stop", c.RawJSON())
	}
	if c.Model != testModel || c.Object != "chat.completion" {
		t.Errorf("model, object = %q, %q; want %q, chat.completion", c.Model, c.Object, testModel)
	}
	if c.Usage.PromptTokens == 0 || c.Usage.CompletionTokens == 0 || c.Usage.TotalTokens != c.Usage.PromptTokens+c.Usage.CompletionTokens {
		t.Errorf("usage = %+v, want the upstream's counts", c.Usage)
	}
	last, ok := e.gw.LastRequest()
	if !ok || last.Model != "claude-sonnet-4@20250514" || last.Stream {
		t.Errorf("upstream request = %+v, want model claude-sonnet-4@20250514, not streamed", last)
	}
	st := e.credStatus("c1")
	if st.InFlight != 0 || st.InputTokens != c.Usage.PromptTokens || st.OutputTokens != c.Usage.CompletionTokens {
		t.Errorf("credential status = %+v, want the lease done with the usage", st)
	}
}

func TestChatStream(t *testing.T) {
	for _, withUsage := range []bool{false, true} {
		name := "without usage"
		if withUsage {
			name = "with include_usage"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			params := openai.ChatCompletionNewParams{
				Model:    testModel,
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
			}
			if withUsage {
				params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			}
			acc, n, err := readStream(t, e.client(e.token).Chat.Completions.NewStreaming(t.Context(), params))
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			if n < 3 {
				t.Errorf("got %d chunks, want at least role, text and finish", n)
			}
			if got := acc.Choices[0].Message.Content; got != fake.DefaultText {
				t.Errorf("text = %q, want %q", got, fake.DefaultText)
			}
			if got := acc.Choices[0].FinishReason; got != "stop" {
				t.Errorf("finish reason = %q, want stop", got)
			}
			if withUsage && acc.Usage.CompletionTokens == 0 {
				t.Errorf("usage = %+v, want the upstream's counts", acc.Usage)
			}
			if !withUsage && acc.Usage.TotalTokens != 0 {
				t.Errorf("usage = %+v without include_usage, want none", acc.Usage)
			}
			if last, ok := e.gw.LastRequest(); !ok || !last.Stream {
				t.Errorf("upstream request = %+v, want a streamed one", last)
			}
			eventually(t, 2*time.Second, "the lease is done", func() bool { return e.credStatus("c1").InFlight == 0 })
		})
	}
}

func TestChatStreamRaw(t *testing.T) {
	e := newEnv(t, envOptions{})
	resp, body := e.chat(chatBody(`"stream":true,"stream_options":{"include_usage":true}`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s)", resp.StatusCode, body)
	}
	for k, want := range map[string]string{"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	s := summarize(t, body)
	if !s.done || !s.doneLast || s.errorEvent != "" {
		t.Errorf("done, last, error = %v, %v, %q; want a clean [DONE] end", s.done, s.doneLast, s.errorEvent)
	}
	if s.text != fake.DefaultText {
		t.Errorf("text = %q, want %q", s.text, fake.DefaultText)
	}
	last := s.chunks[len(s.chunks)-1]
	if s.usage == nil || len(last.Choices) != 0 || last.Usage == nil {
		t.Errorf("last chunk = %+v, want the usage chunk with no choices", last)
	}
	for _, c := range s.chunks {
		if c.ID != s.chunks[0].ID || c.Model != testModel {
			t.Errorf("chunk id, model = %q, %q; want %q, %q", c.ID, c.Model, s.chunks[0].ID, testModel)
		}
	}
}

func TestChatStreamWithTools(t *testing.T) {
	e := newEnv(t, envOptions{creds: []fake.Credential{testCred("c1", fake.Behavior{
		ToolCalls: []fake.ToolCall{{ID: "call_1", Name: "get_weather", Arguments: json.RawMessage(`{"city":"Paris"}`)}},
		Content:   fake.ContentNull,
	})}})
	params := openai.ChatCompletionNewParams{
		Model:    testModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Weather in Paris?")},
		Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
			Name:       "get_weather",
			Parameters: openai.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}},
		})},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}
	acc, _, err := readStream(t, e.client(e.token).Chat.Completions.NewStreaming(t.Context(), params))
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	msg := acc.Choices[0].Message
	if len(msg.ToolCalls) != 1 || msg.ToolCalls[0].Function.Name != "get_weather" || msg.ToolCalls[0].Function.Arguments != `{"city":"Paris"}` || msg.ToolCalls[0].ID != "call_1" {
		t.Errorf("tool calls = %+v, want get_weather({\"city\":\"Paris\"})", msg.ToolCalls)
	}
	if acc.Choices[0].FinishReason != "tool_calls" {
		t.Errorf("finish reason = %q, want tool_calls", acc.Choices[0].FinishReason)
	}
	if acc.Usage.TotalTokens == 0 {
		t.Errorf("usage = %+v, want counts", acc.Usage)
	}
	if last, ok := e.gw.LastRequest(); !ok || last.Stream {
		t.Errorf("upstream request = %+v, want a non-streamed call for a request with tools", last)
	}

	// The raw stream ends with the usage chunk and [DONE].
	resp, body := e.chat(`{"model":"` + testModel + `","stream":true,"stream_options":{"include_usage":true},
		"messages":[{"role":"user","content":"Weather?"}],
		"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d (%s)", resp.StatusCode, body)
	}
	s := summarize(t, body)
	if !s.doneLast || s.usage == nil || s.errorEvent != "" {
		t.Errorf("done last, usage, error = %v, %v, %q; want usage then [DONE]", s.doneLast, s.usage, s.errorEvent)
	}
}

func TestChatErrorsWithTheOfficialClient(t *testing.T) {
	e := newEnv(t, envOptions{})
	_, err := e.client("sk-ap-wrong").Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
		Model: testModel, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Code != "invalid_api_key" || apiErr.Type != "invalid_request_error" {
		t.Errorf("error = %v, want a 401 invalid_api_key", err)
	}
	_, err = e.client(e.token).Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
		Model: "no-such-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
	})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" || apiErr.Param != "model" {
		t.Errorf("error = %v, want a 404 model_not_found on param model", err)
	}
}

package gateway

import (
	"encoding/json"
	"testing"
)

func ptr[T any](v T) *T { return &v }

// decodeRequest parses an OpenAI request as the api package would.
func decodeRequest(t *testing.T, s string) *ChatRequest {
	t.Helper()
	var r ChatRequest
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		t.Fatalf("decode request: %v", err)
	}
	return &r
}

// compactJSON normalises a JSON text for comparison.
func compactJSON(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad JSON %s: %v", s, err)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

func TestBuildRequest(t *testing.T) {
	sonnet := Model{ID: "anthropic:claude-sonnet-4@20250514", Upstream: "claude-sonnet-4@20250514", Route: RouteUnified}
	bedrock := Model{ID: "bedrock:anthropic.claude-sonnet-4-20250514-v1:0", Upstream: "anthropic.claude-sonnet-4-20250514-v1:0", Route: RouteUnified}
	tests := []struct {
		name   string
		model  Model
		req    string
		stream bool
		want   string
	}{
		{
			name:  "minimal string content",
			model: sonnet,
			req:   `{"model":"claude-sonnet-4","messages":[{"role":"user","content":"Hi"}]}`,
			want:  `{"request_payload":{"messages":[{"role":"user","content":"Hi"}],"stream":false},"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`,
		},
		{
			name:   "stream is a JSON boolean",
			model:  bedrock,
			req:    `{"model":"x","stream":true,"messages":[{"role":"user","content":"Hi"}]}`,
			stream: true,
			want:   `{"request_payload":{"messages":[{"role":"user","content":"Hi"}],"stream":true},"platform_attributes":{"model":"anthropic.claude-sonnet-4-20250514-v1:0"}}`,
		},
		{
			name:  "content parts and system message",
			model: sonnet,
			req: `{"model":"m","messages":[{"role":"system","content":"Be brief."},
				{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}`,
			want: `{"request_payload":{"messages":[{"role":"system","content":"Be brief."},
				{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"stream":false},
				"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`,
		},
		{
			name:  "developer becomes system",
			model: sonnet,
			req:   `{"model":"m","messages":[{"role":"developer","content":"Rules"},{"role":"user","content":"Hi"}]}`,
			want: `{"request_payload":{"messages":[{"role":"system","content":"Rules"},{"role":"user","content":"Hi"}],"stream":false},
				"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`,
		},
		{
			name:  "sampling parameters",
			model: sonnet,
			req: `{"model":"m","messages":[{"role":"user","content":"Hi"}],"max_tokens":100,"temperature":0.2,"top_p":0.9,
				"stop":"END","user":"u-1"}`,
			want: `{"request_payload":{"messages":[{"role":"user","content":"Hi"}],"temperature":0.2,"max_tokens":100,"top_p":0.9,
				"stop":["END"],"user":"u-1","stream":false},"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`,
		},
		{
			name:  "zero temperature kept",
			model: sonnet,
			req:   `{"model":"m","messages":[{"role":"user","content":"Hi"}],"temperature":0,"stop":["a","b"]}`,
			want: `{"request_payload":{"messages":[{"role":"user","content":"Hi"}],"temperature":0,"stop":["a","b"],"stream":false},
				"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`,
		},
		{
			name:  "max_completion_tokens becomes max_tokens",
			model: sonnet,
			req:   `{"model":"m","messages":[{"role":"user","content":"Hi"}],"max_completion_tokens":64}`,
			want: `{"request_payload":{"messages":[{"role":"user","content":"Hi"}],"max_tokens":64,"stream":false},
				"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`,
		},
		{
			name:  "max_tokens wins over max_completion_tokens",
			model: sonnet,
			req:   `{"model":"m","messages":[{"role":"user","content":"Hi"}],"max_tokens":10,"max_completion_tokens":64}`,
			want: `{"request_payload":{"messages":[{"role":"user","content":"Hi"}],"max_tokens":10,"stream":false},
				"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`,
		},
		{
			name:  "tools, tool_choice, assistant tool_calls and tool messages",
			model: sonnet,
			req: `{"model":"m","messages":[
				{"role":"user","content":"Weather?"},
				{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}}]},
				{"role":"assistant","tool_calls":[{"id":"call_2","function":{"name":"time","arguments":"{}"}}]},
				{"role":"tool","tool_call_id":"call_1","content":"sunny"}],
				"tools":[{"type":"function","function":{"name":"weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],
				"tool_choice":"auto"}`,
			want: `{"request_payload":{"messages":[
				{"role":"user","content":"Weather?"},
				{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}}]},
				{"role":"assistant","content":null,"tool_calls":[{"id":"call_2","type":"function","function":{"name":"time","arguments":"{}"}}]},
				{"role":"tool","content":"sunny","tool_call_id":"call_1"}],
				"tools":[{"type":"function","function":{"name":"weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],
				"tool_choice":"auto","stream":false},"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`,
		},
		{
			name:  "tool type defaults to function",
			model: sonnet,
			req:   `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"function":{"name":"f"}}]}`,
			want: `{"request_payload":{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"stream":false},
				"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`,
		},
		{
			name:  "tool_choice object",
			model: sonnet,
			req:   `{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"function","function":{"name":"f"}}}`,
			want: `{"request_payload":{"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"function","function":{"name":"f"}},"stream":false},
				"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`,
		},
		{
			name:  "unknown and proxy-only fields dropped",
			model: sonnet,
			req: `{"model":"m","messages":[{"role":"user","content":"x","extra":1}],"stream_options":{"include_usage":true},
				"n":2,"seed":5,"logprobs":true,"response_format":{"type":"json_object"},"tool_choice":null,"stop":null}`,
			want: `{"request_payload":{"messages":[{"role":"user","content":"x"}],"stream":false},"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := buildRequest(tt.model, decodeRequest(t, tt.req), tt.stream)
			if err != nil {
				t.Fatalf("buildRequest: %v", err)
			}
			if want := compactJSON(t, tt.want); compactJSON(t, string(got)) != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
			var env struct {
				RequestPayload map[string]json.RawMessage `json:"request_payload"`
			}
			if err := json.Unmarshal(got, &env); err != nil {
				t.Fatal(err)
			}
			if _, ok := env.RequestPayload["model"]; ok {
				t.Error("request_payload contains model")
			}
		})
	}
}

func TestBuildRequestNoMessages(t *testing.T) {
	_, err := buildRequest(Model{Upstream: "m", Route: RouteUnified}, &ChatRequest{Model: "m"}, false)
	if err == nil {
		t.Fatal("no error for a request without messages")
	}
}

func TestBuildRequestDoesNotModifyInput(t *testing.T) {
	req := &ChatRequest{Messages: []Message{{Role: "assistant", ToolCalls: []ToolCall{{Index: ptr(3), ID: "c", Function: FunctionCall{Name: "f"}}}}}}
	if _, err := buildRequest(Model{Upstream: "m", Route: RouteUnified}, req, false); err != nil {
		t.Fatal(err)
	}
	if tc := req.Messages[0].ToolCalls[0]; tc.Index == nil || *tc.Index != 3 || tc.Type != "" {
		t.Errorf("input tool call changed to %+v", tc)
	}
}

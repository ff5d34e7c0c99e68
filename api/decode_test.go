package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/openaierr"
)

func TestDecodeChatRequestValid(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		check func(t *testing.T, got *gateway.ChatRequest)
	}{
		{
			name: "minimal",
			body: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
			check: func(t *testing.T, got *gateway.ChatRequest) {
				if got.Model != "m" || len(got.Messages) != 1 || got.Messages[0].Role != "user" {
					t.Errorf("got %+v, want model m and one user message", got)
				}
			},
		},
		{
			name: "every field",
			body: `{"model":"m","messages":[
				{"role":"system","content":"be brief"},
				{"role":"developer","content":[{"type":"text","text":"x"}]},
				{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
				{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
				{"role":"tool","tool_call_id":"c1","content":"42"}],
				"stream":true,"stream_options":{"include_usage":true},"max_tokens":10,"max_completion_tokens":5,
				"temperature":0,"top_p":1,"stop":"END","user":"u1","n":1,"unknown_field":{"x":1},
				"tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object"}}}],
				"tool_choice":{"type":"function","function":{"name":"f"}}}`,
			check: func(t *testing.T, got *gateway.ChatRequest) {
				if len(got.Messages) != 5 || len(got.Tools) != 1 || !got.Stream || got.StreamOptions == nil ||
					*got.MaxTokens != 10 || *got.Temperature != 0 || len(got.Stop) != 1 || got.Stop[0] != "END" {
					t.Errorf("got %+v, want every field decoded", got)
				}
			},
		},
		{
			name: "assistant tool call without type is normalised",
			body: `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f","arguments":""}}]},{"role":"tool","tool_call_id":"c","content":"ok"}]}`,
			check: func(t *testing.T, got *gateway.ChatRequest) {
				if tc := got.Messages[0].ToolCalls[0]; tc.Type != "function" {
					t.Errorf("tool call type = %q, want function", tc.Type)
				}
			},
		},
		{
			name: "escaped part type and duplicate keys",
			body: `{"model":"m","messages":[{"role":"user","content":[{"type":"te\u0078t","text":"a"},{"type":"image_url","image_url":{"url":"u","url":null}},{"type":"text","text":null,"text":"b"}]}]}`,
			check: func(t *testing.T, got *gateway.ChatRequest) {
				if len(got.Messages) != 1 || !strings.Contains(string(got.Messages[0].Content), `"te\u0078t"`) {
					t.Errorf("got %+v, want the content kept as sent", got)
				}
			},
		},
		{
			name:  "stop as a list and tool_choice strings",
			body:  `{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["a","b"],"tool_choice":"auto"}`,
			check: func(t *testing.T, got *gateway.ChatRequest) {},
		},
		{
			name:  "nulls for optional fields",
			body:  `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":null,"temperature":null,"stop":null,"tools":null,"tool_choice":null,"stream_options":null}`,
			check: func(t *testing.T, got *gateway.ChatRequest) {},
		},
		{
			name:  "application json with spaces around",
			body:  "  \n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\"}]}\n",
			check: func(t *testing.T, got *gateway.ChatRequest) {},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, aerr := decodeChatRequest([]byte(tt.body))
			if aerr != nil {
				t.Fatalf("decodeChatRequest: %d %s (param %q), want success", aerr.status, aerr.message, aerr.param)
			}
			tt.check(t, got)
		})
	}
}

func TestDecodeChatRequestErrors(t *testing.T) {
	const user = `{"role":"user","content":"hi"}`
	tests := []struct {
		name      string
		body      string
		wantParam string
		wantMsg   string // a substring of the message
	}{
		{"empty body", ``, "", "empty"},
		{"whitespace body", "  \n", "", "empty"},
		{"not an object", `[1,2]`, "", "JSON object"},
		{"null body", `null`, "", "JSON object"},
		{"syntax error", `{"model":"m",}`, "", "not valid JSON"},
		{"truncated", `{"model":"m","messages":[`, "", "not valid JSON"},
		{"trailing data", `{"model":"m","messages":[` + user + `]} x`, "", "not valid JSON"},
		{"missing model", `{"messages":[` + user + `]}`, "model", "model"},
		{"empty model", `{"model":"","messages":[` + user + `]}`, "model", "model"},
		{"model not a string", `{"model":5,"messages":[` + user + `]}`, "model", "Invalid type for 'model': expected a string, but got a number"},
		{"missing messages", `{"model":"m"}`, "messages", "non-empty"},
		{"empty messages", `{"model":"m","messages":[]}`, "messages", "non-empty"},
		{"messages not an array", `{"model":"m","messages":"hi"}`, "messages", "Invalid type for 'messages': expected an array, but got a string"},
		{"message not an object", `{"model":"m","messages":["hi"]}`, "messages[0]", "expected an object, but got a string"},
		{"role not a string", `{"model":"m","messages":[` + user + `,{"role":1,"content":"x"}]}`, "messages[1].role", "Invalid type for 'messages[1].role': expected a string"},
		{"missing role", `{"model":"m","messages":[{"content":"x"}]}`, "messages[0].role", "Missing required parameter"},
		{"unknown role", `{"model":"m","messages":[{"role":"wizard","content":"x"}]}`, "messages[0].role", "'wizard'"},
		{"function role", `{"model":"m","messages":[{"role":"function","content":"x"}]}`, "messages[0].role", "Supported values"},
		{"missing content", `{"model":"m","messages":[{"role":"user"}]}`, "messages[0].content", "Missing required parameter: 'messages[0].content'"},
		{"null content", `{"model":"m","messages":[{"role":"system","content":null}]}`, "messages[0].content", "Missing required"},
		{"content a number", `{"model":"m","messages":[{"role":"user","content":5}]}`, "messages[0].content", "expected a string or an array of content parts, but got a number"},
		{"content an object", `{"model":"m","messages":[{"role":"user","content":{"text":"x"}}]}`, "messages[0].content", "but got an object"},
		{"content empty list", `{"model":"m","messages":[{"role":"user","content":[]}]}`, "messages[0].content", "must not be empty"},
		{"part not an object", `{"model":"m","messages":[{"role":"user","content":["x"]}]}`, "messages[0].content[0]", "expected an object"},
		{"part without type", `{"model":"m","messages":[{"role":"user","content":[{"text":"x"}]}]}`, "messages[0].content[0].type", "Missing required"},
		{"part unknown type", `{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio"}]}]}`, "messages[0].content[0].type", "'input_audio'"},
		{"text part without text", `{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}`, "messages[0].content[0].text", "Missing required"},
		{"part null", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"},null]}]}`, "messages[0].content[1]", "expected an object, but got null"},
		{"second part without text", `{"model":"m","messages":[` + user + `,{"role":"user","content":[{"type":"text","text":"x"},{"type":"text","text":null}]}]}`, "messages[1].content[1].text", "Missing required"},
		{"image part with url a number", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":1}}]}]}`, "messages[0].content[0].image_url.url", "expected a string, but got a number"},
		{"image part with detail a number", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x","detail":1}}]}]}`, "messages[0].content[0].image_url.detail", "expected a string"},
		{"image part with image_url a string", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":"x"}]}]}`, "messages[0].content[0].image_url", "expected an object, but got a string"},
		{"part type a number", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":5}]}]}`, "messages[0].content[1].type", "expected a string, but got a number"},
		{"text part with a number", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":1}]}]}`, "messages[0].content[0].text", "expected a string, but got a number"},
		{"image part in a system message", `{"model":"m","messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, "messages[0].content[0].type", "only allowed in user messages"},
		{"image part without url", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, "messages[0].content[0].image_url.url", "Missing required"},
		{"assistant without content or tool calls", `{"model":"m","messages":[{"role":"assistant"}]}`, "messages[0].content", "Missing required"},
		{"tool message without tool_call_id", `{"model":"m","messages":[{"role":"tool","content":"x"}]}`, "messages[0].tool_call_id", "tool_call_id"},
		{"tool calls on a user message", `{"model":"m","messages":[{"role":"user","content":"x","tool_calls":[{"id":"c","function":{"name":"f","arguments":""}}]}]}`, "messages[0].tool_calls", "only allowed on assistant"},
		{"tool call without id", `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"type":"function","function":{"name":"f","arguments":""}}]}]}`, "messages[0].tool_calls[0].id", "Missing required"},
		{"tool call without name", `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"arguments":""}}]}]}`, "messages[0].tool_calls[0].function.name", "Missing required"},
		{"tool call wrong type", `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"custom","function":{"name":"f","arguments":""}}]}]}`, "messages[0].tool_calls[0].type", "'custom'"},
		{"tool call arguments an object", `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":{}}}]}]}`, "messages[0].tool_calls.function.arguments", "expected a string, but got an object"},
		{"temperature too high", `{"model":"m","messages":[` + user + `],"temperature":2.5}`, "temperature", "between 0 and 2"},
		{"temperature negative", `{"model":"m","messages":[` + user + `],"temperature":-1}`, "temperature", "between 0 and 2"},
		{"temperature a string", `{"model":"m","messages":[` + user + `],"temperature":"hot"}`, "temperature", "Invalid type for 'temperature': expected a number, but got a string"},
		{"top_p too high", `{"model":"m","messages":[` + user + `],"top_p":1.5}`, "top_p", "between 0 and 1"},
		{"max_tokens zero", `{"model":"m","messages":[` + user + `],"max_tokens":0}`, "max_tokens", "at least 1"},
		{"max_tokens negative", `{"model":"m","messages":[` + user + `],"max_tokens":-5}`, "max_tokens", "at least 1"},
		{"max_tokens fractional", `{"model":"m","messages":[` + user + `],"max_tokens":1.5}`, "max_tokens", "expected an integer, but got the number 1.5"},
		{"max_completion_tokens zero", `{"model":"m","messages":[` + user + `],"max_completion_tokens":0}`, "max_completion_tokens", "at least 1"},
		{"stream a string", `{"model":"m","messages":[` + user + `],"stream":"yes"}`, "stream", "expected a boolean, but got a string"},
		{"stream_options wrong", `{"model":"m","messages":[` + user + `],"stream_options":{"include_usage":"yes"}}`, "stream_options.include_usage", "expected a boolean"},
		{"stop a number", `{"model":"m","messages":[` + user + `],"stop":5}`, "stop", "expected a string or an array of strings, but got a number"},
		{"user a number", `{"model":"m","messages":[` + user + `],"user":5}`, "user", "expected a string"},
		{"tools not an array", `{"model":"m","messages":[` + user + `],"tools":{}}`, "tools", "expected an array"},
		{"tool without type", `{"model":"m","messages":[` + user + `],"tools":[{"function":{"name":"f"}}]}`, "tools[0].type", "Missing required"},
		{"tool wrong type", `{"model":"m","messages":[` + user + `],"tools":[{"type":"web_search"}]}`, "tools[0].type", "'web_search'"},
		{"tool without name", `{"model":"m","messages":[` + user + `],"tools":[{"type":"function","function":{}}]}`, "tools[0].function.name", "Missing required"},
		{"tool bad name", `{"model":"m","messages":[` + user + `],"tools":[{"type":"function","function":{"name":"a b"}}]}`, "tools[0].function.name", "letters, digits"},
		{"tool name a number", `{"model":"m","messages":[` + user + `],"tools":[{"type":"function","function":{"name":1}}]}`, "tools[0].function.name", "expected a string"},
		{"tool parameters a string", `{"model":"m","messages":[` + user + `],"tools":[{"type":"function","function":{"name":"f","parameters":"x"}}]}`, "tools[0].function.parameters", "expected an object"},
		{"tool_choice unknown string", `{"model":"m","messages":[` + user + `],"tool_choice":"always"}`, "tool_choice", "'always'"},
		{"tool_choice required without tools", `{"model":"m","messages":[` + user + `],"tool_choice":"required"}`, "tool_choice", "at least one tool"},
		{"tool_choice unknown function", `{"model":"m","messages":[` + user + `],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}}`, "tool_choice.function.name", "'g'"},
		{"tool_choice a number", `{"model":"m","messages":[` + user + `],"tool_choice":1}`, "tool_choice", "expected a string or an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, aerr := decodeChatRequest([]byte(tt.body))
			if aerr == nil {
				t.Fatalf("decodeChatRequest = %+v, want an error", got)
			}
			if aerr.status != http.StatusBadRequest || aerr.typ != openaierr.TypeInvalidRequest {
				t.Errorf("status, type = %d, %q; want 400, %q", aerr.status, aerr.typ, openaierr.TypeInvalidRequest)
			}
			if aerr.param != tt.wantParam {
				t.Errorf("param = %q, want %q", aerr.param, tt.wantParam)
			}
			if !strings.Contains(aerr.message, tt.wantMsg) {
				t.Errorf("message = %q, want it to contain %q", aerr.message, tt.wantMsg)
			}
		})
	}
}

// FuzzDecodeChatRequest checks that decoding never panics, that every
// refusal is a 400 with a message, and that an accepted request survives a
// round trip: encoding it and decoding it again is accepted and encodes
// the same.
func FuzzDecodeChatRequest(f *testing.F) {
	seeds := []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"1"}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"tool_choice":"auto"}`,
		`{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":1.5,"top_p":0.5,"max_tokens":3,"stop":["a"]}`,
		`{"model":5}`, `[]`, `null`, ``, `{"messages":"x"}`, `{"model":"m","messages":[{"role":1}]}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, aerr := decodeChatRequest(body)
		if aerr != nil {
			if aerr.status != http.StatusBadRequest || aerr.message == "" || aerr.typ != openaierr.TypeInvalidRequest {
				t.Fatalf("refusal = %+v, want a 400 invalid_request_error with a message", aerr)
			}
			return
		}
		if req.Model == "" || len(req.Messages) == 0 {
			t.Fatalf("accepted %q without model or messages", body)
		}
		first, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("marshal accepted request: %v", err)
		}
		again, aerr := decodeChatRequest(first)
		if aerr != nil {
			t.Fatalf("re-decoding %s: %s", first, aerr.message)
		}
		second, err := json.Marshal(again)
		if err != nil {
			t.Fatalf("marshal re-decoded request: %v", err)
		}
		if !bytes.Equal(first, second) {
			t.Fatalf("round trip changed the request:\n first %s\nsecond %s", first, second)
		}
	})
}

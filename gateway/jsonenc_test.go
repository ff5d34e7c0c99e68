package gateway

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
)

// The reference encoding of a unified-chat request: the request body as
// json.Marshal writes it from plain structs. buildRequest writes the same
// JSON value by hand; the tests below compare the two.

type refRequest struct {
	RequestPayload     refPayload `json:"request_payload"`
	PlatformAttributes struct {
		Model string `json:"model"`
	} `json:"platform_attributes"`
}

type refPayload struct {
	Messages    []refMessage    `json:"messages"`
	Temperature *float64        `json:"temperature,omitempty"`
	MaxTokens   *int            `json:"max_tokens,omitempty"`
	TopP        *float64        `json:"top_p,omitempty"`
	Stop        []string        `json:"stop,omitempty"`
	Tools       []Tool          `json:"tools,omitempty"`
	ToolChoice  json.RawMessage `json:"tool_choice,omitempty"`
	User        string          `json:"user,omitempty"`
	Stream      bool            `json:"stream"`
}

type refMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	Name       string          `json:"name,omitempty"`
	ToolCalls  []ToolCall      `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

func referenceRequest(m Model, req *ChatRequest, stream bool) ([]byte, error) {
	r := refRequest{RequestPayload: refPayload{
		Temperature: req.Temperature, MaxTokens: req.MaxTokens, TopP: req.TopP,
		User: req.User, Stream: stream,
	}}
	r.PlatformAttributes.Model = m.Upstream
	if r.RequestPayload.MaxTokens == nil {
		r.RequestPayload.MaxTokens = req.MaxCompletionTokens
	}
	if len(req.Stop) > 0 {
		r.RequestPayload.Stop = req.Stop
	}
	for _, t := range req.Tools {
		if t.Type == "" {
			t.Type = "function"
		}
		r.RequestPayload.Tools = append(r.RequestPayload.Tools, t)
	}
	if len(req.ToolChoice) > 0 && string(req.ToolChoice) != "null" {
		r.RequestPayload.ToolChoice = req.ToolChoice
	}
	for _, msg := range req.Messages {
		rm := refMessage{Role: msg.Role, Content: msg.Content, Name: msg.Name, ToolCallID: msg.ToolCallID}
		if rm.Role == "developer" {
			rm.Role = "system"
		}
		for _, tc := range msg.ToolCalls {
			tc.Index = nil
			if tc.Type == "" {
				tc.Type = "function"
			}
			rm.ToolCalls = append(rm.ToolCalls, tc)
		}
		r.RequestPayload.Messages = append(r.RequestPayload.Messages, rm)
	}
	return json.Marshal(r)
}

// sameJSON reports whether a and b hold the same JSON value.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	// Numbers as written (json.Number): a raw value may hold one that no
	// float64 holds (1e400), which is still JSON.
	decode := func(data []byte, what string) any {
		d := json.NewDecoder(bytes.NewReader(data))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			t.Fatalf("%s not JSON: %v\n%s", what, err, data)
		}
		return v
	}
	return reflect.DeepEqual(numbersByValue(decode(a, "body")), numbersByValue(decode(b, "reference")))
}

// numbersByValue replaces the numbers of a decoded value that a float64
// holds by that float64 (1e-07 and 1e-7 are the same number); the others
// stay as written.
func numbersByValue(v any) any {
	switch v := v.(type) {
	case json.Number:
		if f, err := v.Float64(); err == nil {
			return f
		}
	case map[string]any:
		for k, x := range v {
			v[k] = numbersByValue(x)
		}
	case []any:
		for i, x := range v {
			v[i] = numbersByValue(x)
		}
	}
	return v
}

var buildRequestSeeds = []string{
	`{"model":"m","messages":[{"role":"user","content":"Hi"}]}`,
	`{"model":"m","messages":[{"role":"developer","content":"Be terse. <b>&</b>"},{"role":"user","content":[{"type":"text","text":"a\u2028b"},{"type":"image_url","image_url":{"url":"data:x"}}]}],
	  "temperature":0.7,"top_p":1e-7,"max_completion_tokens":99,"stop":"END","user":"u\"1\\","tool_choice":null}`,
	`{"model":"m","max_tokens":5,"max_completion_tokens":7,"temperature":1e21,"stop":["a","\n"],
	  "messages":[{"role":"user","content":"q"},
	   {"role":"assistant","content":null,"tool_calls":[{"index":3,"id":"call_1","function":{"name":"f","arguments":"{\"x\":\"\\u0001\"}"}},{"type":"function","function":{"arguments":""}}]},
	   {"role":"tool","tool_call_id":"call_1","name":"f","content":"  {\"ok\" : true}  "}],
	  "tools":[{"function":{"name":"f","description":"does f\tthings","parameters":{"type":"object", "properties":{}},"strict":true}},{"type":"function","function":{"name":"g"}}],
	  "tool_choice":{"type":"function","function":{"name":"f"}}}`,
	`{"model":"m","messages":[{"role":"assistant"}],"temperature":0,"top_p":-0.5,"stop":[],"tools":[],"tool_choice":"auto"}`,
	`{"model":"m","messages":[{"role":"user","content":1e400},{"role":"user","content":[ 1.50 , {"a" : [true,null]} ]}]}`,
}

// TestBuildRequestMatchesReference checks buildRequest against json.Marshal
// of the equivalent structs, for requests covering every field.
func TestBuildRequestMatchesReference(t *testing.T) {
	m := Model{Upstream: "claude-sonnet-4@20250514", Route: RouteUnified}
	for _, src := range buildRequestSeeds {
		req := decodeRequest(t, src)
		for _, stream := range []bool{false, true} {
			got, err := buildRequest(m, req, stream)
			if err != nil {
				t.Fatal(err)
			}
			want, err := referenceRequest(m, req, stream)
			if err != nil {
				t.Fatal(err)
			}
			if !sameJSON(t, got, want) {
				t.Errorf("request %s (stream %v):\n got %s\nwant %s", src, stream, got, want)
			}
		}
	}
}

// FuzzBuildRequest: for any request the decoder accepts, buildRequest
// writes valid JSON holding the same value as the reference encoding.
func FuzzBuildRequest(f *testing.F) {
	for _, s := range buildRequestSeeds {
		f.Add(s)
	}
	m := Model{Upstream: "up\"stream", Route: RouteUnified}
	f.Fuzz(func(t *testing.T, src string) {
		var req ChatRequest
		if json.Unmarshal([]byte(src), &req) != nil || len(req.Messages) == 0 {
			return
		}
		got, err := buildRequest(m, &req, true)
		if err != nil {
			t.Fatal(err)
		}
		want, err := referenceRequest(m, &req, true)
		if err != nil {
			t.Skip("the reference cannot encode it either")
		}
		if !json.Valid(got) || !sameJSON(t, got, want) {
			t.Errorf("got %s\nwant %s", got, want)
		}
	})
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "ctl \x00\x01\x1f\x7f \n\r\t\b\f",
		"<html> & friends", "é ü 中文 🙂", "line\u2028sep\u2029para", "bad \xff\xfe utf8 \xe2\x82",
		strings.Repeat("long text ", 1000),
	} {
		got := appendString(nil, s)
		if !json.Valid(got) {
			t.Errorf("appendString(%q) = %s: not valid JSON", s, got)
			continue
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatal(err)
		}
		ref, _ := json.Marshal(s)
		var want string
		if err := json.Unmarshal(ref, &want); err != nil {
			t.Fatal(err)
		}
		if back != want {
			t.Errorf("appendString(%q) reads back as %q, json.Marshal's as %q", s, back, want)
		}
	}
}

func TestAppendFloat(t *testing.T) {
	for _, f := range []float64{0, -0.0, 1, 0.7, -2.5, 1e-7, 1e21, 123456789, math.MaxFloat64, math.SmallestNonzeroFloat64} {
		got := appendFloat(nil, f)
		var back float64
		if err := json.Unmarshal(got, &back); err != nil || back != f {
			t.Errorf("appendFloat(%v) = %s (reads back as %v, %v)", f, got, back, err)
		}
	}
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if got := string(appendFloat(nil, f)); got != "null" {
			t.Errorf("appendFloat(%v) = %s, want null", f, got)
		}
	}
}

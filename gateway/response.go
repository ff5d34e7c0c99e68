package gateway

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
)

// This file decodes unified-chat responses and events (protocol §2) and
// turns them into OpenAI chat.completion objects and chunks. The upstream's
// shape is only partly known, so decoding is lenient: unknown keys are
// ignored, numbers may be floats or strings, `delta` is accepted where
// `message` is expected, content may be a string or a list of parts.

type unifiedResponse struct {
	ResponsePayload    *responsePayload    `json:"response_payload"`
	PlatformAttributes *responseAttributes `json:"platform_attributes"`
	Error              json.RawMessage     `json:"error"`
}

type responsePayload struct {
	ID      string          `json:"id"`
	Created flexInt         `json:"created"`
	Choices []unifiedChoice `json:"choices"`
	Usage   *unifiedUsage   `json:"usage"` // not seen upstream; tolerated
}

type unifiedChoice struct {
	Index        *flexInt        `json:"index"`
	Message      *unifiedMessage `json:"message"`
	Delta        *unifiedMessage `json:"delta"`
	FinishReason *string         `json:"finish_reason"`
}

type unifiedMessage struct {
	Role      string            `json:"role"`
	Content   json.RawMessage   `json:"content"`
	ToolCalls []unifiedToolCall `json:"tool_calls"`
}

type unifiedToolCall struct {
	Index    *flexInt `json:"index"`
	ID       string   `json:"id"`
	Type     string   `json:"type"`
	Function struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	} `json:"function"`
}

type responseAttributes struct {
	Model   string `json:"model"`
	Metrics *struct {
		Usage *unifiedUsage `json:"usage"`
	} `json:"metrics"`
}

// unifiedUsage is the gateway's usage (input/output) or OpenAI's (prompt/completion).
type unifiedUsage struct {
	InputTokens      *flexInt `json:"input_tokens"`
	OutputTokens     *flexInt `json:"output_tokens"`
	TotalTokens      *flexInt `json:"total_tokens"`
	PromptTokens     *flexInt `json:"prompt_tokens"`
	CompletionTokens *flexInt `json:"completion_tokens"`
}

// flexInt is an integer that may arrive as a JSON number (possibly with a
// fraction or exponent) or a numeric string. Anything else (null, garbage,
// out of range) decodes as 0 rather than failing the whole response.
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if json.Unmarshal(b, &s) != nil {
			return nil
		}
		b = []byte(strings.TrimSpace(s))
	}
	if n, err := strconv.ParseInt(string(b), 10, 64); err == nil {
		*f = flexInt(n)
		return nil
	}
	if x, err := strconv.ParseFloat(string(b), 64); err == nil && x == x && x < 1<<62 && x > -(1<<62) {
		*f = flexInt(x)
	}
	return nil
}

// usage converts to OpenAI's usage, or nil when no count is present.
func (u *unifiedUsage) usage() *Usage {
	if u == nil {
		return nil
	}
	pick := func(a, b *flexInt) (int64, bool) {
		switch {
		case a != nil:
			return int64(*a), true
		case b != nil:
			return int64(*b), true
		}
		return 0, false
	}
	in, okIn := pick(u.InputTokens, u.PromptTokens)
	out, okOut := pick(u.OutputTokens, u.CompletionTokens)
	total, okTotal := pick(u.TotalTokens, nil)
	if !okIn && !okOut && !okTotal {
		return nil
	}
	if !okTotal {
		total = in + out
	}
	return &Usage{PromptTokens: in, CompletionTokens: out, TotalTokens: total}
}

// usage returns the usage carried anywhere in the envelope, or nil.
func (r *unifiedResponse) usage() *Usage {
	if r.PlatformAttributes != nil && r.PlatformAttributes.Metrics != nil {
		if u := r.PlatformAttributes.Metrics.Usage.usage(); u != nil {
			return u
		}
	}
	if r.ResponsePayload != nil {
		return r.ResponsePayload.Usage.usage()
	}
	return nil
}

// body returns the choice's message, falling back to its delta.
func (c *unifiedChoice) body() *unifiedMessage {
	if c.Message != nil {
		return c.Message
	}
	return c.Delta
}

// text joins the text of a content value: a list of parts, a string, or null.
// ok is false when there is no text at all (null, [], only non-text parts).
func contentText(raw json.RawMessage) (text string, ok bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", false
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	case '[':
		var parts []struct {
			Type string  `json:"type"`
			Text *string `json:"text"`
		}
		if json.Unmarshal(raw, &parts) != nil {
			return "", false
		}
		var b strings.Builder
		for _, p := range parts {
			if p.Text != nil && (p.Type == "" || p.Type == "text") {
				b.WriteString(*p.Text)
				ok = true
			}
		}
		return b.String(), ok
	}
	return "", false
}

// arguments renders tool-call arguments as OpenAI wants them: a JSON string.
// A string is kept (empty → "{}"), null or absent → "{}", anything else
// (an object, normally) → its compact JSON.
func arguments(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "{}"
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			if s == "" {
				return "{}"
			}
			return s
		}
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return "{}"
	}
	return b.String()
}

// mapFinishReason maps an upstream finish reason to OpenAI's vocabulary.
// Unknown reasons become "stop". Case is ignored (Gemini uses upper case).
func mapFinishReason(r string) string {
	switch strings.ToLower(r) {
	case "end_turn", "stop", "stop_sequence":
		return "stop"
	case "max_tokens", "length":
		return "length"
	case "tool_use", "tool_calls", "function_call":
		return "tool_calls"
	case "content_filter", "safety", "refusal":
		return "content_filter"
	}
	return "stop"
}

// newID returns prefix + a random string.
func newID(prefix string) string { return prefix + rand.Text() }

// completionFromBody translates a non-streamed unified response.
func completionFromBody(body []byte, model string, now time.Time) (*ChatCompletion, error) {
	var r unifiedResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	if r.ResponsePayload == nil {
		return nil, errors.New("gateway: response has no response_payload")
	}
	return translateCompletion(&r, model, now), nil
}

// translateCompletion builds a chat.completion from a decoded response.
func translateCompletion(r *unifiedResponse, model string, now time.Time) *ChatCompletion {
	p := r.ResponsePayload
	c := &ChatCompletion{
		ID:      p.ID,
		Object:  "chat.completion",
		Created: int64(p.Created),
		Model:   model,
		Choices: make([]Choice, 0, len(p.Choices)),
		Usage:   r.usage(),
	}
	if c.ID == "" {
		c.ID = newID("chatcmpl-")
	}
	if c.Created <= 0 {
		c.Created = now.Unix()
	}
	for i, uc := range p.Choices {
		ch := Choice{Index: i, Message: ResponseMessage{Role: "assistant"}}
		if uc.Index != nil {
			ch.Index = int(*uc.Index)
		}
		var calls []unifiedToolCall
		if m := uc.body(); m != nil {
			if text, ok := contentText(m.Content); ok {
				ch.Message.Content = &text
			}
			calls = m.ToolCalls
		}
		for _, tc := range calls {
			if tc.Function.Name == "" {
				continue // no client can dispatch a call without a name
			}
			ch.Message.ToolCalls = append(ch.Message.ToolCalls, toolCall(tc, nil))
		}
		switch {
		case uc.FinishReason != nil && *uc.FinishReason != "":
			ch.FinishReason = mapFinishReason(*uc.FinishReason)
		case len(ch.Message.ToolCalls) > 0:
			ch.FinishReason = "tool_calls"
		default:
			ch.FinishReason = "stop"
		}
		c.Choices = append(c.Choices, ch)
	}
	if len(c.Choices) == 0 {
		empty := ""
		c.Choices = append(c.Choices, Choice{
			Message:      ResponseMessage{Role: "assistant", Content: &empty},
			FinishReason: "stop",
		})
	}
	return c
}

// toolCall converts one upstream tool call; index is set for stream deltas.
func toolCall(tc unifiedToolCall, index *int) ToolCall {
	out := ToolCall{
		Index:    index,
		ID:       tc.ID,
		Type:     tc.Type,
		Function: FunctionCall{Name: tc.Function.Name, Arguments: arguments(tc.Function.Arguments)},
	}
	if out.ID == "" {
		out.ID = newID("call_")
	}
	if out.Type == "" {
		out.Type = "function"
	}
	return out
}

// Chunks renders a completion as the OpenAI stream a client would have
// received: per choice a role chunk, a content chunk (when there is text),
// one chunk per tool call (index, id, type, name, full arguments) and a
// finish chunk. Usage is not included: append UsageChunk when the client
// asked for stream_options.include_usage.
func Chunks(c *ChatCompletion) []ChatCompletionChunk {
	var out []ChatCompletionChunk
	chunk := func(index int, d Delta, finish *string) {
		out = append(out, ChatCompletionChunk{
			ID:      c.ID,
			Object:  "chat.completion.chunk",
			Created: c.Created,
			Model:   c.Model,
			Choices: []ChunkChoice{{Index: index, Delta: d, FinishReason: finish}},
		})
	}
	for _, ch := range c.Choices {
		empty := ""
		chunk(ch.Index, Delta{Role: "assistant", Content: &empty}, nil)
		if ch.Message.Content != nil && *ch.Message.Content != "" {
			text := *ch.Message.Content
			chunk(ch.Index, Delta{Content: &text}, nil)
		}
		for i, tc := range ch.Message.ToolCalls {
			idx := i
			tc.Index = &idx
			chunk(ch.Index, Delta{ToolCalls: []ToolCall{tc}}, nil)
		}
		reason := ch.FinishReason
		if reason == "" {
			reason = "stop"
		}
		chunk(ch.Index, Delta{}, &reason)
	}
	return out
}

// UsageChunk is the last chunk of a stream whose client asked for
// stream_options.include_usage: no choices, the total usage.
func UsageChunk(id string, created int64, model string, u Usage) ChatCompletionChunk {
	return ChatCompletionChunk{
		ID:      id,
		Object:  "chat.completion.chunk",
		Created: created,
		Model:   model,
		Choices: []ChunkChoice{},
		Usage:   &u,
	}
}

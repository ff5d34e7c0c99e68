package gateway

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
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

	// noPayload marks a stream event that came without response_payload
	// (parseEventInto gives it an empty one when it carries usage).
	noPayload bool
}

type responsePayload struct {
	ID      string          `json:"id"`
	Created flexInt         `json:"created"`
	Choices []unifiedChoice `json:"choices"`
	Usage   *unifiedUsage   `json:"usage"` // not seen upstream; tolerated
}

type unifiedChoice struct {
	Index        optionalInt     `json:"index"`
	Message      *unifiedMessage `json:"message"`
	Delta        *unifiedMessage `json:"delta"`
	FinishReason *string         `json:"finish_reason"`
}

type unifiedMessage struct {
	Role      string            `json:"role"`
	Content   unifiedContent    `json:"content"`
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

// responseAttributes is the part of platform_attributes the proxy reads.
// Its model is not read: chunks name the model the client asked for.
type responseAttributes struct {
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
		inner, ok := stringBytes(b)
		if !ok {
			var s string
			if json.Unmarshal(b, &s) != nil {
				return nil
			}
			inner = []byte(s)
		}
		b = bytes.TrimSpace(inner)
	}
	if n, ok := parseDecimal(b); ok {
		*f = flexInt(n)
		return nil
	}
	// Rare shapes (a fraction, an exponent, a huge number): strconv.
	if n, err := strconv.ParseInt(string(b), 10, 64); err == nil {
		*f = flexInt(n)
		return nil
	}
	if x, err := strconv.ParseFloat(string(b), 64); err == nil && x == x && x < 1<<62 && x > -(1<<62) {
		*f = flexInt(x)
	}
	return nil
}

// parseDecimal parses an optional sign and 1 to 18 decimal digits, the
// shape of nearly every count, without allocating. ok is false for
// anything else (which strconv then tries).
func parseDecimal(b []byte) (n int64, ok bool) {
	neg := false
	if len(b) > 0 && (b[0] == '-' || b[0] == '+') {
		neg = b[0] == '-'
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// stringBytes returns the bytes between the quotes of a JSON string that
// needs no unescaping (no backslash, valid UTF-8): the common case, read
// without a copy. ok is false otherwise, and json.Unmarshal must decode it.
func stringBytes(b []byte) (inner []byte, ok bool) {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return nil, false
	}
	inner = b[1 : len(b)-1]
	if bytes.IndexByte(inner, '\\') >= 0 || !utf8.Valid(inner) {
		return nil, false
	}
	return inner, true
}

// unquote decodes a JSON string; ok is false for any other JSON value or
// a malformed string. It decodes as encoding/json does (escapes, UTF-16
// surrogate pairs, U+FFFD for invalid UTF-8 and lone surrogates), with
// one allocation: the string.
func unquote(b []byte) (s string, ok bool) {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return "", false
	}
	inner := b[1 : len(b)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), true
	}
	var out strings.Builder
	out.Grow(len(inner))
	for i := 0; i < len(inner); {
		c := inner[i]
		switch {
		case c == '\\':
			if i+1 >= len(inner) {
				return "", false
			}
			switch e := inner[i+1]; e {
			case '"', '\\', '/':
				out.WriteByte(e)
			case 'b':
				out.WriteByte('\b')
			case 'f':
				out.WriteByte('\f')
			case 'n':
				out.WriteByte('\n')
			case 'r':
				out.WriteByte('\r')
			case 't':
				out.WriteByte('\t')
			case 'u':
				r, ok := hex4(inner[i:])
				if !ok {
					return "", false
				}
				i += 6
				if utf16.IsSurrogate(r) {
					if r2, ok := hex4(inner[i:]); ok {
						if d := utf16.DecodeRune(r, r2); d != unicode.ReplacementChar {
							out.WriteRune(d)
							i += 6
							continue
						}
					}
					r = unicode.ReplacementChar
				}
				out.WriteRune(r)
				continue
			default:
				return "", false
			}
			i += 2
		case c == '"' || c < ' ':
			return "", false // not valid JSON
		case c < utf8.RuneSelf:
			out.WriteByte(c)
			i++
		default:
			r, size := utf8.DecodeRune(inner[i:])
			if r == utf8.RuneError && size == 1 {
				out.WriteRune(utf8.RuneError)
			} else {
				out.Write(inner[i : i+size])
			}
			i += size
		}
	}
	return out.String(), true
}

// hex4 reads the rune of a \uXXXX escape at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range b[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r*16 + rune(c)
	}
	return r, true
}

// optionalInt is a flexInt that may be absent or null (set false).
type optionalInt struct {
	n   flexInt
	set bool
}

func (o *optionalInt) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		*o = optionalInt{}
		return nil
	}
	*o = optionalInt{set: true}
	return o.n.UnmarshalJSON(b)
}

// body returns the choice's message, falling back to its delta.
func (c *unifiedChoice) body() *unifiedMessage {
	if c.Message != nil {
		return c.Message
	}
	return c.Delta
}

// unifiedContent is a message's content, decoded in the same pass as the
// event: its text and whether there is any (see contentText), the type of
// its first part that is not text (for the protocol log), and whether it
// carries anything at all (what commits a stream). A content the proxy
// cannot read never fails the event: it has no text.
type unifiedContent struct {
	text  string
	ok    bool
	other string
	// some: the content holds more than nothing: non-empty text, a part of
	// another type than text, or a value the proxy cannot read. Absent,
	// null, "", [] and lists of empty text parts hold nothing.
	some bool
}

func (c *unifiedContent) UnmarshalJSON(b []byte) error {
	var unread bool
	c.text, c.ok, c.other, unread = contentParts(b)
	c.some = c.text != "" || c.other != "" || unread
	return nil
}

// contentPart is one element of a list content: only text parts count.
type contentPart struct {
	Type partType       `json:"type"`
	Text optionalString `json:"text"`
}

// partType records whether a part's type is "text" or absent (the parts
// that carry text) without copying the type; any other type is kept in
// name (for the protocol log).
type partType struct {
	other bool
	name  string
}

func (t *partType) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil // as for a string: null leaves it as it was
	}
	inner, ok := stringBytes(b)
	if !ok {
		s, ok := unquote(b)
		if !ok {
			return errNotString
		}
		inner = []byte(s)
	}
	t.other = len(inner) != 0 && string(inner) != "text"
	if t.other {
		t.name = string(inner)
	}
	return nil
}

// optionalString is a string that may be absent or null.
type optionalString struct {
	s   string
	set bool
}

func (o *optionalString) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*o = optionalString{}
		return nil
	}
	s, ok := unquote(b)
	if !ok {
		return errNotString
	}
	*o = optionalString{s: s, set: true}
	return nil
}

// errNotString refuses a non-string where a string is expected (the list
// of parts is then unreadable, as a type error would make it).
var errNotString = errors.New("gateway: not a JSON string")

// contentText joins the text of a content value: a list of parts, a
// string, or null. ok is false when there is no text at all (null, [],
// only non-text parts) or when a part is malformed (a non-object, a type
// or text that is not a string). raw is valid JSON (the decoder checked
// it): lists are read in one pass by textParts, and only the shapes it
// leaves alone are decoded by encoding/json.
func contentText(raw []byte) (text string, ok bool) {
	text, ok, _, _ = contentParts(raw)
	return text, ok
}

// contentParts is contentText that also returns the type of the first part
// whose type is neither "text" nor absent ("" when there is none), and
// unread: raw is a value it cannot read as content (an object, a number,
// a list with a part that is not an object, ...).
func contentParts(raw []byte) (text string, ok bool, other string, unread bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", false, "", false
	}
	switch raw[0] {
	case '"':
		text, ok = unquote(raw)
		return text, ok, "", !ok
	case '[':
		if text, ok, other, read := textParts(raw); read {
			return text, ok, other, false
		}
		var parts []contentPart
		if json.Unmarshal(raw, &parts) != nil {
			return "", false, "", true
		}
		var b strings.Builder
		for _, p := range parts {
			if p.Type.other && other == "" {
				other = p.Type.name
			}
			if p.Text.set && !p.Type.other {
				b.WriteString(p.Text.s)
				ok = true
			}
		}
		return b.String(), ok, other, false
	}
	return "", false, "", true
}

// textParts joins the text parts of raw, a valid JSON list of content
// parts, in one pass and without decoding anything else; other is the
// type of the first part that is not a text part. read is false
// when raw holds something it leaves to encoding/json: a part that is not
// an object, a key with escapes, non-ASCII bytes or other letter case
// than "type" and "text" (encoding/json matches keys case-insensitively),
// a type or text that is not a string or null.
func textParts(raw []byte) (text string, ok bool, other string, read bool) {
	var (
		first []byte   // the literal of the first text, quotes included
		more  [][]byte // the literals of the others, if any
	)
	i := skipSpace(raw, 1) // raw[0] == '['
	if i < len(raw) && raw[i] == ']' {
		return "", false, other, true
	}
	for i < len(raw) {
		if raw[i] != '{' {
			return "", false, "", false
		}
		var (
			typ    partType
			lit    []byte
			hasLit bool
		)
		i = skipSpace(raw, i+1)
		for i < len(raw) && raw[i] != '}' {
			if raw[i] != '"' {
				return "", false, "", false
			}
			end := skipString(raw, i)
			key := raw[i+1 : end-1]
			i = skipSpace(raw, end)
			if i >= len(raw) || raw[i] != ':' {
				return "", false, "", false
			}
			i = skipSpace(raw, i+1)
			vend := skipValue(raw, i)
			if vend <= i {
				return "", false, "", false
			}
			val := raw[i:vend]
			switch {
			case string(key) == "type":
				if typ.UnmarshalJSON(val) != nil {
					return "", false, "", false
				}
			case string(key) == "text":
				switch {
				case string(val) == "null":
					lit, hasLit = nil, false
				case val[0] == '"':
					lit, hasLit = val, true
				default:
					return "", false, "", false
				}
			case !plainKey(key), bytes.EqualFold(key, []byte("type")), bytes.EqualFold(key, []byte("text")):
				return "", false, "", false
			}
			i = skipSpace(raw, vend)
			if i < len(raw) && raw[i] == ',' {
				i = skipSpace(raw, i+1)
			}
		}
		if i >= len(raw) {
			return "", false, "", false
		}
		if typ.other && other == "" {
			other = typ.name
		}
		if hasLit && !typ.other {
			if first == nil {
				first = lit
			} else {
				more = append(more, lit)
			}
		}
		i = skipSpace(raw, i+1) // after '}'
		if i < len(raw) && raw[i] == ',' {
			i = skipSpace(raw, i+1)
			continue
		}
		if i < len(raw) && raw[i] == ']' {
			break
		}
		return "", false, "", false
	}
	if first == nil {
		return "", false, other, true
	}
	s, valid := unquote(first)
	if !valid {
		return "", false, "", false
	}
	if len(more) == 0 {
		return s, true, other, true
	}
	var b strings.Builder
	b.WriteString(s)
	for _, lit := range more {
		t, valid := unquote(lit)
		if !valid {
			return "", false, "", false
		}
		b.WriteString(t)
	}
	return b.String(), true, other, true
}

// plainKey reports a key of printable ASCII without escapes: one that
// encoding/json matches to a field exactly as bytes.EqualFold does.
func plainKey(key []byte) bool {
	for _, c := range key {
		if c < ' ' || c >= utf8.RuneSelf || c == '\\' {
			return false
		}
	}
	return true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] (a
// quote), or len(b) when it does not end.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// skipValue returns the index after the valid JSON value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	default: // a number, true, false or null
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
			i++
		}
		return i
	}
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
// Unknown reasons become "stop" (known is then false). Case is ignored
// (Gemini uses upper case). The caller turns "stop" into "tool_calls" when
// the choice calls tools (see finishWithTools).
func mapFinishReason(r string) (reason string, known bool) {
	switch strings.ToLower(r) {
	case "end_turn", "stop", "stop_sequence":
		return "stop", true
	case "max_tokens", "length", "model_context_window_exceeded":
		return "length", true
	case "tool_use", "tool_calls", "function_call":
		return "tool_calls", true
	case "content_filter", "safety", "refusal", "recitation", "blocklist", "prohibited_content", "spii":
		return "content_filter", true
	}
	return "stop", false
}

// finishWithTools is the finish reason of a choice that calls tools: an
// upstream "stop" (Gemini's STOP comes with its tool calls) becomes
// "tool_calls", which agent loops check; others are kept.
func finishWithTools(reason string, hasTools bool) string {
	if hasTools && reason == "stop" {
		return "tool_calls"
	}
	return reason
}

// newID returns prefix + a random string.
func newID(prefix string) string { return prefix + rand.Text() }

// decodeResponse decodes a non-streamed unified response, which must have
// a response_payload.
func decodeResponse(body []byte) (*unifiedResponse, error) {
	var r unifiedResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	if r.ResponsePayload == nil {
		return nil, errors.New("gateway: response has no response_payload")
	}
	return &r, nil
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
		if uc.Index.set {
			ch.Index = int(uc.Index.n)
		}
		var calls []unifiedToolCall
		if m := uc.body(); m != nil {
			if m.Content.ok {
				text := m.Content.text
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
		ch.FinishReason = "stop"
		if uc.FinishReason != nil && *uc.FinishReason != "" {
			ch.FinishReason, _ = mapFinishReason(*uc.FinishReason)
		}
		ch.FinishReason = finishWithTools(ch.FinishReason, len(ch.Message.ToolCalls) > 0)
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

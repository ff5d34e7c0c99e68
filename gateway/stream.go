package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// Stream is a streamed chat response translated to OpenAI chunks. It is not
// safe for concurrent use. The first chunk carries delta.role "assistant",
// text pieces follow, the last chunk carries the finish reason; all share
// one id, created and model.
//
// A stream ends cleanly with `data: [DONE]`, or at EOF after an event that
// carried a finish_reason. EOF before any finish_reason, a cut connection
// or a malformed event is a break: *Error{Kind: OutcomeStreamBroken}.
type Stream struct {
	// ctx is the request's context, kept only to tell a client cancel or a
	// deadline from an upstream break when a read fails.
	ctx   context.Context
	body  io.ReadCloser
	dec   *sseDecoder
	id    string
	model string

	created int64
	// pending holds the chunks of the last event; next is the first not
	// yet returned. Its array is reused from event to event.
	pending []ChatCompletionChunk
	next    int
	ev      unifiedResponse // decoding scratch of advance
	usage   *Usage
	finish  string // mapped finish reason of choice 0, "" until seen
	tools   map[string]int
	nTools  int
	done    bool  // the terminal chunk has been queued
	err     error // sticky failure
	closed  bool
}

// openStream reads the first event of resp and queues its chunks. It does
// not close resp.Body on failure.
func (c *Client) openStream(ctx context.Context, resp *http.Response, model string) (*Stream, error) {
	s := &Stream{ctx: ctx, body: resp.Body, dec: newSSEDecoder(resp.Body), model: model}
	for {
		data, err := s.dec.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, &Error{Status: resp.StatusCode, Kind: pool.OutcomeStreamBroken, Message: "the upstream stream ended before its first event"}
			}
			return nil, streamError(ctx, err, "the upstream stream broke before its first event")
		}
		if isDone(data) {
			return nil, &Error{Status: resp.StatusCode, Kind: pool.OutcomeStreamBroken, Message: "the upstream stream ended before its first event"}
		}
		ev, err := parseEvent(data)
		if err != nil {
			return nil, err
		}
		if ev == nil { // an event without payload (keep-alive style): skip
			continue
		}
		s.id = ev.ResponsePayload.ID
		if s.id == "" {
			s.id = newID("chatcmpl-")
		}
		s.created = int64(ev.ResponsePayload.Created)
		if s.created <= 0 {
			s.created = c.now().Unix()
		}
		empty := ""
		s.push(0, Delta{Role: "assistant", Content: &empty}, nil)
		s.handle(ev)
		return s, nil
	}
}

// streamOf serves an already complete response as a stream.
func streamOf(cc *ChatCompletion) *Stream {
	return &Stream{pending: Chunks(cc), usage: cc.Usage, done: true, id: cc.ID, created: cc.Created, model: cc.Model}
}

// isDone reports the `[DONE]` sentinel.
func isDone(data []byte) bool { return string(bytes.TrimSpace(data)) == "[DONE]" }

// parseEvent decodes one event. It returns nil, nil for an event with
// neither payload nor error, and an *Error for a malformed or error event.
func parseEvent(data []byte) (*unifiedResponse, error) {
	return parseEventInto(data, new(unifiedResponse))
}

// parseEventInto is parseEvent decoding into ev, which it zeroes first and
// returns (or nil); a stream reuses one.
func parseEventInto(data []byte, ev *unifiedResponse) (*unifiedResponse, error) {
	*ev = unifiedResponse{}
	if err := json.Unmarshal(data, ev); err != nil {
		return nil, &Error{Status: http.StatusOK, Kind: pool.OutcomeStreamBroken, Message: "the upstream sent a malformed event", Err: err}
	}
	if ev.ResponsePayload == nil {
		if len(ev.Error) > 0 && string(ev.Error) != "null" {
			return nil, &Error{Status: http.StatusOK, Kind: pool.OutcomeStreamBroken, Message: "the upstream reported an error in the stream"}
		}
		if ev.usage() == nil {
			return nil, nil
		}
		ev.ResponsePayload = &responsePayload{}
	}
	return ev, nil
}

// ID, Created and Model are shared by every chunk of the stream.
func (s *Stream) ID() string     { return s.id }
func (s *Stream) Created() int64 { return s.created }
func (s *Stream) Model() string  { return s.model }

// Next returns the next chunk, io.EOF at the clean end, or an *Error: a
// break is OutcomeStreamBroken, a canceled ctx OutcomeCanceled, an expired
// one OutcomeTimeout. Chunks never carry usage: see Usage and UsageChunk.
// The chunk is valid until the next call of Next, which may reuse it.
func (s *Stream) Next() (*ChatCompletionChunk, error) {
	for s.next == len(s.pending) {
		if s.err != nil {
			return nil, s.err
		}
		if s.done {
			return nil, io.EOF
		}
		clear(s.pending) // drop what the returned chunks pointed to
		s.pending, s.next = s.pending[:0], 0
		s.advance()
	}
	c := &s.pending[s.next]
	s.next++
	return c, nil
}

// advance reads one event and queues its chunks, or sets done / err.
func (s *Stream) advance() {
	if s.closed {
		s.err = &Error{Status: http.StatusOK, Kind: pool.OutcomeStreamBroken, Message: "the stream is closed"}
		return
	}
	data, err := s.dec.Next()
	switch {
	case errors.Is(err, io.EOF):
		if s.finish == "" {
			s.err = streamError(s.ctx, io.ErrUnexpectedEOF, "the upstream stream ended before its final event")
			return
		}
		s.end()
		return
	case err != nil:
		s.err = streamError(s.ctx, err, "the upstream stream broke")
		return
	case isDone(data):
		s.end()
		return
	}
	ev, err := parseEventInto(data, &s.ev)
	if err != nil {
		s.err = err
		return
	}
	if ev != nil {
		s.handle(ev)
	}
}

// end queues the finish chunk.
func (s *Stream) end() {
	reason := s.finish
	if reason == "" {
		reason = "stop"
		if s.nTools > 0 {
			reason = "tool_calls"
		}
	}
	s.push(0, Delta{}, &reason)
	s.done = true
}

// handle queues the chunks of one event and remembers its usage.
func (s *Stream) handle(ev *unifiedResponse) {
	if u := ev.usage(); u != nil {
		s.usage = u
	}
	for i, ch := range ev.ResponsePayload.Choices {
		index := i
		if ch.Index.set {
			index = int(ch.Index.n)
		}
		if m := ch.body(); m != nil {
			if m.Content.ok && m.Content.text != "" {
				text := m.Content.text
				s.push(index, Delta{Content: &text}, nil)
			}
			for _, tc := range m.ToolCalls {
				s.push(index, Delta{ToolCalls: []ToolCall{s.toolDelta(tc)}}, nil)
			}
		}
		if index == 0 && ch.FinishReason != nil && *ch.FinishReason != "" {
			s.finish = mapFinishReason(*ch.FinishReason)
		}
	}
}

// toolDelta converts a streamed tool call (a format nobody has seen: the
// proxy avoids it by calling upstream without streaming when tools are
// present). A call is identified by its id, else its index.
func (s *Stream) toolDelta(tc unifiedToolCall) ToolCall {
	if s.tools == nil {
		s.tools = make(map[string]int)
	}
	key := tc.ID
	if key == "" && tc.Index != nil {
		key = "#" + strconv.FormatInt(int64(*tc.Index), 10)
	}
	idx, seen := s.tools[key]
	if !seen || key == "" {
		idx = s.nTools
		s.nTools++
		if key != "" {
			s.tools[key] = idx
		}
	}
	out := ToolCall{Index: &idx, Function: FunctionCall{Name: tc.Function.Name}}
	if !seen {
		out.ID, out.Type = tc.ID, tc.Type
		if out.ID == "" {
			out.ID = newID("call_")
		}
		if out.Type == "" {
			out.Type = "function"
		}
	}
	raw := bytes.TrimSpace(tc.Function.Arguments)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		if !seen {
			out.Function.Arguments = ""
		}
	case raw[0] == '"':
		var str string
		_ = json.Unmarshal(raw, &str)
		out.Function.Arguments = str
	default:
		out.Function.Arguments = arguments(raw)
	}
	return out
}

func (s *Stream) push(index int, d Delta, finish *string) {
	s.pending = append(s.pending, ChatCompletionChunk{
		ID:      s.id,
		Object:  "chat.completion.chunk",
		Created: s.created,
		Model:   s.model,
		Choices: []ChunkChoice{{Index: index, Delta: d, FinishReason: finish}},
	})
}

// Usage returns the last usage any event carried, or nil.
func (s *Stream) Usage() *Usage {
	if s.usage == nil {
		return nil
	}
	u := *s.usage
	return &u
}

// Close releases the upstream connection. It is safe to call more than once.
func (s *Stream) Close() error {
	if s.closed || s.body == nil {
		s.closed = true
		return nil
	}
	s.closed = true
	return s.body.Close()
}

// collect drains the stream into one completion (for an upstream that
// streams a non-streamed request).
func (s *Stream) collect() (*ChatCompletion, error) {
	defer s.Close()
	var text strings.Builder
	hasText := false
	var calls []ToolCall
	finish := ""
	for {
		c, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		ch := c.Choices[0]
		if ch.Delta.Content != nil && *ch.Delta.Content != "" {
			text.WriteString(*ch.Delta.Content)
			hasText = true
		}
		for _, tc := range ch.Delta.ToolCalls {
			i := *tc.Index
			for len(calls) <= i {
				calls = append(calls, ToolCall{Type: "function"})
			}
			if tc.ID != "" {
				calls[i].ID = tc.ID
			}
			if tc.Function.Name != "" {
				calls[i].Function.Name = tc.Function.Name
			}
			calls[i].Function.Arguments += tc.Function.Arguments
		}
		if ch.FinishReason != nil {
			finish = *ch.FinishReason
		}
	}
	msg := ResponseMessage{Role: "assistant"}
	for _, tc := range calls {
		if tc.Function.Name == "" {
			continue // as in translateCompletion: unusable without a name
		}
		if tc.Function.Arguments == "" {
			tc.Function.Arguments = "{}"
		}
		tc.Index = nil
		msg.ToolCalls = append(msg.ToolCalls, tc)
	}
	if hasText {
		t := text.String()
		msg.Content = &t
	}
	return &ChatCompletion{
		ID:      s.id,
		Object:  "chat.completion",
		Created: s.created,
		Model:   s.model,
		Choices: []Choice{{Message: msg, FinishReason: finish}},
		Usage:   s.Usage(),
	}, nil
}

package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// Stream is a streamed chat response translated to OpenAI chunks. It is not
// safe for concurrent use. The first chunk carries delta.role "assistant",
// text pieces follow, the last chunk carries the finish reason; all share
// one id, created and model.
//
// A stream ends cleanly with `data: [DONE]`, or at EOF (or a cut
// connection) after an event that carried a finish_reason. EOF or a cut
// before any finish_reason, or a malformed event, is a break:
// *Error{Kind: OutcomeStreamBroken}.
type Stream struct {
	// ctx is the request's context, kept only to tell a client cancel or a
	// deadline from an upstream break when a read fails.
	ctx   context.Context
	body  io.ReadCloser
	dec   *sseDecoder
	obs   *protocolLog // nil: no protocol log
	id    string
	model string

	created int64
	// pending holds the chunks not yet returned; next is the first of
	// them. Its array is reused from event to event.
	pending []ChatCompletionChunk
	next    int
	ev      unifiedResponse // decoding scratch of advance
	usage   usageCounts     // merged over the events
	finish  string          // mapped finish reason of choice 0, "" until seen
	calls   []streamCall    // the tool calls seen, by their OpenAI index
	byIndex map[int64]int   // upstream tool-call index → OpenAI index
	byID    map[string]int  // upstream tool-call id → OpenAI index
	done    bool            // the terminal chunk has been queued
	err     error           // sticky failure
	closed  bool
	// whole is a stream made of a complete answer (streamOf): its usage
	// is final.
	whole *Usage
}

// streamCall is what a stream remembers of a tool call.
type streamCall struct {
	id   string // upstream id, "" when it never sent one
	name string // the name sent so far, "" until one came
}

// openStream reads resp until the stream can be committed: until an event
// carries more than the role and usage, that is content (non-empty text,
// or a part of any other type: a "thinking" part commits, an empty text
// does not), a tool call or a finish reason. Events before it (the role,
// usage) are queued and delivered after it. A clean end there ([DONE]
// after at least one event) is an empty answer. It does not close
// resp.Body on failure.
func (c *Client) openStream(ctx context.Context, resp *http.Response, model string) (*Stream, error) {
	s := &Stream{ctx: ctx, body: resp.Body, dec: newSSEDecoder(resp.Body), obs: c.obs, model: model}
	started := false
	notYet := "before its first event"
	for {
		data, err := s.dec.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, &Error{Status: resp.StatusCode, Kind: pool.OutcomeStreamBroken, Message: "the upstream stream ended " + notYet}
			}
			return nil, streamError(ctx, err, "the upstream stream broke "+notYet)
		}
		if isDone(data) {
			if !started {
				return nil, &Error{Status: resp.StatusCode, Kind: pool.OutcomeStreamBroken, Message: "the upstream stream ended " + notYet}
			}
			s.end()
			return s, nil
		}
		ev, err := parseEventInto(data, &s.ev)
		if err != nil {
			return nil, err
		}
		if ev == nil { // an event without payload (keep-alive style): skip
			s.obs.noPayload(ctx, data)
			continue
		}
		if !started {
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
			started, notYet = true, "before any content"
		}
		if s.handle(ev) {
			return s, nil
		}
	}
}

// streamOf serves an already complete response as a stream.
func streamOf(cc *ChatCompletion) *Stream {
	return &Stream{pending: Chunks(cc), whole: cc.Usage, done: true, id: cc.ID, created: cc.Created, model: cc.Model}
}

// isDone reports the `[DONE]` sentinel.
func isDone(data []byte) bool { return string(bytes.TrimSpace(data)) == "[DONE]" }

// parseEvent decodes one event. It returns nil, nil for an event with
// neither payload nor error, and an *Error for a malformed or error event.
func parseEvent(data []byte) (*unifiedResponse, error) {
	return parseEventInto(data, new(unifiedResponse))
}

// parseEventInto is parseEvent decoding into ev, which it zeroes first and
// returns (or nil); a stream reuses one. An event without payload that
// carries usage gets an empty payload and noPayload set.
func parseEventInto(data []byte, ev *unifiedResponse) (*unifiedResponse, error) {
	*ev = unifiedResponse{}
	if err := json.Unmarshal(data, ev); err != nil {
		return nil, &Error{Status: http.StatusOK, Kind: pool.OutcomeStreamBroken, Message: "the upstream sent a malformed event", Err: err}
	}
	if ev.ResponsePayload == nil {
		if len(ev.Error) > 0 && string(ev.Error) != "null" {
			return nil, &Error{Status: http.StatusOK, Kind: pool.OutcomeStreamBroken, Message: "the upstream reported an error in the stream"}
		}
		if !ev.usageCounts().any() {
			return nil, nil
		}
		ev.ResponsePayload = &responsePayload{}
		ev.noPayload = true
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
		// After the finish reason the answer is complete: a cut then (the
		// upstream closing without [DONE]) ends it as EOF would. A cancel
		// or deadline of the request is still reported as such.
		if s.finish == "" || s.ctx.Err() != nil {
			s.err = streamError(s.ctx, err, "the upstream stream broke")
			return
		}
		s.end()
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
	if ev == nil {
		s.obs.noPayload(s.ctx, data)
		return
	}
	s.handle(ev)
}

// end queues the finish chunk. A choice that called tools finishes with
// "tool_calls" unless the upstream gave another reason than "stop".
func (s *Stream) end() {
	reason := s.finish
	if reason == "" {
		reason = "stop"
	}
	reason = finishWithTools(reason, len(s.calls) > 0)
	s.push(0, Delta{}, &reason)
	s.done = true
}

// handle queues the chunks of one event, merges its usage and notes its
// protocol variants. It reports whether the event carried more than the
// role and usage (what commits a stream): content (non-empty text or a
// part of any other type, see unifiedContent.some), a tool call or a
// finish reason.
func (s *Stream) handle(ev *unifiedResponse) (substantive bool) {
	s.obs.response(s.ctx, ev, modeStream)
	if c := ev.usageCounts(); c.any() {
		s.usage.merge(c)
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
			if m.Content.some {
				// A part without text (a "thinking" part, say) commits too:
				// the answer has begun, and the time to its first text is
				// the model's, not the time to find a credential.
				substantive = true
			}
			for _, tc := range m.ToolCalls {
				s.push(index, Delta{ToolCalls: []ToolCall{s.toolDelta(tc)}}, nil)
				substantive = true
			}
		}
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			substantive = true
			if index == 0 {
				s.finish, _ = mapFinishReason(*ch.FinishReason)
			}
		}
	}
	return substantive
}

// toolDelta converts a streamed tool call (a format nobody has seen: the
// proxy avoids it by calling upstream without streaming when tools are
// present). OpenAI's style sends a call's index, id and name once and then
// only {"index":i,"function":{"arguments":"<piece>"}}: a call is therefore
// found by its upstream index first, then by its id, and both are
// remembered at first sight. An index whose call had another id starts a
// new call. The id, type and name go out only with the call's first delta
// (the name later only if none had come), so that clients that concatenate
// deltas rebuild the call.
func (s *Stream) toolDelta(tc unifiedToolCall) ToolCall {
	idx, seen := -1, false
	if tc.Index != nil {
		if i, ok := s.byIndex[int64(*tc.Index)]; ok && (tc.ID == "" || s.calls[i].id == "" || s.calls[i].id == tc.ID) {
			idx, seen = i, true
		}
	}
	if !seen && tc.ID != "" {
		idx, seen = s.byID[tc.ID]
		if !seen {
			idx = -1
		}
	}
	if !seen {
		idx = len(s.calls)
		s.calls = append(s.calls, streamCall{})
	}
	call := &s.calls[idx]
	if tc.Index != nil {
		if s.byIndex == nil {
			s.byIndex = make(map[int64]int)
		}
		s.byIndex[int64(*tc.Index)] = idx
	}
	if tc.ID != "" && call.id == "" {
		call.id = tc.ID
		if s.byID == nil {
			s.byID = make(map[string]int)
		}
		s.byID[tc.ID] = idx
	}
	out := ToolCall{Index: &idx}
	if tc.Function.Name != "" && call.name == "" {
		out.Function.Name = tc.Function.Name
		call.name = tc.Function.Name
	}
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

// Usage returns the usage the events carried, merged count by count (the
// latest non-zero value of each wins; a missing or stale total is input +
// output), or nil when none carried any.
func (s *Stream) Usage() *Usage {
	if s.whole != nil {
		u := *s.whole
		return &u
	}
	return s.usage.mergedUsage()
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

package fake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// respond answers an authenticated, valid chat request according to b and
// returns the status sent (0 when the connection was cut before one).
func (g *Gateway) respond(w http.ResponseWriter, r *http.Request, a *account, b Behavior, model string, stream bool, inputLen int) int {
	switch b.Fault {
	case OK, CutMidStream, CutAfterFinish:
	case Hang:
		select {
		case <-r.Context().Done():
			return 0
		case <-g.closed:
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"message": "fake gateway closed"})
			return http.StatusServiceUnavailable
		}
	case Drop:
		panic(http.ErrAbortHandler) // closes the connection without an answer
	case CutBeforeFirstEvent:
		if stream {
			w.Header().Set("Content-Type", "text/event-stream")
		} else {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(http.StatusOK)
		flush(w)
		panic(http.ErrAbortHandler)
	case Malformed:
		if stream {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("data: {\"response_payload\": {not json\n\n"))
		} else {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("<html><body>Gateway says hello</body></html>"))
		}
		return http.StatusOK
	default:
		return g.fail(w, r, b)
	}

	g.mu.Lock()
	g.seq++
	id := "msg_fake_" + strconv.Itoa(g.seq)
	g.mu.Unlock()
	created := g.opts.Now().Unix()
	text := b.Text
	if text == "" {
		text = g.opts.Text
	}
	usage := map[string]any{
		"input_tokens": inputLen/4 + 1, "output_tokens": len(strings.Fields(text)) + len(b.ToolCalls),
	}
	usage["total_tokens"] = usage["input_tokens"].(int) + usage["output_tokens"].(int)
	finish := b.FinishReason
	if finish == "" {
		finish = "end_turn"
		if len(b.ToolCalls) > 0 {
			finish = "tool_use"
		}
	}
	ev := eventBuilder{b: b, id: id, created: created, model: model, usage: usage, finish: finish, stream: stream}

	if !stream {
		w.Header().Set("Content-Type", "application/json")
		content := ev.content(text)
		if parts, ok := content.([]any); ok && b.Thinking != "" {
			content = append([]any{ev.thinkingPart()}, parts...)
		}
		body := ev.build(content, true, true)
		if b.Fault == CutMidStream {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(body[:len(body)/2])
			flush(w)
			panic(http.ErrAbortHandler)
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
		return http.StatusOK
	}

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	// The role-only first event, then the thinking event if any.
	events := [][]byte{ev.build(ev.content(""), false, false)}
	thought := -1 // the index of the thinking event
	if b.Thinking != "" {
		thought = len(events)
		events = append(events, ev.build([]any{ev.thinkingPart()}, false, false))
	}
	pieces := b.Pieces
	if pieces == nil {
		pieces = splitPieces(text)
	}
	if b.Content != ContentNull && b.Content != ContentEmpty {
		for _, p := range pieces {
			events = append(events, ev.build(ev.content(p), false, false))
		}
	}
	if b.ToolCallDeltas {
		events = append(events, ev.toolCallDeltas()...)
	}
	events = append(events, ev.build(ev.content(""), true, true))
	cutAfter := -1
	if b.Fault == CutMidStream {
		cutAfter = b.CutAfter
		if cutAfter <= 0 {
			cutAfter = 2
		}
	}
	for i, e := range events {
		if i == cutAfter {
			panic(http.ErrAbortHandler)
		}
		delay := b.EventDelay
		if thought >= 0 && i == thought+1 {
			delay += b.ThinkingTime
		}
		if i > 0 && !g.sleep(r, delay) {
			return http.StatusOK
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", e); err != nil {
			return http.StatusOK
		}
		flush(w)
	}
	if cutAfter >= len(events) || b.Fault == CutAfterFinish {
		panic(http.ErrAbortHandler)
	}
	if !b.NoDone {
		_, _ = w.Write([]byte("data: [DONE]\n\n"))
	}
	return http.StatusOK
}

// fail writes an error answer for b.Fault and returns its status.
func (g *Gateway) fail(w http.ResponseWriter, r *http.Request, b Behavior) int {
	h := w.Header()
	if b.RetryAfterHeader != "" {
		h.Set("Retry-After", b.RetryAfterHeader)
	}
	var status int
	var body []byte
	asJSON := func(v any) []byte {
		h.Set("Content-Type", "application/json")
		out, _ := json.Marshal(v)
		return out
	}
	msg := b.Message
	switch b.Fault {
	case RateLimitMinute, RateLimitDaily:
		status = http.StatusTooManyRequests
		daily := b.Fault == RateLimitDaily
		v := map[string]any{"status": "MINUTE_LIMIT_EXCEEDED", "message": "Rate limit exceeded, please retry later", "balance": balance(0, daily)}
		if daily {
			v["status"], v["message"] = "DAILY_LIMIT_EXCEEDED", "Daily token limit exceeded"
		}
		if ra := retryAfter(b); ra >= 0 {
			v["retryAfterSeconds"] = ra
		}
		body = asJSON(v)
	case Unauthorized:
		status, body = http.StatusUnauthorized, asJSON(map[string]any{"code": 401, "message": "Unauthorized"})
	case Forbidden:
		status, body = http.StatusForbidden, asJSON(map[string]any{"error": "Forbidden: the request was refused"})
	case UserBlocked:
		status, body = http.StatusForbidden, asJSON(map[string]any{"status": "USER_BLOCKED", "message": "The user is blocked from using Rovo Dev"})
	case BadRequest:
		if msg == "" {
			msg = "Invalid request: messages are malformed"
		}
		status, body = http.StatusBadRequest, asJSON(map[string]any{"code": 400, "message": msg})
	case ContextOverflow:
		if msg == "" {
			msg = "Error code: 400 - {'message': 'Input is too long for requested model. Input tokens exceed context limit', 'statusCode': 413}"
		}
		status, body = http.StatusBadRequest, asJSON(map[string]any{"code": 400, "message": msg})
	case TooLarge:
		status, body = http.StatusRequestEntityTooLarge, asJSON(map[string]any{"message": "Request entity too large"})
	case InternalError:
		h.Set("Content-Type", "text/plain; charset=utf-8")
		status, body = http.StatusInternalServerError, []byte("Internal Server Error\n")
	case BadGateway:
		h.Set("Content-Type", "text/html")
		status, body = http.StatusBadGateway, []byte("<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>\n")
	case Unavailable:
		status, body = http.StatusServiceUnavailable, asJSON(map[string]any{"message": "Service Unavailable"})
	case Overloaded:
		status, body = 529, asJSON(map[string]any{"type": "error", "error": map[string]any{"type": "overloaded_error", "message": "Overloaded"}})
	case Status:
		status = b.Status
		if status < 100 || status > 999 {
			status = http.StatusTeapot
		}
		body = asJSON(map[string]any{"message": msg})
	default:
		status, body = http.StatusInternalServerError, asJSON(map[string]any{"message": "fake: unknown fault " + string(b.Fault)})
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
	return status
}

// eventBuilder builds response bodies and stream events.
type eventBuilder struct {
	b       Behavior
	id      string
	created int64
	model   string
	usage   map[string]any
	finish  string
	stream  bool // building stream events (ToolCallDeltas applies)
}

// toolCallDeltas renders the tool calls as OpenAI-style delta events.
func (e eventBuilder) toolCallDeltas() [][]byte {
	size := e.b.ArgumentPiece
	if size <= 0 {
		size = 8
	}
	var out [][]byte
	event := func(call map[string]any) []byte {
		msg := map[string]any{"role": "assistant", "content": e.content(""), "tool_calls": []any{call}}
		payload := map[string]any{"id": e.id, "created": e.created, "choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": nil}}}
		body, _ := json.Marshal(map[string]any{"response_payload": payload, "platform_attributes": map[string]any{"model": e.model}})
		return body
	}
	for i, tc := range e.b.ToolCalls {
		first := map[string]any{"index": i, "type": "function", "function": map[string]any{"name": tc.Name, "arguments": ""}}
		if tc.ID != "" {
			first["id"] = tc.ID
		}
		out = append(out, event(first))
		args := argumentText(tc.Arguments)
		for args != "" {
			n := min(size, len(args))
			for n < len(args) && !utf8.RuneStart(args[n]) {
				n++
			}
			out = append(out, event(map[string]any{"index": i, "function": map[string]any{"arguments": args[:n]}}))
			args = args[n:]
		}
	}
	return out
}

// argumentText is a tool call's arguments as the text OpenAI streams: a
// JSON string's content, an object's JSON, "" for null or none.
func argumentText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	return string(raw)
}

// thinkingPart is the behaviour's reasoning part.
func (e eventBuilder) thinkingPart() any {
	return map[string]any{"type": "thinking", "thinking": e.b.Thinking}
}

// content renders text in the behaviour's content form.
func (e eventBuilder) content(text string) any {
	switch e.b.Content {
	case ContentNull:
		return nil
	case ContentEmpty:
		return []any{}
	case ContentString:
		return text
	}
	if text == "" {
		return []any{}
	}
	return []any{map[string]any{"type": "text", "text": text}}
}

// build renders an envelope; last adds tool calls, finish reason and usage.
func (e eventBuilder) build(content any, last, withUsage bool) []byte {
	msg := map[string]any{"role": "assistant", "content": content}
	choice := map[string]any{"index": 0, "message": msg, "finish_reason": nil}
	if last {
		if len(e.b.ToolCalls) > 0 && !(e.b.ToolCallDeltas && e.stream) {
			var calls []any
			for _, tc := range e.b.ToolCalls {
				fn := map[string]any{"name": tc.Name}
				if tc.Arguments != nil {
					fn["arguments"] = tc.Arguments
				}
				c := map[string]any{"type": "function", "function": fn}
				if tc.ID != "" {
					c["id"] = tc.ID
				}
				calls = append(calls, c)
			}
			msg["tool_calls"] = calls
		}
		if e.b.OmitFinishReason {
			delete(choice, "finish_reason")
		} else {
			choice["finish_reason"] = e.finish
		}
	}
	payload := map[string]any{"id": e.id, "created": e.created, "choices": []any{choice}}
	if e.b.NoIDs {
		delete(payload, "id")
		delete(payload, "created")
		delete(choice, "index")
	}
	attrs := map[string]any{"model": e.model}
	if withUsage && !e.b.NoUsage {
		attrs["metrics"] = map[string]any{"usage": e.usage}
	}
	out, _ := json.Marshal(map[string]any{"response_payload": payload, "platform_attributes": attrs})
	return out
}

// splitPieces splits text after each space: "a b c" → "a ", "b ", "c".
func splitPieces(text string) []string {
	var out []string
	for text != "" {
		i := strings.IndexByte(text, ' ')
		if i < 0 {
			out = append(out, text)
			break
		}
		out = append(out, text[:i+1])
		text = text[i+1:]
	}
	return out
}

func flush(w http.ResponseWriter) {
	_ = http.NewResponseController(w).Flush()
}

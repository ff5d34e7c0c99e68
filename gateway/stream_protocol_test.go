package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/schematest"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// Stream events in the protocol's shape, for scripted upstreams.
func sseEv(s string) string { return "data: " + s + "\n\n" }

var roleEvent = sseEv(`{"response_payload":{"id":"u1","created":1700000000,"choices":[{"index":0,"message":{"role":"assistant","content":[]}}]}}`)

func textEvent(s string) string {
	return sseEv(`{"response_payload":{"choices":[{"index":0,"message":{"content":[{"type":"text","text":"` + s + `"}]}}]}}`)
}

func finishEvent(reason string) string {
	return sseEv(`{"response_payload":{"choices":[{"index":0,"message":{"content":[]},"finish_reason":"` + reason + `"}]}}`)
}

func usageEvent(usage string) string {
	return sseEv(`{"platform_attributes":{"metrics":{"usage":` + usage + `}}}`)
}

// contentEvent is an event whose message content is the JSON content.
func contentEvent(content string) string {
	return sseEv(`{"response_payload":{"choices":[{"index":0,"message":{"content":` + content + `}}]}}`)
}

// thinkingEvent is an event whose only content is a reasoning part.
var thinkingEvent = contentEvent(`[{"type":"thinking","thinking":"let me see"}]`)

func toolEvent(calls string) string {
	return sseEv(`{"response_payload":{"choices":[{"index":0,"message":{"tool_calls":` + calls + `}}]}}`)
}

// scriptedServer serves every request with h and returns a client for it.
func scriptedServer(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	c, err := NewClient(Config{BaseURL: hs.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// cutAfter serves body as an event stream, then cuts the connection
// (no [DONE], no clean end of the chunked body).
func cutAfter(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, body)
		_ = http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	}
}

// wantCall is an expected tool call; an empty id means a generated one.
type wantCall struct{ id, name, args string }

// accumulate rebuilds the tool calls of a stream as OpenAI's clients do:
// by index, concatenating the id, name and arguments of every delta.
func accumulate(t *testing.T, chunks []ChatCompletionChunk) []ToolCall {
	t.Helper()
	var calls []ToolCall
	for _, c := range chunks {
		for _, tc := range c.Choices[0].Delta.ToolCalls {
			if tc.Index == nil {
				t.Fatalf("tool-call delta without index: %+v", tc)
			}
			i := *tc.Index
			if i > len(calls) {
				t.Fatalf("tool-call index %d skips %d", i, len(calls))
			}
			if i == len(calls) {
				if tc.ID == "" || tc.Type != "function" {
					t.Errorf("first delta of call %d = %+v, want an id and type function", i, tc)
				}
				calls = append(calls, ToolCall{Type: tc.Type})
			} else if tc.Type != "" {
				t.Errorf("a follow-up delta of call %d repeats the type", i)
			}
			calls[i].ID += tc.ID
			calls[i].Function.Name += tc.Function.Name
			calls[i].Function.Arguments += tc.Function.Arguments
		}
	}
	return calls
}

func checkCalls(t *testing.T, got []ToolCall, want []wantCall) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d tool calls %+v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		g := got[i]
		idOK := g.ID == w.id || (w.id == "" && strings.HasPrefix(g.ID, "call_"))
		if !idOK || g.Function.Name != w.name || g.Function.Arguments != w.args {
			t.Errorf("call %d = id %q name %q arguments %q, want %q %q %q", i, g.ID, g.Function.Name, g.Function.Arguments, w.id, w.name, w.args)
		}
	}
}

func TestStreamToolCallVariants(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		want       []wantCall
		wantFinish string
		// wantCollected are the calls of Complete (nil: want), which drops
		// calls without a name and gives empty arguments "{}".
		wantCollected []wantCall
	}{
		{"openai style: id and name once, then pieces by index",
			roleEvent + toolEvent(`[{"index":0,"id":"t1","type":"function","function":{"name":"f","arguments":""}}]`) +
				toolEvent(`[{"index":0,"function":{"arguments":"{\"a\":"}}]`) + toolEvent(`[{"index":0,"function":{"arguments":"1}"}}]`) +
				finishEvent("tool_use"),
			[]wantCall{{"t1", "f", `{"a":1}`}}, "tool_calls", nil},
		{"openai style: two calls interleaved",
			roleEvent + toolEvent(`[{"index":0,"id":"t1","function":{"name":"f","arguments":""}}]`) +
				toolEvent(`[{"index":1,"id":"t2","function":{"name":"g","arguments":"{\"b\""}}]`) +
				toolEvent(`[{"index":0,"function":{"arguments":"{\"a\":1}"}}]`) + toolEvent(`[{"index":1,"function":{"arguments":":2}"}}]`) +
				finishEvent("tool_use"),
			[]wantCall{{"t1", "f", `{"a":1}`}, {"t2", "g", `{"b":2}`}}, "tool_calls", nil},
		{"openai style: two calls in one event, pieces in another",
			roleEvent + toolEvent(`[{"index":0,"id":"t1","function":{"name":"f","arguments":""}},{"index":1,"id":"t2","function":{"name":"g","arguments":""}}]`) +
				toolEvent(`[{"index":1,"function":{"arguments":"{}"}},{"index":0,"function":{"arguments":"[]"}}]`) + "data: [DONE]\n\n",
			[]wantCall{{"t1", "f", `[]`}, {"t2", "g", `{}`}}, "tool_calls", nil},
		{"index as a string",
			roleEvent + toolEvent(`[{"index":"0","id":"t1","function":{"name":"f","arguments":"{"}}]`) + toolEvent(`[{"index":"0","function":{"arguments":"}"}}]`) +
				finishEvent("tool_use"),
			[]wantCall{{"t1", "f", `{}`}}, "tool_calls", nil},
		{"id repeated on every piece",
			roleEvent + toolEvent(`[{"index":0,"id":"t1","function":{"name":"f","arguments":"{"}}]`) + toolEvent(`[{"index":0,"id":"t1","function":{"arguments":"}"}}]`) +
				finishEvent("tool_use"),
			[]wantCall{{"t1", "f", `{}`}}, "tool_calls", nil},
		{"id only, no index",
			roleEvent + toolEvent(`[{"id":"t1","function":{"name":"f","arguments":"{"}}]`) + toolEvent(`[{"id":"t1","function":{"arguments":"}"}}]`) +
				finishEvent("tool_use"),
			[]wantCall{{"t1", "f", `{}`}}, "tool_calls", nil},
		{"index at first, then only the id",
			roleEvent + toolEvent(`[{"index":0,"id":"t1","function":{"name":"f","arguments":"{"}}]`) + toolEvent(`[{"id":"t1","function":{"arguments":"}"}}]`) +
				finishEvent("tool_use"),
			[]wantCall{{"t1", "f", `{}`}}, "tool_calls", nil},
		{"name repeated on every piece",
			roleEvent + toolEvent(`[{"index":0,"id":"t1","function":{"name":"f","arguments":"{"}}]`) + toolEvent(`[{"index":0,"function":{"name":"f","arguments":"}"}}]`) +
				finishEvent("tool_use"),
			[]wantCall{{"t1", "f", `{}`}}, "tool_calls", nil},
		{"name after the first piece",
			roleEvent + toolEvent(`[{"index":0,"id":"t1","function":{"arguments":"{"}}]`) + toolEvent(`[{"index":0,"function":{"name":"f","arguments":"}"}}]`) +
				finishEvent("tool_use"),
			[]wantCall{{"t1", "f", `{}`}}, "tool_calls", nil},
		{"index reused with a new id is a new call",
			roleEvent + toolEvent(`[{"index":0,"id":"t1","function":{"name":"f","arguments":"{}"}}]`) + toolEvent(`[{"index":0,"id":"t2","function":{"name":"g","arguments":"[]"}}]`) +
				finishEvent("tool_use"),
			[]wantCall{{"t1", "f", `{}`}, {"t2", "g", `[]`}}, "tool_calls", nil},
		{"neither id nor index: each a call",
			roleEvent + toolEvent(`[{"function":{"name":"f","arguments":{"a":1}}}]`) + toolEvent(`[{"function":{"name":"g","arguments":null}}]`) +
				finishEvent("tool_use"),
			[]wantCall{{"", "f", `{"a":1}`}, {"", "g", ``}}, "tool_calls", []wantCall{{"", "f", `{"a":1}`}, {"", "g", `{}`}}},
		{"whole call with object arguments",
			roleEvent + toolEvent(`[{"id":"t1","type":"function","function":{"name":"f","arguments":{"city":"Paris"}}}]`) + finishEvent("tool_use"),
			[]wantCall{{"t1", "f", `{"city":"Paris"}`}}, "tool_calls", nil},
		{"gemini STOP with a tool call",
			roleEvent + toolEvent(`[{"index":0,"id":"t1","function":{"name":"f","arguments":"{}"}}]`) + finishEvent("STOP"),
			[]wantCall{{"t1", "f", `{}`}}, "tool_calls", nil},
		{"end_turn with a tool call",
			roleEvent + toolEvent(`[{"index":0,"id":"t1","function":{"name":"f","arguments":"{}"}}]`) + finishEvent("end_turn"),
			[]wantCall{{"t1", "f", `{}`}}, "tool_calls", nil},
		{"MAX_TOKENS with a tool call stays length",
			roleEvent + toolEvent(`[{"index":0,"id":"t1","function":{"name":"f","arguments":"{"}}]`) + finishEvent("MAX_TOKENS"),
			[]wantCall{{"t1", "f", `{`}}, "length", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/Stream", func(t *testing.T) {
			c := rawServer(t, "text/event-stream", tt.body)
			s, err := c.Stream(t.Context(), alice, mustModel(t, "gpt-5"), hello("gpt-5"))
			if err != nil {
				t.Fatal(err)
			}
			chunks, err := drain(t, s)
			if err != nil {
				t.Fatalf("stream ended with %v", err)
			}
			_, finish := checkChunks(t, chunks, "gpt-5")
			if finish != tt.wantFinish {
				t.Errorf("finish = %q, want %q", finish, tt.wantFinish)
			}
			checkCalls(t, accumulate(t, chunks), tt.want)
		})
		t.Run(tt.name+"/Complete", func(t *testing.T) {
			c := rawServer(t, "text/event-stream", tt.body)
			cc, err := c.Complete(t.Context(), alice, mustModel(t, "gpt-5"), hello("gpt-5"))
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := json.Marshal(cc)
			schematest.Validate(t, schematest.ChatCompletion, raw)
			want := tt.wantCollected
			if want == nil {
				want = tt.want
			}
			checkCalls(t, cc.Choices[0].Message.ToolCalls, want)
			if cc.Choices[0].FinishReason != tt.wantFinish {
				t.Errorf("finish = %q, want %q", cc.Choices[0].FinishReason, tt.wantFinish)
			}
		})
	}
}

// TestStreamToolCallDeltasFromFake streams OpenAI-style tool-call deltas
// from the fake gateway.
func TestStreamToolCallDeltasFromFake(t *testing.T) {
	srv, c := startFake(t)
	calls := []fake.ToolCall{
		{ID: "toolu_1", Name: "weather", Arguments: json.RawMessage(`{"city":"Paris","days":3}`)},
		{ID: "toolu_2", Name: "time", Arguments: json.RawMessage(`"{\"tz\":\"Europe/Paris\"}"`)},
	}
	tests := []struct {
		name, finish, wantFinish string
	}{
		{"claude tool_use", "", "tool_calls"},
		{"gemini STOP", "STOP", "tool_calls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.Push(alice.ID, 1, fake.Behavior{Content: fake.ContentEmpty, ToolCalls: calls, ToolCallDeltas: true, ArgumentPiece: 4, FinishReason: tt.finish})
			s, err := c.Stream(t.Context(), alice, mustModel(t, "claude-sonnet-4"), hello("claude-sonnet-4"))
			if err != nil {
				t.Fatal(err)
			}
			chunks, err := drain(t, s)
			if err != nil {
				t.Fatalf("stream ended with %v", err)
			}
			if _, finish := checkChunks(t, chunks, "claude-sonnet-4"); finish != tt.wantFinish {
				t.Errorf("finish = %q, want %q", finish, tt.wantFinish)
			}
			checkCalls(t, accumulate(t, chunks), []wantCall{{"toolu_1", "weather", `{"city":"Paris","days":3}`}, {"toolu_2", "time", `{"tz":"Europe/Paris"}`}})
		})
	}
}

// TestStreamCommitPoint: Stream returns (commits) only on an event that
// carries more than the role and usage: content (non-empty text or a part
// of any other type), a tool call or a finish reason; what came before it
// is delivered after it, and a break before it is an error (a failover).
func TestStreamCommitPoint(t *testing.T) {
	usage := usageEvent(`{"input_tokens":5}`)
	tests := []struct {
		name       string
		h          http.HandlerFunc
		wantErr    string // a stream_broken error containing this; "" = success
		wantText   string
		wantFinish string
		wantUsage  *Usage
	}{
		{"role only, then EOF", serveBody(roleEvent), "ended before any content", "", "", nil},
		{"role only, then a cut", cutAfter(roleEvent), "broke before any content", "", "", nil},
		{"role and usage, then a cut", cutAfter(roleEvent + usage), "broke before any content", "", "", nil},
		{"keep-alive, role, then a cut", cutAfter(sseEv(`{}`) + roleEvent), "broke before any content", "", "", nil},
		{"keep-alive only, then EOF", serveBody(sseEv(`{}`)), "ended before its first event", "", "", nil},
		{"role twice, then text", serveBody(roleEvent + roleEvent + textEvent("a") + finishEvent("end_turn")), "", "a", "stop", nil},
		{"role and usage, then text", serveBody(roleEvent + usage + textEvent("a") + finishEvent("end_turn") + usageEvent(`{"output_tokens":2}`)), "", "a", "stop", &Usage{5, 2, 7}},
		{"role, then only the finish", serveBody(roleEvent + finishEvent("end_turn")), "", "", "stop", nil},
		{"role, then [DONE]: an empty answer", serveBody(roleEvent + "data: [DONE]\n\n"), "", "", "stop", nil},
		{"text, then a cut: committed", cutAfter(roleEvent + textEvent("a")), "", "a", "", nil},
		{"role, then a thinking part, then a cut: committed", cutAfter(roleEvent + thinkingEvent), "", "", "", nil},
		{"thinking part first, then a cut: committed", cutAfter(thinkingEvent), "", "", "", nil},
		{"role, then a part of an unknown type, then a cut: committed", cutAfter(roleEvent + contentEvent(`[{"type":"x-future"}]`)), "", "", "", nil},
		{"role, then an object content, then a cut: committed", cutAfter(roleEvent + contentEvent(`{"type":"thinking","thinking":"hm"}`)), "", "", "", nil},
		{"role, then an empty text part, then a cut", cutAfter(roleEvent + textEvent("")), "broke before any content", "", "", nil},
		{"role, then an empty string, then a cut", cutAfter(roleEvent + contentEvent(`""`)), "broke before any content", "", "", nil},
		{"role, then null content, then a cut", cutAfter(roleEvent + contentEvent(`null`)), "broke before any content", "", "", nil},
		{"role and usage, then thinking, then text", serveBody(roleEvent + usage + thinkingEvent + textEvent("a") + finishEvent("end_turn") + usageEvent(`{"output_tokens":2}`)), "", "a", "stop", &Usage{5, 2, 7}},
		{"thinking and text in one event", serveBody(roleEvent + contentEvent(`[{"type":"thinking","thinking":"hm"},{"type":"text","text":"a"}]`) + finishEvent("end_turn")), "", "a", "stop", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := scriptedServer(t, tt.h)
			s, err := c.Stream(t.Context(), alice, mustModel(t, "gpt-5"), hello("gpt-5"))
			if tt.wantErr != "" {
				if err == nil {
					s.Close()
					t.Fatal("Stream committed, want an error before the commit")
				}
				if ge := asError(t, err); ge.Kind != pool.OutcomeStreamBroken || !strings.Contains(ge.Message, tt.wantErr) {
					t.Errorf("got %v, want stream_broken %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Stream: %v", err)
			}
			chunks, err := drain(t, s)
			if tt.wantFinish == "" { // a break after the commit
				if ge := asError(t, err); ge.Kind != pool.OutcomeStreamBroken {
					t.Errorf("got %v, want stream_broken after the commit", err)
				}
				// The role chunk, then the text if any: a part
				// without text makes no chunk.
				wantLen := 1
				if tt.wantText != "" {
					wantLen = 2
				}
				if len(chunks) != wantLen || chunks[0].Choices[0].Delta.Role != "assistant" ||
					(wantLen == 2 && *chunks[1].Choices[0].Delta.Content != tt.wantText) {
					t.Errorf("chunks before the break = %+v, want the role chunk and text %q", chunks, tt.wantText)
				}
				return
			}
			if err != nil {
				t.Fatalf("stream ended with %v", err)
			}
			text, finish := checkChunks(t, chunks, "gpt-5")
			if text != tt.wantText || finish != tt.wantFinish {
				t.Errorf("text %q finish %q, want %q %q", text, finish, tt.wantText, tt.wantFinish)
			}
			if u := s.Usage(); (u == nil) != (tt.wantUsage == nil) || (u != nil && *u != *tt.wantUsage) {
				t.Errorf("usage = %v, want %v", u, tt.wantUsage)
			}
		})
	}
}

// serveBody serves body as a complete event stream.
func serveBody(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, body)
	}
}

// TestStreamWaitsForContent: while only the role event has come, Stream
// has not returned; it returns when the text comes.
func TestStreamWaitsForContent(t *testing.T) {
	roleSent, release := make(chan struct{}), make(chan struct{})
	c := scriptedServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, roleEvent)
		_ = http.NewResponseController(w).Flush()
		close(roleSent)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, textEvent("late")+finishEvent("end_turn"))
	})
	type result struct {
		s   *Stream
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := c.Stream(t.Context(), alice, mustModel(t, "gpt-5"), hello("gpt-5"))
		done <- result{s, err}
	}()
	<-roleSent
	select {
	case r := <-done:
		if r.err == nil {
			r.s.Close()
		}
		t.Fatalf("Stream returned (%v) after the role event alone", r.err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	chunks, err := drain(t, r.s)
	if err != nil {
		t.Fatal(err)
	}
	if text, finish := checkChunks(t, chunks, "gpt-5"); text != "late" || finish != "stop" {
		t.Errorf("text %q finish %q", text, finish)
	}
}

// TestStreamCutAfterFinish: a cut after the event that carried the finish
// reason is a clean end, for Stream and for Complete collecting a stream.
func TestStreamCutAfterFinish(t *testing.T) {
	final := sseEv(`{"response_payload":{"choices":[{"index":0,"message":{"content":[]},"finish_reason":"end_turn"}]},"platform_attributes":{"metrics":{"usage":{"input_tokens":4,"output_tokens":2}}}}`)
	tests := []struct {
		name      string
		body      string
		wantUsage *Usage
	}{
		{"cut right after the finish event", roleEvent + textEvent("a") + final, &Usage{4, 2, 6}},
		{"cut after a usage event that followed", roleEvent + textEvent("a") + finishEvent("end_turn") + usageEvent(`{"input_tokens":4,"output_tokens":2}`), &Usage{4, 2, 6}},
		{"cut before the usage event", roleEvent + textEvent("a") + finishEvent("end_turn"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/Stream", func(t *testing.T) {
			c := scriptedServer(t, cutAfter(tt.body))
			s, err := c.Stream(t.Context(), alice, mustModel(t, "gpt-5"), hello("gpt-5"))
			if err != nil {
				t.Fatal(err)
			}
			chunks, err := drain(t, s)
			if err != nil {
				t.Fatalf("stream ended with %v, want a clean end", err)
			}
			if text, finish := checkChunks(t, chunks, "gpt-5"); text != "a" || finish != "stop" {
				t.Errorf("text %q finish %q", text, finish)
			}
			if u := s.Usage(); (u == nil) != (tt.wantUsage == nil) || (u != nil && *u != *tt.wantUsage) {
				t.Errorf("usage = %v, want %v", u, tt.wantUsage)
			}
		})
		t.Run(tt.name+"/Complete", func(t *testing.T) {
			c := scriptedServer(t, cutAfter(tt.body))
			cc, err := c.Complete(t.Context(), alice, mustModel(t, "gpt-5"), hello("gpt-5"))
			if err != nil {
				t.Fatalf("Complete: %v, want success", err)
			}
			if got := cc.Choices[0]; *got.Message.Content != "a" || got.FinishReason != "stop" {
				t.Errorf("choice = %+v", got)
			}
		})
	}
	t.Run("cut before the finish event is still a break", func(t *testing.T) {
		c := scriptedServer(t, cutAfter(roleEvent+textEvent("a")))
		_, err := c.Complete(t.Context(), alice, mustModel(t, "gpt-5"), hello("gpt-5"))
		if ge := asError(t, err); ge.Kind != pool.OutcomeStreamBroken {
			t.Errorf("got %v, want stream_broken", err)
		}
	})
}

func TestUsageMerge(t *testing.T) {
	n := func(v int64) *flexInt { f := flexInt(v); return &f }
	tests := []struct {
		name   string
		events []unifiedUsage
		want   *Usage
	}{
		{"none", nil, nil},
		{"one", []unifiedUsage{{InputTokens: n(3), OutputTokens: n(4)}}, &Usage{3, 4, 7}},
		{"input early, output late", []unifiedUsage{{InputTokens: n(7)}, {OutputTokens: n(3)}}, &Usage{7, 3, 10}},
		{"later non-zero wins", []unifiedUsage{{InputTokens: n(1), OutputTokens: n(1)}, {InputTokens: n(7), OutputTokens: n(3)}}, &Usage{7, 3, 10}},
		{"a later zero does not erase", []unifiedUsage{{InputTokens: n(7), OutputTokens: n(1)}, {InputTokens: n(0), OutputTokens: n(3)}}, &Usage{7, 3, 10}},
		{"a zero fills an unseen count", []unifiedUsage{{OutputTokens: n(3)}, {InputTokens: n(0)}}, &Usage{0, 3, 3}},
		{"stale total recomputed", []unifiedUsage{{InputTokens: n(7), OutputTokens: n(1), TotalTokens: n(8)}, {OutputTokens: n(5)}}, &Usage{7, 5, 12}},
		{"later total kept", []unifiedUsage{{InputTokens: n(7)}, {OutputTokens: n(3), TotalTokens: n(12)}}, &Usage{7, 3, 12}},
		{"openai names", []unifiedUsage{{PromptTokens: n(2)}, {CompletionTokens: n(5)}}, &Usage{2, 5, 7}},
		{"only a total", []unifiedUsage{{TotalTokens: n(9)}}, &Usage{0, 0, 9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var acc usageCounts
			for _, u := range tt.events {
				acc.merge(u.counts())
			}
			got := acc.mergedUsage()
			if (got == nil) != (tt.want == nil) || (got != nil && *got != *tt.want) {
				t.Errorf("merged usage = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestStreamBrokenAfterCommit: a malformed event or an error event after
// the stream committed ends it with a stream break, the chunks before it
// delivered.
func TestStreamBrokenAfterCommit(t *testing.T) {
	tests := []struct {
		name, event, wantMsg string
	}{
		{"malformed event", sseEv(`{"response_payload":`), "the upstream sent a malformed event"},
		{"error event", sseEv(`{"error":{"message":"boom"}}`), "the upstream reported an error in the stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := scriptedServer(t, serveBody(roleEvent+textEvent("a")+tt.event+finishEvent("end_turn")))
			s, err := c.Stream(t.Context(), alice, mustModel(t, "gpt-5"), hello("gpt-5"))
			if err != nil {
				t.Fatal(err)
			}
			chunks, err := drain(t, s)
			e := asError(t, err)
			if e.Kind != pool.OutcomeStreamBroken || e.Message != tt.wantMsg {
				t.Errorf("error = %v (kind %v), want %v %q", e, e.Kind, pool.OutcomeStreamBroken, tt.wantMsg)
			}
			if len(chunks) != 2 || chunks[1].Choices[0].Delta.Content == nil || *chunks[1].Choices[0].Delta.Content != "a" {
				t.Errorf("chunks before the break = %+v, want the role and %q", chunks, "a")
			}
		})
	}
}

package gateway

import (
	"context"
	"encoding/json"
	"errors"
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

// drain reads a stream to its end, validating every chunk, and returns the
// chunks and the terminating error (nil for a clean io.EOF end).
func drain(t *testing.T, s *Stream) ([]ChatCompletionChunk, error) {
	t.Helper()
	defer s.Close()
	var out []ChatCompletionChunk
	for {
		c, err := s.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		raw, _ := json.Marshal(c)
		schematest.Validate(t, schematest.ChatCompletionChunk, raw)
		out = append(out, *c)
	}
}

// checkChunks verifies the invariants of a clean stream and returns its text
// and finish reason.
func checkChunks(t *testing.T, chunks []ChatCompletionChunk, model string) (text, finish string) {
	t.Helper()
	if len(chunks) < 2 {
		t.Fatalf("got %d chunks, want at least 2", len(chunks))
	}
	if chunks[0].Choices[0].Delta.Role != "assistant" {
		t.Errorf("first chunk delta.role = %q, want assistant", chunks[0].Choices[0].Delta.Role)
	}
	for i, c := range chunks {
		if c.ID != chunks[0].ID || c.Created != chunks[0].Created || c.Model != model || c.Object != "chat.completion.chunk" {
			t.Errorf("chunk %d: id %q created %d model %q, want %q %d %q", i, c.ID, c.Created, c.Model, chunks[0].ID, chunks[0].Created, model)
		}
		if c.Usage != nil {
			t.Errorf("chunk %d carries usage", i)
		}
		if i > 0 && c.Choices[0].Delta.Role != "" {
			t.Errorf("chunk %d repeats the role", i)
		}
		last := i == len(chunks)-1
		if fr := c.Choices[0].FinishReason; (fr != nil) != last {
			t.Errorf("chunk %d finish_reason %v (last %v)", i, fr, last)
		} else if last {
			finish = *fr
		}
		if d := c.Choices[0].Delta.Content; d != nil {
			text += *d
		}
	}
	if chunks[0].ID == "" || chunks[0].Created == 0 {
		t.Errorf("id %q created %d, want both set", chunks[0].ID, chunks[0].Created)
	}
	return text, finish
}

func TestStreamOK(t *testing.T) {
	srv, c := startFake(t)
	m := mustModel(t, "bedrock:anthropic.claude-sonnet-4-20250514-v1:0")
	tests := []struct {
		name       string
		b          fake.Behavior
		wantText   string
		wantFinish string
		wantUsage  bool
	}{
		{"default", fake.Behavior{}, fake.DefaultText, "stop", true},
		{"no [DONE]", fake.Behavior{NoDone: true}, fake.DefaultText, "stop", true},
		{"slow", fake.Behavior{EventDelay: 20 * time.Millisecond, Text: "a b c"}, "a b c", "stop", true},
		{"string content", fake.Behavior{Content: fake.ContentString, Text: "x y"}, "x y", "stop", true},
		{"pieces", fake.Behavior{Pieces: []string{"Hé", "llo", "", " 🎉"}}, "Héllo 🎉", "stop", true},
		{"max_tokens", fake.Behavior{FinishReason: "max_tokens"}, fake.DefaultText, "length", true},
		{"no ids", fake.Behavior{NoIDs: true}, fake.DefaultText, "stop", true},
		{"no usage", fake.Behavior{NoUsage: true}, fake.DefaultText, "stop", false},
		{"no finish but [DONE]", fake.Behavior{OmitFinishReason: true}, fake.DefaultText, "stop", true},
		{"null content", fake.Behavior{Content: fake.ContentNull}, "", "stop", true},
		{"cut after the finish event", fake.Behavior{Fault: fake.CutAfterFinish}, fake.DefaultText, "stop", true},
		{"cut after the finish event, no usage", fake.Behavior{Fault: fake.CutAfterFinish, NoUsage: true, Text: "a b"}, "a b", "stop", false},
		{"gemini SAFETY", fake.Behavior{FinishReason: "SAFETY"}, fake.DefaultText, "content_filter", true},
		{"thinking part first", fake.Behavior{Thinking: "let me see"}, fake.DefaultText, "stop", true},
		{"thinking part first, string content", fake.Behavior{Thinking: "let me see", Content: fake.ContentString, Text: "x y"}, "x y", "stop", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.Push(alice.ID, 1, tt.b)
			s, err := c.Stream(t.Context(), alice, m, hello("bedrock:anthropic.claude-sonnet-4-20250514-v1:0"))
			if err != nil {
				t.Fatal(err)
			}
			chunks, err := drain(t, s)
			if err != nil {
				t.Fatalf("stream ended with %v", err)
			}
			text, finish := checkChunks(t, chunks, "bedrock:anthropic.claude-sonnet-4-20250514-v1:0")
			if text != tt.wantText || finish != tt.wantFinish {
				t.Errorf("text %q finish %q, want %q %q", text, finish, tt.wantText, tt.wantFinish)
			}
			u := s.Usage()
			if (u != nil) != tt.wantUsage {
				t.Fatalf("usage = %+v, want present %v", u, tt.wantUsage)
			}
			if u != nil {
				if u.TotalTokens != u.PromptTokens+u.CompletionTokens || u.CompletionTokens == 0 {
					t.Errorf("usage = %+v", *u)
				}
				raw, _ := json.Marshal(UsageChunk(s.ID(), s.Created(), s.Model(), *u))
				schematest.Validate(t, schematest.ChatCompletionChunk, raw)
			}
			if !tt.b.NoIDs && !strings.HasPrefix(s.ID(), "msg_fake_") {
				t.Errorf("id = %q, want the upstream's", s.ID())
			}
		})
	}
}

func TestStreamFaults(t *testing.T) {
	srv, c := startFake(t)
	m := mustModel(t, "claude-sonnet-4")
	extra := []faultCase{
		{"cut before first event", fake.Behavior{Fault: fake.CutBeforeFirstEvent}, 200, pool.OutcomeStreamBroken, 0, "", "before its first event"},
		{"malformed first event", fake.Behavior{Fault: fake.Malformed}, 200, pool.OutcomeStreamBroken, 0, "", "malformed"},
		// The role-only first event does not commit the stream: a cut
		// after it can still fail over.
		{"cut after role event", fake.Behavior{Fault: fake.CutMidStream, CutAfter: 1}, 200, pool.OutcomeStreamBroken, 0, "", "before any content"},
		{"cut after role event, content null", fake.Behavior{Fault: fake.CutMidStream, CutAfter: 1, Content: fake.ContentNull}, 200, pool.OutcomeStreamBroken, 0, "", "before any content"},
	}
	for _, tc := range append(faultCases(), extra...) {
		t.Run(tc.name, func(t *testing.T) {
			srv.Push(alice.ID, 1, tc.b)
			s, err := c.Stream(t.Context(), alice, m, hello("claude-sonnet-4"))
			if err == nil {
				s.Close()
			}
			checkFault(t, tc, err)
		})
	}
}

func TestStreamBreaksAfterFirstEvent(t *testing.T) {
	srv, c := startFake(t)
	m := mustModel(t, "claude-sonnet-4")
	tests := []struct {
		name string
		b    fake.Behavior
	}{
		{"cut after two events", fake.Behavior{Fault: fake.CutMidStream}},
		{"cut after last event", fake.Behavior{Fault: fake.CutMidStream, Text: "a b", CutAfter: 3, OmitFinishReason: true}},
		{"EOF without finish or [DONE]", fake.Behavior{NoDone: true, OmitFinishReason: true}},
		// A thinking part commits the stream: a cut after it is a break.
		{"cut after the thinking event", fake.Behavior{Fault: fake.CutMidStream, Thinking: "let me see", CutAfter: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.Push(alice.ID, 1, tt.b)
			s, err := c.Stream(t.Context(), alice, m, hello("claude-sonnet-4"))
			if err != nil {
				t.Fatalf("Stream: %v, want the break to come after the first event", err)
			}
			chunks, err := drain(t, s)
			if len(chunks) == 0 || chunks[0].Choices[0].Delta.Role != "assistant" {
				t.Errorf("chunks before the break = %+v", chunks)
			}
			for _, ch := range chunks {
				if ch.Choices[0].FinishReason != nil {
					t.Error("a broken stream produced a finish chunk")
				}
			}
			if ge := asError(t, err); ge.Kind != pool.OutcomeStreamBroken || ge.Status != 200 {
				t.Errorf("got %v, want stream_broken", err)
			}
			if _, err2 := s.Next(); !errors.Is(err2, err) && err2.Error() != err.Error() {
				t.Errorf("Next after a break = %v, want the same error", err2)
			}
		})
	}
}

// TestStreamThinkingCommits: a model that reasons for longer than the
// attempt's deadline before its first text. The stream commits at its
// thinking part, within the deadline, and the text comes later under the
// request's own context, as api.streamChat runs a stream: tied to the
// attempt's context only until Stream returns.
func TestStreamThinkingCommits(t *testing.T) {
	srv, c := startFake(t)
	const thinking = 600 * time.Millisecond
	srv.Push(alice.ID, 1, fake.Behavior{Thinking: "let me see", ThinkingTime: thinking, Text: "a b"})
	attempt, cancelAttempt := context.WithTimeout(t.Context(), thinking/2)
	defer cancelAttempt()
	sctx, scancel := context.WithCancel(t.Context())
	defer scancel()
	detach := context.AfterFunc(attempt, scancel)
	start := time.Now()
	s, err := c.Stream(sctx, alice, mustModel(t, "claude-sonnet-4"), hello("claude-sonnet-4"))
	if !detach() {
		t.Fatalf("the attempt's deadline ended the stream before it committed (Stream: %v)", err)
	}
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	// Committed at the thinking event: only the role chunk is queued.
	if len(s.pending) != 1 || s.pending[0].Choices[0].Delta.Role != "assistant" {
		t.Errorf("queued at the commit: %+v, want the role chunk alone", s.pending)
	}
	chunks, err := drain(t, s)
	if err != nil {
		t.Fatalf("stream ended with %v", err)
	}
	if text, finish := checkChunks(t, chunks, "claude-sonnet-4"); text != "a b" || finish != "stop" {
		t.Errorf("text %q finish %q, want %q stop", text, finish, "a b")
	}
	if d := time.Since(start); d < thinking {
		t.Errorf("the answer came after %v, before the thinking time %v: the fake did not think", d, thinking)
	}
}

func TestStreamCanceled(t *testing.T) {
	t.Run("before the commit", func(t *testing.T) {
		// The role event came, the text does not: Stream is still waiting.
		srv, c := startFake(t)
		srv.SetBehavior(alice.ID, fake.Behavior{EventDelay: time.Hour, Text: "a b c"})
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(30*time.Millisecond, cancel)
		s, err := c.Stream(ctx, alice, mustModel(t, "claude-sonnet-4"), hello("m"))
		if err == nil {
			s.Close()
			t.Fatal("Stream returned a stream before any content came")
		}
		if ge := asError(t, err); ge.Kind != pool.OutcomeCanceled {
			t.Errorf("got %v, want canceled", err)
		}
	})
	t.Run("after the commit", func(t *testing.T) {
		c := scriptedServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, roleEvent+textEvent("a"))
			_ = http.NewResponseController(w).Flush()
			<-r.Context().Done()
		})
		ctx, cancel := context.WithCancel(t.Context())
		s, err := c.Stream(ctx, alice, mustModel(t, "claude-sonnet-4"), hello("m"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for _, want := range []string{"role", "a"} {
			ch, err := s.Next()
			if err != nil {
				t.Fatalf("chunk %s: %v", want, err)
			}
			if got := ch.Choices[0].Delta; (want == "role") != (got.Role == "assistant") || (want == "a" && *got.Content != "a") {
				t.Errorf("chunk = %+v, want %s", got, want)
			}
		}
		time.AfterFunc(30*time.Millisecond, cancel)
		_, err = s.Next()
		if ge := asError(t, err); ge.Kind != pool.OutcomeCanceled {
			t.Errorf("got %v, want canceled", err)
		}
	})
}

func TestStreamClose(t *testing.T) {
	srv, c := startFake(t)
	srv.SetBehavior(alice.ID, fake.Behavior{EventDelay: 10 * time.Millisecond})
	s, err := c.Stream(t.Context(), alice, mustModel(t, "claude-sonnet-4"), hello("m"))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	for {
		if _, err = s.Next(); err != nil {
			break
		}
	}
	if errors.Is(err, io.EOF) {
		t.Error("a closed stream ended cleanly")
	}
}

// rawServer serves body with contentType on every request.
func rawServer(t *testing.T, contentType, body string) *Client {
	t.Helper()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(hs.Close)
	c, err := NewClient(Config{BaseURL: hs.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestStreamVariants(t *testing.T) {
	const sse = "text/event-stream"
	ev := func(s string) string { return "data: " + s + "\n\n" }
	first := ev(`{"response_payload":{"id":"u1","created":1700000000,"choices":[{"index":0,"message":{"role":"assistant","content":[]}}]}}`)
	text := func(s string) string {
		return ev(`{"response_payload":{"id":"u1","created":1700000000,"choices":[{"index":0,"message":{"content":[{"type":"text","text":"` + s + `"}]}}]}}`)
	}
	final := ev(`{"response_payload":{"choices":[{"index":0,"message":{"content":[]},"finish_reason":"end_turn"}]},"platform_attributes":{"metrics":{"usage":{"input_tokens":7,"output_tokens":3}}}}`)
	tests := []struct {
		name, contentType, body string
		wantText, wantFinish    string
		wantUsage               *Usage
		wantErr                 pool.Outcome // OutcomeSuccess: no error
	}{
		{"protocol shape", sse, first + text("Hel") + text("lo") + final + "data: [DONE]\n\n", "Hello", "stop", &Usage{7, 3, 10}, 0},
		{"EOF after finish", sse, first + text("Hi") + final, "Hi", "stop", &Usage{7, 3, 10}, 0},
		{"CRLF and comments", sse, strings.ReplaceAll(": ping\n\n"+first+text("a")+final, "\n", "\r\n"), "a", "stop", &Usage{7, 3, 10}, 0},
		{"delta key", sse, first + ev(`{"response_payload":{"choices":[{"delta":{"content":[{"type":"text","text":"d"}]},"finish_reason":"max_tokens"}]}}`), "d", "length", nil, 0},
		{"text in the first event", sse, ev(`{"response_payload":{"choices":[{"message":{"role":"assistant","content":[{"type":"text","text":"x"}]}}]}}`) + final, "x", "stop", &Usage{7, 3, 10}, 0},
		{"usage in a later event", sse, first + text("a") + ev(`{"response_payload":{"choices":[{"message":{"content":[]},"finish_reason":"end_turn"}]}}`) +
			ev(`{"platform_attributes":{"metrics":{"usage":{"input_tokens":1,"output_tokens":2,"total_tokens":3}}}}`), "a", "stop", &Usage{1, 2, 3}, 0},
		{"usage overwritten by the last", sse, first + ev(`{"response_payload":{"choices":[]},"platform_attributes":{"metrics":{"usage":{"input_tokens":1,"output_tokens":1}}}}`) + final, "", "stop", &Usage{7, 3, 10}, 0},
		{"usage split: input early, output late", sse, first + ev(`{"response_payload":{"choices":[]},"platform_attributes":{"metrics":{"usage":{"input_tokens":9}}}}`) + text("a") +
			ev(`{"response_payload":{"choices":[{"message":{"content":[]},"finish_reason":"end_turn"}]},"platform_attributes":{"metrics":{"usage":{"output_tokens":4}}}}`), "a", "stop", &Usage{9, 4, 13}, 0},
		{"usage split: zero input later", sse, first + text("a") + ev(`{"platform_attributes":{"metrics":{"usage":{"input_tokens":9,"output_tokens":1,"total_tokens":10}}}}`) +
			ev(`{"response_payload":{"choices":[{"message":{"content":[]},"finish_reason":"end_turn"}]},"platform_attributes":{"metrics":{"usage":{"input_tokens":0,"output_tokens":6}}}}`), "a", "stop", &Usage{9, 6, 15}, 0},
		{"usage in response_payload", sse, first + text("a") + ev(`{"response_payload":{"choices":[{"message":{"content":[]},"finish_reason":"end_turn"}],"usage":{"prompt_tokens":2,"completion_tokens":3}}}`), "a", "stop", &Usage{2, 3, 5}, 0},
		{"keep-alive event skipped", sse, ev(`{}`) + first + final, "", "stop", &Usage{7, 3, 10}, 0},
		{"[DONE] without finish", sse, first + text("a") + "data: [DONE]\n\n", "a", "stop", nil, 0},
		{"streamed tool call", sse, first + ev(`{"response_payload":{"choices":[{"message":{"tool_calls":[{"id":"t1","function":{"name":"f","arguments":{"a":1}}}]}}]}}`) + "data: [DONE]\n\n", "", "tool_calls", nil, 0},
		{"JSON body for a stream", "application/json", `{"response_payload":{"id":"j","choices":[{"message":{"content":[{"type":"text","text":"whole"}]},"finish_reason":"end_turn"}]},"platform_attributes":{"metrics":{"usage":{"input_tokens":1,"output_tokens":1}}}}`, "whole", "stop", &Usage{1, 1, 2}, 0},
		{"SSE without content type", "", first + text("t") + final, "t", "stop", &Usage{7, 3, 10}, 0},
		{"JSON with charset", "application/json; charset=utf-8", `{"response_payload":{"choices":[{"message":{"content":"j"}}]}}`, "j", "stop", nil, 0},
		{"empty body", sse, "", "", "", nil, pool.OutcomeStreamBroken},
		{"only [DONE]", sse, "data: [DONE]\n\n", "", "", nil, pool.OutcomeStreamBroken},
		{"error event first", sse, ev(`{"error":{"message":"boom"}}`), "", "", nil, pool.OutcomeStreamBroken},
		{"malformed JSON body", "application/json", `{"response_payload":`, "", "", nil, pool.OutcomeStreamBroken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := rawServer(t, tt.contentType, tt.body)
			s, err := c.Stream(t.Context(), alice, mustModel(t, "gpt-5"), hello("gpt-5"))
			if tt.wantErr != pool.OutcomeSuccess {
				if ge := asError(t, err); ge.Kind != tt.wantErr {
					t.Errorf("got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			chunks, err := drain(t, s)
			if err != nil {
				t.Fatalf("stream ended with %v", err)
			}
			gotText, finish := checkChunks(t, chunks, "gpt-5")
			if gotText != tt.wantText || finish != tt.wantFinish {
				t.Errorf("text %q finish %q, want %q %q", gotText, finish, tt.wantText, tt.wantFinish)
			}
			if u := s.Usage(); (u == nil) != (tt.wantUsage == nil) || (u != nil && *u != *tt.wantUsage) {
				t.Errorf("usage = %v, want %v", u, tt.wantUsage)
			}
		})
	}
	t.Run("error event midway", func(t *testing.T) {
		c := rawServer(t, sse, first+text("a")+ev(`{"error":"overloaded"}`))
		s, err := c.Stream(t.Context(), alice, mustModel(t, "gpt-5"), hello("gpt-5"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = drain(t, s)
		if ge := asError(t, err); ge.Kind != pool.OutcomeStreamBroken {
			t.Errorf("got %v, want stream_broken", err)
		}
	})
}

func TestCompleteFromStreamedBody(t *testing.T) {
	body := "data: " + `{"response_payload":{"id":"s1","created":5,"choices":[{"message":{"content":[{"type":"text","text":"Hel"}]}}]}}` + "\n\n" +
		"data: " + `{"response_payload":{"choices":[{"message":{"content":[{"type":"text","text":"lo"}],"tool_calls":[{"id":"t","function":{"name":"f","arguments":null}}]},"finish_reason":"tool_use"}]},"platform_attributes":{"metrics":{"usage":{"input_tokens":2,"output_tokens":2}}}}` + "\n\n"
	c := rawServer(t, "text/event-stream; charset=utf-8", body)
	cc, err := c.Complete(t.Context(), alice, mustModel(t, "gpt-5"), hello("gpt-5"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(cc)
	schematest.Validate(t, schematest.ChatCompletion, raw)
	ch := cc.Choices[0]
	if cc.ID != "s1" || cc.Created != 5 || *ch.Message.Content != "Hello" || ch.FinishReason != "tool_calls" ||
		len(ch.Message.ToolCalls) != 1 || ch.Message.ToolCalls[0].Function.Arguments != "{}" || cc.Usage == nil || cc.Usage.TotalTokens != 4 {
		t.Errorf("completion = %s", raw)
	}
}

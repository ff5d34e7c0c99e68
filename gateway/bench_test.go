package gateway

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

var benchEvent = []byte(`{"response_payload":{"id":"msg_01","created":1700000000,"choices":[{"index":0,"message":{"role":"assistant","content":[{"type":"text","text":"Hello, this is one streamed piece of text."}]},"finish_reason":null}]},"platform_attributes":{"model":"claude-sonnet-4@20250514"}}`)

// BenchmarkTranslateChunk measures one upstream event → one OpenAI chunk
// written as JSON: the per-event work of a streamed response.
func BenchmarkTranslateChunk(b *testing.B) {
	s := &Stream{id: "chatcmpl-x", created: 1700000000, model: "claude-sonnet-4"}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchEvent)))
	for b.Loop() {
		ev, err := parseEventInto(benchEvent, &s.ev) // as Stream.advance does
		if err != nil {
			b.Fatal(err)
		}
		s.handle(ev)
		buf.Reset()
		if err := enc.Encode(&s.pending[0]); err != nil {
			b.Fatal(err)
		}
		clear(s.pending) // as Stream.Next does
		s.pending = s.pending[:0]
	}
}

// BenchmarkDecodeSSE measures the SSE decoder alone over a 100-event stream.
func BenchmarkDecodeSSE(b *testing.B) {
	var stream bytes.Buffer
	for range 100 {
		stream.WriteString("data: ")
		stream.Write(benchEvent)
		stream.WriteString("\n\n")
	}
	data := stream.Bytes()
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		d := newSSEDecoder(bytes.NewReader(data))
		for {
			if _, err := d.Next(); err != nil {
				break
			}
		}
	}
}

// BenchmarkBuildRequest builds the upstream body of a 1 KB and of a
// 100 KB conversation, by hand as buildRequest does ("direct") and with
// json.Marshal of the equivalent structs ("json.Marshal", the reference
// the tests compare against).
func BenchmarkBuildRequest(b *testing.B) {
	m := Model{Upstream: "claude-sonnet-4@20250514", Route: RouteUnified}
	for _, size := range []struct {
		name  string
		turns int
	}{{"1KB", 1}, {"100KB", 100}} {
		req := &ChatRequest{Model: "claude-sonnet-4", MaxTokens: ptr(1024), Messages: []Message{
			{Role: "system", Content: json.RawMessage(`"You are terse."`)},
		}}
		for i := range size.turns {
			role := "user"
			if i%2 == 1 {
				role = "assistant"
			}
			req.Messages = append(req.Messages, Message{Role: role, Content: json.RawMessage(`"` + strings.Repeat("word ", 200) + `"`)})
		}
		for _, enc := range []struct {
			name string
			fn   func(Model, *ChatRequest, bool) ([]byte, error)
		}{{"direct", buildRequest}, {"json.Marshal", referenceRequest}} {
			b.Run(size.name+"/"+enc.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := enc.fn(m, req, true); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkTranslateCompletion(b *testing.B) {
	body := []byte(`{"response_payload":{"id":"msg_01","created":1700000000,"choices":[{"index":0,"message":{"role":"assistant","content":[{"type":"text","text":"` +
		strings.Repeat("text ", 200) + `"}]},"finish_reason":"end_turn"}]},"platform_attributes":{"model":"m","metrics":{"usage":{"input_tokens":10,"output_tokens":200}}}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := completionFromBody(body, "claude-sonnet-4", testNow); err != nil {
			b.Fatal(err)
		}
	}
}

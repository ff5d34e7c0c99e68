package api

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/atlassian-proxy/atlassian-proxy/dispatch"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/schematest"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// Streams, cancellation and deadlines under the pool's rules, through the
// whole HTTP stack (see failover_test.go).

// TestStreamCutBeforeCommitIsSilent: a stream that breaks before it is
// committed (before its first event, or after events that carried only the
// role) fails over without the client noticing; if every credential does
// it, the client gets a plain JSON 502, not a broken stream.
func TestStreamCutBeforeCommitIsSilent(t *testing.T) {
	cuts := []struct {
		name string
		b    fake.Behavior
	}{
		{"before the first event", fake.Behavior{Fault: fake.CutBeforeFirstEvent}},
		{"after the role-only event", fake.Behavior{Fault: fake.CutMidStream, CutAfter: 1}},
	}
	for _, cut := range cuts {
		t.Run(cut.name, func(t *testing.T) {
			t.Run("one credential cuts", func(t *testing.T) {
				e := newEnv(t, envOptions{creds: []fake.Credential{
					testCred("c1", cut.b),
					testCred("c2", fake.Behavior{}), testCred("c3", fake.Behavior{}),
				}})
				failedOver := 0
				for i := range 6 {
					resp, body, reqs, _ := e.exchange(chatBody(`"stream":true`))
					if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
						t.Errorf("request %d: Content-Type = %q, want an event stream", i, ct)
					}
					checkCompleteStream(t, resp, body)
					switch {
					case len(reqs) == 1 && reqs[0].CredentialID != "c1":
					case len(reqs) == 2 && reqs[0].CredentialID == "c1" && reqs[0].Status == 0 && reqs[1].Status == http.StatusOK:
						failedOver++
					default:
						t.Errorf("request %d: upstream requests %q, want one 200, or c1's cut then a 200", i, credIDs(reqs))
					}
					time.Sleep(10 * time.Millisecond) // c1's short back-off passes
				}
				if failedOver == 0 {
					t.Fatalf("c1 was never tried: the failover was not exercised")
				}
				st := e.credStatus("c1")
				if st.Failures != int64(failedOver) || st.LastError == "" {
					t.Errorf("c1 = %+v, want %d failures (stream broken)", st, failedOver)
				}

				// The official client reads a complete answer too.
				stream := e.client(e.token).Chat.Completions.NewStreaming(t.Context(), openai.ChatCompletionNewParams{
					Model: testModel, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
				})
				var text strings.Builder
				for stream.Next() {
					if c := stream.Current(); len(c.Choices) > 0 {
						text.WriteString(c.Choices[0].Delta.Content)
					}
				}
				if err := stream.Err(); err != nil || text.String() != fake.DefaultText {
					t.Errorf("official client: text %q, error %v; want the whole answer", text.String(), err)
				}
			})
			t.Run("every credential cuts", func(t *testing.T) {
				e := newEnv(t, envOptions{creds: []fake.Credential{
					testCred("c1", cut.b),
					testCred("c2", cut.b),
				}})
				resp, body, reqs, _ := e.exchange(chatBody(`"stream":true`))
				checkError(t, resp, body, wantError{502, "server_error", "upstream_error", "", ""})
				if len(reqs) != 2 || reqs[0].CredentialID == reqs[1].CredentialID {
					t.Errorf("upstream requests %q, want one on each credential", credIDs(reqs))
				}
			})
		})
	}
}

// TestStreamCutAfterFirstEventEndsWithError: once the stream is committed
// (an event carried text) and its first chunks went out, an upstream break
// ends the client's stream with an SSE error event and no [DONE], and no
// other credential is tried. The stream is read raw.
func TestStreamCutAfterFirstEventEndsWithError(t *testing.T) {
	tests := []struct {
		cutAfter int
		text     string // what reached the client before the cut
	}{
		{2, "Hello "},      // the role event and one piece (the role alone does not commit)
		{3, "Hello from "}, // the role event and two pieces
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("after %d events", tt.cutAfter), func(t *testing.T) {
			b := fake.Behavior{Fault: fake.CutMidStream, CutAfter: tt.cutAfter}
			e := newEnv(t, envOptions{creds: []fake.Credential{testCred("c1", b), testCred("c2", b)}})

			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/v1/chat/completions", strings.NewReader(chatBody(`"stream":true`)))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+e.token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("status %d, Content-Type %q; want a committed 200 event stream", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			var datas []string
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				line := sc.Text()
				switch {
				case line == "" || strings.HasPrefix(line, ":"):
				case strings.HasPrefix(line, "data: "):
					datas = append(datas, strings.TrimPrefix(line, "data: "))
				default:
					t.Errorf("unexpected SSE line %q", line)
				}
			}
			if err := sc.Err(); err != nil {
				t.Fatalf("reading the stream: %v (want a clean end of the body after the error event)", err)
			}
			if len(datas) < 2 {
				t.Fatalf("events = %q, want chunks then an error event", datas)
			}
			last := datas[len(datas)-1]
			if !strings.HasPrefix(last, `{"error"`) {
				t.Fatalf("last event = %s, want an error event", last)
			}
			schematest.Validate(t, schematest.ErrorResponse, []byte(last))
			if !strings.Contains(last, `"type":"server_error"`) || !strings.Contains(last, `"code":"stream_interrupted"`) {
				t.Errorf("error event = %s, want a server_error stream_interrupted", last)
			}
			s := summarize(t, []byte("data: "+strings.Join(datas[:len(datas)-1], "\n\ndata: ")+"\n\n"))
			if s.text != tt.text || s.errorEvent != "" {
				t.Errorf("chunks before the error carry %q, want %q", s.text, tt.text)
			}
			for _, d := range datas {
				if d == "[DONE]" {
					t.Errorf("the broken stream carries [DONE]: %q", datas)
				}
			}
			reqs := chatRequests(e)
			if len(reqs) != 1 {
				t.Errorf("upstream requests %q, want 1: no failover after the commit", credIDs(reqs))
			}
			if len(reqs) > 0 {
				eventually(t, 2*time.Second, "the credential records the broken stream", func() bool {
					st := e.credStatus(reqs[0].CredentialID)
					return st.InFlight == 0 && st.Failures == 1
				})
			}

			// The official client reports an error, not a clean end.
			stream := e.client(e.token).Chat.Completions.NewStreaming(t.Context(), openai.ChatCompletionNewParams{
				Model: testModel, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
			})
			for stream.Next() {
			}
			if err := stream.Err(); err == nil || !strings.Contains(err.Error(), "stream_interrupted") {
				t.Errorf("official client stream error = %v, want the proxy's error event", err)
			}
		})
	}
}

// TestClientCancelIsNotPenalised: a client leaving mid-request (streamed or
// not) ends the upstream request promptly, is not failed over, and the
// credential stays ready with no failure.
func TestClientCancelIsNotPenalised(t *testing.T) {
	pieces := slices.Repeat([]string{"word "}, 100)
	tests := []struct {
		name   string
		b      fake.Behavior
		stream bool
	}{
		{"not streamed, upstream working", fake.Behavior{Fault: fake.Hang}, false},
		{"streamed, before the first event", fake.Behavior{Fault: fake.Hang}, true},
		{"streamed, mid-stream", fake.Behavior{Pieces: pieces, EventDelay: 50 * time.Millisecond}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{creds: []fake.Credential{testCred("c1", tt.b), testCred("c2", tt.b)}})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			body := chatBody("")
			if tt.stream {
				body = chatBody(`"stream":true`)
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+e.token)
			req.Header.Set("Content-Type", "application/json")
			done := make(chan struct{})
			var (
				firstLines []string
				readErr    error
			)
			go func() {
				defer close(done)
				resp, err := e.srv.Client().Do(req)
				if err != nil {
					readErr = err
					return
				}
				defer resp.Body.Close()
				r := bufio.NewReader(resp.Body)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						readErr = err
						return
					}
					firstLines = append(firstLines, line)
				}
			}()
			inFlight := func() int { return e.gw.Stats("c1").InFlight + e.gw.Stats("c2").InFlight }
			eventually(t, 2*time.Second, "the upstream call started", func() bool { return inFlight() == 1 })
			if tt.b.EventDelay > 0 {
				time.Sleep(3 * tt.b.EventDelay) // a few chunks went out
			}
			start := time.Now()
			cancel()
			eventually(t, 2*time.Second, "the upstream request ended", func() bool { return inFlight() == 0 })
			if d := time.Since(start); d > time.Second {
				t.Errorf("the upstream saw the cancel after %s, want it at once", d)
			}
			<-done
			if readErr == nil {
				t.Errorf("the canceled request ended cleanly")
			}
			if tt.b.EventDelay > 0 && len(firstLines) < 3 {
				t.Errorf("read %d lines before the cancel, want a few chunks: the cancel was not mid-stream", len(firstLines))
			}
			reqs := chatRequests(e)
			if len(reqs) != 1 {
				t.Errorf("upstream requests %q, want 1: a cancel is never failed over", credIDs(reqs))
			}
			for _, id := range []string{"c1", "c2"} {
				eventually(t, 2*time.Second, id+"'s lease is done", func() bool { return e.credStatus(id).InFlight == 0 })
				if st := e.credStatus(id); st.State != pool.StateReady || st.Failures != 0 || st.ConsecutiveFailures != 0 || st.LastError != "" {
					t.Errorf("%s = %+v, want ready with no failure", id, st)
				}
			}
			// And it serves the next request at once.
			e.gw.SetBehavior("c1", fake.Behavior{})
			e.gw.SetBehavior("c2", fake.Behavior{})
			resp, b := e.chat(chatBody(""))
			checkCompletion(t, resp, b)
		})
	}
}

// TestRetryDeadlineBoundsStreamsNotCompletions: RETRY_DEADLINE bounds the
// wait for a stream's first event, but a non-streamed completion that takes
// longer than it to generate (the answer arrives whole) is not cut.
func TestRetryDeadlineBoundsStreamsNotCompletions(t *testing.T) {
	e := newEnv(t, envOptions{
		disp:     dispatch.Config{RetryDeadline: 300 * time.Millisecond},
		fakeOpts: fake.Options{Latency: 600 * time.Millisecond},
	})
	resp, body := e.chat(chatBody(""))
	if resp.StatusCode != http.StatusOK {
		t.Errorf("slow non-streamed completion: status %d (%s), want 200", resp.StatusCode, body)
	}
	resp, body = e.chat(chatBody(`"stream":true`))
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("stream without a first event within the deadline: status %d (%s), want 502", resp.StatusCode, body)
	}
}

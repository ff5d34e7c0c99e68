package api

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/internal/logtest"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

func TestStreamCutAfterFirstEvent(t *testing.T) {
	e := newEnv(t, envOptions{creds: []fake.Credential{
		testCred("c1", fake.Behavior{Fault: fake.CutMidStream, CutAfter: 2}),
	}})
	resp, body := e.chat(chatBody(`"stream":true`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s), want 200: the stream was committed", resp.StatusCode, body)
	}
	s := summarize(t, body)
	if s.done {
		t.Errorf("the broken stream ends with [DONE]:\n%s", body)
	}
	if s.errorEvent == "" || !strings.Contains(s.errorEvent, `"code":"stream_interrupted"`) || !strings.Contains(s.errorEvent, `"type":"server_error"`) {
		t.Errorf("error event = %q, want a server_error stream_interrupted event", s.errorEvent)
	}
	if len(s.chunks) == 0 {
		t.Errorf("no chunk before the error event")
	}
	if n := len(e.gw.Requests()); n != 1 {
		t.Errorf("upstream requests = %d, want 1: no failover after the commit", n)
	}
	eventually(t, 2*time.Second, "the credential records the broken stream", func() bool {
		st := e.credStatus("c1")
		return st.InFlight == 0 && st.Failures == 1
	})

	// The official client reports the error instead of a clean end (once the
	// credential's short back-off after the broken stream is over).
	eventually(t, 2*time.Second, "the credential is ready again", func() bool { return e.credStatus("c1").State == pool.StateReady })
	stream := e.client(e.token).Chat.Completions.NewStreaming(t.Context(), openai.ChatCompletionNewParams{
		Model: testModel, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
	})
	for stream.Next() {
	}
	if err := stream.Err(); err == nil || !strings.Contains(err.Error(), "stream_interrupted") {
		t.Errorf("client stream error = %v, want the proxy's error event", err)
	}
}

func TestStreamCutBeforeFirstEventFailsOver(t *testing.T) {
	e := newEnv(t, envOptions{creds: []fake.Credential{
		testCred("c1", fake.Behavior{Fault: fake.CutBeforeFirstEvent}),
		testCred("c2", fake.Behavior{}),
	}})
	for i := range 4 {
		resp, body := e.chat(chatBody(`"stream":true`))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status = %d (%s)", i, resp.StatusCode, body)
		}
		s := summarize(t, body)
		if !s.doneLast || s.errorEvent != "" || s.text != fake.DefaultText {
			t.Errorf("request %d: done last, error, text = %v, %q, %q; want a clean stream", i, s.doneLast, s.errorEvent, s.text)
		}
		time.Sleep(10 * time.Millisecond) // let c1's short back-off pass
	}
	cut := 0
	for _, r := range e.gw.Requests() {
		if r.Fault == fake.CutBeforeFirstEvent {
			cut++
		}
	}
	if cut == 0 {
		t.Errorf("c1 was never tried: the failover was not exercised")
	}
	if got := len(e.gw.RequestsFor("c2")); got != 4 {
		t.Errorf("c2 served %d requests, want 4", got)
	}
}

func TestStreamClientDisconnectCancelsUpstream(t *testing.T) {
	pieces := make([]string, 100)
	for i := range pieces {
		pieces[i] = "word "
	}
	e := newEnv(t, envOptions{creds: []fake.Credential{
		testCred("c1", fake.Behavior{Pieces: pieces, EventDelay: 100 * time.Millisecond}), // 10 s in all
	}})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/chat/completions", strings.NewReader(chatBody(`"stream":true`)))
	req.Header.Set("Authorization", "Bearer "+e.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	first := time.Now()
	for range 3 { // the role chunk, its blank line and a first piece: each is flushed at once
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatalf("read: %v", err)
		}
	}
	if d := time.Since(first); d > time.Second {
		t.Errorf("the first chunks took %s to arrive: not flushed", d)
	}
	if got := e.gw.Stats("c1").InFlight; got != 1 {
		t.Fatalf("upstream in flight = %d, want 1 while streaming", got)
	}
	start := time.Now()
	cancel()
	eventually(t, 2*time.Second, "the upstream request ended", func() bool { return e.gw.Stats("c1").InFlight == 0 })
	if d := time.Since(start); d > time.Second {
		t.Errorf("the upstream saw the cancel after %s", d)
	}
	eventually(t, 2*time.Second, "the lease is done", func() bool { return e.credStatus("c1").InFlight == 0 })
	st := e.credStatus("c1")
	if st.Failures != 0 || st.State != "ready" {
		t.Errorf("credential = %+v, want no penalty for a client that left", st)
	}
	reqs := e.gw.RequestsFor("c1")
	if len(reqs) != 1 {
		t.Errorf("upstream requests = %d, want 1", len(reqs))
	}
}

func TestStreamKeepAlive(t *testing.T) {
	e := newEnv(t, envOptions{
		cfg: Config{StreamKeepAlive: 20 * time.Millisecond},
		creds: []fake.Credential{
			testCred("c1", fake.Behavior{Pieces: []string{"slow ", "answer"}, EventDelay: 150 * time.Millisecond}),
		},
	})
	resp, body := e.chat(chatBody(`"stream":true`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s)", resp.StatusCode, body)
	}
	s := summarize(t, body)
	if s.keepAlives < 3 {
		t.Errorf("keep-alive comments = %d, want several during 450 ms of silence:\n%s", s.keepAlives, body)
	}
	if !s.doneLast || s.text != "slow answer" {
		t.Errorf("done last, text = %v, %q; want the whole answer", s.doneLast, s.text)
	}
	if !strings.Contains(string(body), "\n: keep-alive\n\n") {
		t.Errorf("body has no ': keep-alive' comment line:\n%s", body)
	}
}

// TestClientCancelBeforeCommit: a client that leaves while the upstream has
// not answered yet cancels the upstream call, and the credential is not blamed.
func TestClientCancelBeforeCommit(t *testing.T) {
	for _, stream := range []bool{false, true} {
		name := "not streamed"
		if stream {
			name = "streamed"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOptions{creds: []fake.Credential{testCred("c1", fake.Behavior{Fault: fake.Hang})}})
			ctx, cancel := context.WithCancel(t.Context())
			extra := ""
			if stream {
				extra = `"stream":true`
			}
			req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/chat/completions", strings.NewReader(chatBody(extra)))
			req.Header.Set("Authorization", "Bearer "+e.token)
			done := make(chan error, 1)
			go func() {
				resp, err := e.srv.Client().Do(req)
				if err == nil {
					resp.Body.Close()
				}
				done <- err
			}()
			eventually(t, 2*time.Second, "the upstream call started", func() bool { return e.gw.Stats("c1").InFlight == 1 })
			cancel()
			if err := <-done; err == nil {
				t.Errorf("the canceled request got a response")
			}
			eventually(t, 2*time.Second, "the upstream saw the cancel", func() bool { return e.gw.Stats("c1").InFlight == 0 })
			eventually(t, 2*time.Second, "the lease is done", func() bool { return e.credStatus("c1").InFlight == 0 })
			if st := e.credStatus("c1"); st.Failures != 0 || st.State != "ready" {
				t.Errorf("credential = %+v, want no penalty", st)
			}
		})
	}
}

// panickyTransport is a fault injector: the bodies of its responses panic
// on the first read after two complete SSE events have been delivered (the
// role event, then the first text event, which commits the stream), that
// is, on relay's reader goroutine.
type panickyTransport struct{ http.RoundTripper }

func (p panickyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := p.RoundTripper.RoundTrip(r)
	if err == nil && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		resp.Body = &panickyBody{ReadCloser: resp.Body}
	}
	return resp, err
}

type panickyBody struct {
	io.ReadCloser
	seen []byte
}

func (b *panickyBody) Read(p []byte) (int, error) {
	if bytes.Count(b.seen, []byte("\n\n")) >= 2 {
		panic("injected fault: reading the upstream stream")
	}
	n, err := b.ReadCloser.Read(p)
	b.seen = append(b.seen, p[:n]...)
	return n, err
}

// TestStreamReaderPanic: a panic while reading a committed stream ends the
// client's stream with an error event (not the process), is logged with
// its stack, and returns the lease as a broken stream.
func TestStreamReaderPanic(t *testing.T) {
	var logs logtest.Buffer
	e := newEnv(t, envOptions{
		logHandler: slog.NewJSONHandler(&logs, nil),
		creds:      []fake.Credential{testCred("c1", fake.Behavior{EventDelay: 20 * time.Millisecond})},
		transport:  func(rt http.RoundTripper) http.RoundTripper { return panickyTransport{rt} },
	})
	resp, body := e.chat(chatBody(`"stream":true`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s), want 200: the stream was committed", resp.StatusCode, body)
	}
	s := summarize(t, body)
	if s.done {
		t.Errorf("the stream ends with [DONE] after a panic:\n%s", body)
	}
	if !strings.Contains(s.errorEvent, `"code":"stream_interrupted"`) || !strings.Contains(s.errorEvent, `"type":"server_error"`) {
		t.Errorf("error event = %q, want a server_error stream_interrupted event", s.errorEvent)
	}
	if strings.Contains(string(body), "injected fault") || strings.Contains(string(body), "goroutine") {
		t.Errorf("the client sees the panic:\n%s", body)
	}
	eventually(t, 2*time.Second, "the lease is returned as a broken stream", func() bool {
		st := e.credStatus("c1")
		return st.InFlight == 0 && st.Failures == 1
	})
	eventually(t, 2*time.Second, "the panic is logged", func() bool {
		return strings.Contains(logs.String(), "panic in the stream reader")
	})
	var rec map[string]any
	if recs := logs.Messages(t, "panic in the stream reader"); len(recs) > 0 {
		rec = recs[len(recs)-1]
	}
	if rec["level"] != "ERROR" || rec["panic"] != "injected fault: reading the upstream stream" {
		t.Errorf("log record = %v, want level ERROR and the panic value", rec)
	}
	if stack, _ := rec["stack"].(string); !strings.Contains(stack, "panickyBody") {
		t.Errorf("logged stack does not show the panic site:\n%s", stack)
	}
	for _, secret := range []string{e.token, "atl-c1-secret"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the logs contain the secret %q", secret)
		}
	}
	// The server still serves (once the credential's short back-off after the
	// broken stream is over).
	eventually(t, 2*time.Second, "the credential is ready again", func() bool { return e.credStatus("c1").State == pool.StateReady })
	if resp, body := e.chat(chatBody("")); resp.StatusCode != http.StatusOK {
		t.Errorf("after the panic: status = %d (%s)", resp.StatusCode, body)
	}
}

package api

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkChatCompletion measures one non-streamed request through the
// whole handler (token check, decoding, dispatch, gateway client) to the
// fake gateway on loopback, and back.
func BenchmarkChatCompletion(b *testing.B) {
	e := newEnv(b, envOptions{})
	body := chatBody(`"max_tokens":64`)
	client := e.srv.Client()
	url := e.srv.URL + "/v1/chat/completions"
	b.ReportAllocs()
	for b.Loop() {
		req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status = %d", resp.StatusCode)
		}
	}
}

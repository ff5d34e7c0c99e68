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

// largeChatBody returns a chat request of about size bytes: a system
// message, then user and assistant turns alternating between string content
// and content-part lists, with a tool definition and tool_choice.
func largeChatBody(size int) []byte {
	var b strings.Builder
	b.WriteString(`{"model":"claude-sonnet-4","stream":true,"max_tokens":1024,"temperature":0.5,"stop":["END"],`)
	b.WriteString(`"tools":[{"type":"function","function":{"name":"lookup","description":"find a thing","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}],"tool_choice":"auto",`)
	b.WriteString(`"messages":[{"role":"system","content":"You are terse."}`)
	text := strings.Repeat(`lorem ipsum dolor sit amet, \"quoted\" \u00e9t\u00e9 été `, 20) // ~1 KiB
	for i := 0; b.Len() < size; i++ {
		switch i % 3 {
		case 0:
			b.WriteString(`,{"role":"user","content":"` + text + `"}`)
		case 1:
			b.WriteString(`,{"role":"assistant","content":[{"type":"text","text":"` + text + `"}]}`)
		default:
			b.WriteString(`,{"role":"user","content":[{"type":"text","text":"` + text + `"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}}]}`)
		}
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// BenchmarkDecodeChatRequest measures decoding and validating a request
// body: a small one and one of 1 MiB.
func BenchmarkDecodeChatRequest(b *testing.B) {
	for _, bc := range []struct {
		name string
		body []byte
	}{
		{"small", []byte(chatBody(`"max_tokens":64,"stream":true`))},
		{"1MiB", largeChatBody(1 << 20)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.body)))
			for b.Loop() {
				if _, aerr := decodeChatRequest(bc.body); aerr != nil {
					b.Fatal(aerr.message)
				}
			}
		})
	}
}

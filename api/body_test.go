package api

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/openaierr"
)

// stalledRequest sends a request on a raw loopback connection that
// declares a body of len(body) bytes, sends only its first half and then
// stalls, and returns the response, its body, how long it took and
// whether the server closed the connection after it.
func stalledRequest(t *testing.T, srvURL, path, token, body string) (*http.Response, []byte, time.Duration, bool) {
	t.Helper()
	u, err := url.Parse(srvURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second)) // the test's own bound
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", path, u.Host, len(body))
	if token != "" {
		head += "Authorization: Bearer " + token + "\r\n"
	}
	start := time.Now()
	if _, err := io.WriteString(conn, head+"\r\n"+body[:len(body)/2]); err != nil {
		t.Fatalf("write: %v", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read response body: %v", err)
	}
	took := time.Since(start)
	_, err = br.ReadByte()
	closed := errors.Is(err, io.EOF)
	return resp, b, took, closed
}

func TestSlowBodyTimesOut(t *testing.T) {
	const timeout = 200 * time.Millisecond
	e := newEnv(t, envOptions{cfg: Config{BodyReadTimeout: timeout}})
	resp, body, took, closed := stalledRequest(t, e.srv.URL, "/v1/chat/completions", e.token, chatBody(`"max_tokens":5`))
	checkError(t, resp, body, wantError{http.StatusRequestTimeout, openaierr.TypeInvalidRequest, "request_timeout", "", "not received within"})
	if took < timeout || took > timeout+2*time.Second {
		t.Errorf("the 408 came after %s, want about %s", took, timeout)
	}
	if !closed {
		t.Errorf("the connection stayed open after the 408: the rest of the body would be read as a request")
	}
	if n := len(e.gw.Requests()); n != 0 {
		t.Errorf("upstream requests = %d, want 0", n)
	}
}

// TestBodyDeadlineDoesNotCutStreams: the deadline covers the body only,
// so a stream that lasts many times BodyReadTimeout ends cleanly.
func TestBodyDeadlineDoesNotCutStreams(t *testing.T) {
	const timeout = 100 * time.Millisecond
	pieces := []string{"one ", "two ", "three ", "four ", "five"}
	e := newEnv(t, envOptions{
		cfg:   Config{BodyReadTimeout: timeout},
		creds: []fake.Credential{testCred("c1", fake.Behavior{Pieces: pieces, EventDelay: 2 * timeout})},
	})
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			start := time.Now()
			resp, body := e.do(request{method: http.MethodPost, path: "/v1/chat/completions", token: e.token,
				contentType: "-", body: chatBody(`"stream":true`), chunked: chunked})
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d (%s), want 200", resp.StatusCode, body)
			}
			s := summarize(t, body)
			if !s.doneLast || s.errorEvent != "" || s.text != strings.Join(pieces, "") {
				t.Errorf("done last, error, text = %v, %q, %q; want a clean stream of %q", s.doneLast, s.errorEvent, s.text, strings.Join(pieces, ""))
			}
			if d := time.Since(start); d < 4*timeout {
				t.Errorf("the stream took %s: too short to prove anything", d)
			}
		})
	}
}

// TestSlowBodyRefusedEarly: a request refused before its body is read (no
// token) is answered and its connection closed within BodyReadTimeout,
// though the body never completes: the server's drain of the unread body
// is bounded too.
func TestSlowBodyRefusedEarly(t *testing.T) {
	const timeout = 200 * time.Millisecond
	e := newEnv(t, envOptions{cfg: Config{BodyReadTimeout: timeout}})
	resp, body, took, closed := stalledRequest(t, e.srv.URL, "/v1/chat/completions", "", chatBody(""))
	checkError(t, resp, body, wantError{http.StatusUnauthorized, openaierr.TypeInvalidRequest, "invalid_api_key", "", "API key"})
	if took > timeout+2*time.Second {
		t.Errorf("the 401 came after %s, want at most about %s", took, timeout)
	}
	if !closed {
		t.Errorf("the connection stayed open with half a body unread")
	}
}

package adminui

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// TestSlowBodyTimesOut sends a login whose body stops half-way on a raw
// loopback connection: the admin API answers 408 in the OpenAI error
// shape after BodyReadTimeout and closes the connection.
func TestSlowBodyTimesOut(t *testing.T) {
	const timeout = 200 * time.Millisecond
	e := newEnv(t, envOptions{cfg: Config{BodyReadTimeout: timeout}})
	u, err := url.Parse(e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	body := `{"password":"` + testPassword + `"}`
	req := fmt.Sprintf("POST /admin/api/login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		u.Host, len(body), body[:len(body)/2])
	start := time.Now()
	if _, err := io.WriteString(conn, req); err != nil {
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
		t.Fatal(err)
	}
	took := time.Since(start)
	res := response{status: resp.StatusCode, header: resp.Header, body: b}
	wantError(t, res, http.StatusRequestTimeout, "request_timeout", "")
	var shape struct {
		Error map[string]json.RawMessage `json:"error"`
	}
	res.decode(t, &shape)
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := shape.Error[k]; !ok {
			t.Errorf("error body %s has no %q", b, k)
		}
	}
	if took < timeout || took > timeout+2*time.Second {
		t.Errorf("the 408 came after %s, want about %s", took, timeout)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("after the 408, read = %v; want EOF (connection closed)", err)
	}
}

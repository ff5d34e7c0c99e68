package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// do sends one command on a new connection (after AUTH when password is
// set) and returns the first line of the answer.
func do(t *testing.T, addr, password string, args ...string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var req bytes.Buffer
	if password != "" {
		writeCommand(&req, "AUTH", password)
	}
	writeCommand(&req, args...)
	if _, err := conn.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(conn)
	if password != "" {
		if line, err := rd.ReadString('\n'); err != nil || line != "+OK\r\n" {
			t.Fatalf("AUTH = %q, %v", line, err)
		}
	}
	line, err := rd.ReadString('\n')
	if err != nil {
		t.Fatalf("%v: read: %v", args, err)
	}
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "$") && line != "$-1" { // a bulk string: read its content
		val, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		line = strings.TrimSpace(val)
	}
	return line
}

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	if s.Port() == sharedPort {
		t.Fatalf("port = %d, the shared Redis port", s.Port())
	}
	if want := fmt.Sprintf("127.0.0.1:%d", s.Port()); s.Addr() != want {
		t.Errorf("Addr() = %q, want %q", s.Addr(), want)
	}
	if want := fmt.Sprintf("redis://127.0.0.1:%d/0", s.Port()); s.URL() != want {
		t.Errorf("URL() = %q, want %q", s.URL(), want)
	}
	if !s.Running() {
		t.Error("Running() = false after Start")
	}
	if got := do(t, s.Addr(), "", "SET", "k", "v"); got != "+OK" {
		t.Fatalf("SET = %q", got)
	}
	if got := do(t, s.Addr(), "", "GET", "k"); got != "v" {
		t.Fatalf("GET = %q, want v", got)
	}

	s.Stop(t)
	if s.Running() {
		t.Error("Running() = true after Stop")
	}
	if conn, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		conn.Close()
		t.Error("dial after Stop succeeded, want refused")
	}
	s.Stop(t) // a second Stop does nothing

	port := s.Port()
	s.Restart(t)
	if s.Port() != port {
		t.Errorf("port after Restart = %d, want %d", s.Port(), port)
	}
	if got := do(t, s.Addr(), "", "GET", "k"); got != "$-1" {
		t.Errorf("GET after Restart = %q, want nil (data lost)", got)
	}
	// Restart of a running server works too.
	do(t, s.Addr(), "", "SET", "k", "v")
	s.Restart(t)
	if got := do(t, s.Addr(), "", "GET", "k"); got != "$-1" {
		t.Errorf("GET after a second Restart = %q, want nil", got)
	}
	if entries, err := os.ReadDir(s.dir); err != nil || len(entries) != 0 {
		t.Errorf("files in the server's dir = %v, %v; want none", entries, err)
	}
}

func TestTwoServers(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Port() == b.Port() {
		t.Fatalf("both servers on port %d", a.Port())
	}
	do(t, a.Addr(), "", "SET", "k", "a")
	if got := do(t, b.Addr(), "", "GET", "k"); got != "$-1" {
		t.Errorf("GET on the other server = %q, want nil", got)
	}
}

func TestPassword(t *testing.T) {
	const pw = "s3cret with spaces"
	s := StartWith(t, Config{Password: pw})
	if s.Password() != pw {
		t.Errorf("Password() = %q", s.Password())
	}
	if strings.Contains(s.URL(), pw) {
		t.Errorf("URL() = %q carries the password", s.URL())
	}
	if got := do(t, s.Addr(), "", "PING"); !strings.HasPrefix(got, "-NOAUTH") {
		t.Errorf("PING without AUTH = %q, want -NOAUTH", got)
	}
	if got := do(t, s.Addr(), pw, "PING"); got != "+PONG" {
		t.Errorf("PING after AUTH = %q, want +PONG", got)
	}
	s.Restart(t) // waits for readiness with the password as well
	if got := do(t, s.Addr(), pw, "PING"); got != "+PONG" {
		t.Errorf("PING after Restart = %q, want +PONG", got)
	}
}

// TestMissingBinary runs this test binary again with an empty PATH: the
// helper must fail the test, with instructions, and never skip it.
func TestMissingBinary(t *testing.T) {
	if os.Getenv("REDISTEST_MISSING_BINARY") == "1" {
		Start(t)
		t.Log("Start returned without redis-server")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMissingBinary$", "-test.v")
	cmd.Env = append(os.Environ(), "REDISTEST_MISSING_BINARY=1", "PATH="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the test passed without redis-server; output:\n%s", out)
	}
	for _, want := range []string{"--- FAIL: TestMissingBinary", "redis-server is not on PATH", "./scripts/test", "apt-get install redis-server"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if bytes.Contains(out, []byte("SKIP")) {
		t.Errorf("the test was skipped:\n%s", out)
	}
}

// TestPause: during a pause the server takes connections but serves no
// command; the channel tells when it served again. With a password the
// helper authenticates before the pause (AUTH would wait too).
func TestPause(t *testing.T) {
	const pw = "pause-pw"
	s := StartWith(t, Config{Password: pw})
	do(t, s.Addr(), pw, "SET", "k", "v")
	const pause = 400 * time.Millisecond
	start := time.Now()
	ended := s.Pause(t, pause)
	if got := do(t, s.Addr(), pw, "GET", "k"); got != "v" {
		t.Errorf("GET after the pause = %q, want v (nothing lost)", got)
	}
	if took := time.Since(start); took < pause-50*time.Millisecond {
		t.Errorf("GET during a pause of %v answered after %v", pause, took)
	}
	end, ok := <-ended
	if !ok {
		t.Fatal("the pause's channel closed without the time it ended")
	}
	if end.Before(start.Add(pause-50*time.Millisecond)) || end.After(time.Now()) {
		t.Errorf("the pause ended %v after it began, want about %v", end.Sub(start), pause)
	}
	if _, ok := <-ended; ok {
		t.Error("the pause's channel sent twice")
	}
}

// TestPauseFails runs this test binary again to see Pause fail the test,
// not return, when the server does not answer, and refuse a pause shorter
// than a millisecond.
func TestPauseFails(t *testing.T) {
	switch os.Getenv("REDISTEST_PAUSE_FAILS") {
	case "stopped":
		s := Start(t)
		s.Stop(t)
		s.Pause(t, time.Second)
		t.Log("Pause returned")
		return
	case "short":
		Start(t).Pause(t, time.Microsecond)
		t.Log("Pause returned")
		return
	}
	for mode, want := range map[string]string{"stopped": "redistest: pause: dial tcp", "short": "at least a millisecond"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPauseFails$", "-test.v")
		cmd.Env = append(os.Environ(), "REDISTEST_PAUSE_FAILS="+mode)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%s: the test passed; output:\n%s", mode, out)
		}
		if !bytes.Contains(out, []byte(want)) || bytes.Contains(out, []byte("Pause returned")) {
			t.Errorf("%s: output lacks %q or Pause returned:\n%s", mode, want, out)
		}
	}
}

package main

import (
	"errors"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestShutdownDelay: after SIGTERM /ready answers 503 at once while new
// connections are still accepted for SHUTDOWN_DELAY (so a load balancer
// stops routing here first); then the listener closes and the process
// exits 0.
func TestShutdownDelay(t *testing.T) {
	p := startProxy(t, map[string]string{"SHUTDOWN_DELAY": "2s"})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	eventually(t, time.Second, "/ready answers 503 after SIGTERM", func() bool {
		code, _ := readyBody(t, p.URL)
		return code == http.StatusServiceUnavailable
	})
	// A new connection (keep-alives off) is still served during the delay.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get(p.URL + "/v1/models")
	if err != nil {
		t.Fatalf("a new connection during the shutdown delay was refused: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v1/models during the delay: %d", resp.StatusCode)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("no exit within 30 s of SIGTERM")
	}
	if waited := time.Since(sent); waited < 2*time.Second {
		t.Errorf("exited %s after SIGTERM, before the 2 s delay was over", waited)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if _, err := hc.Get(p.URL + "/health"); err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("after exit: err %v, want connection refused", err)
	}
}

// TestInterruptSkipsDelay: Ctrl-C (SIGINT) in a terminal drains at once,
// without the SHUTDOWN_DELAY meant for load balancers; and a second signal
// ends the process without waiting at all.
func TestInterruptSkipsDelay(t *testing.T) {
	p := startProxy(t, map[string]string{"SHUTDOWN_DELAY": "60s"})
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("SIGINT waited for the 60 s SHUTDOWN_DELAY")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code after SIGINT %d, want 0", code)
	}

	q := startProxy(t, map[string]string{"SHUTDOWN_DELAY": "60s"})
	if err := q.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "/ready answers 503 after SIGTERM", func() bool {
		code, _ := readyBody(t, q.URL)
		return code == http.StatusServiceUnavailable
	})
	if err := q.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.done:
	case <-time.After(20 * time.Second):
		t.Fatal("a second SIGTERM did not end the process")
	}
	if code := q.cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit code after a second signal %d, want 130", code)
	}
	if !strings.Contains(q.Stderr.String(), "second signal") {
		t.Errorf("no word about the second signal in the log:\n%s", q.Stderr)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/internal/logtest"
)

// binary is the atlassian-proxy executable the end-to-end tests run: built
// once by TestMain from this package, with -race when the tests use it.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "atlassian-proxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "atlassian-proxy")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the binary under test:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proxy is a running atlassian-proxy process.
type proxy struct {
	cmd        *exec.Cmd
	URL        string
	MetricsURL string
	DataDir    string
	WorkDir    string // the process's working directory, empty at start
	Stdout     *logtest.Buffer
	Stderr     *logtest.Buffer
	done       chan struct{}
	waitErr    error
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startProxy runs the binary with env (PORT, HOST and, unless given,
// DATA_DIR are set here) and waits until /health answers.
func startProxy(t *testing.T, env map[string]string, args ...string) *proxy {
	t.Helper()
	p := spawnProxy(t, env, args...)
	p.waitHealthy(t)
	return p
}

// spawnProxy starts the binary like startProxy without waiting for it.
func spawnProxy(t *testing.T, env map[string]string, args ...string) *proxy {
	t.Helper()
	port := freePort(t)
	p := &proxy{URL: "http://127.0.0.1:" + strconv.Itoa(port), Stdout: &logtest.Buffer{}, Stderr: &logtest.Buffer{}, done: make(chan struct{})}
	p.MetricsURL = "http://127.0.0.1:" + strconv.Itoa(freePort(t)) + "/metrics"
	full := map[string]string{"PORT": strconv.Itoa(port), "HOST": "127.0.0.1", "LOG_FORMAT": "json",
		"METRICS_ADDR":   strings.TrimSuffix(strings.TrimPrefix(p.MetricsURL, "http://"), "/metrics"),
		"SHUTDOWN_DELAY": "0s"}
	if _, ok := env["DATA_DIR"]; !ok {
		full["DATA_DIR"] = t.TempDir()
	}
	for k, v := range env {
		full[k] = v
	}
	p.DataDir = full["DATA_DIR"]
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = environ(full)
	// An empty working directory of its own: a test can check that nothing
	// is written outside DATA_DIR (as the original tool wrote its database
	// outside its container volume).
	p.WorkDir = t.TempDir()
	p.cmd.Dir = p.WorkDir
	p.cmd.Stdout, p.cmd.Stderr = p.Stdout, p.Stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("proxy %s stdout:\n%s\nproxy stderr:\n%s", p.URL, p.Stdout, p.Stderr)
		}
	})
	return p
}

// waitHealthy waits until /health answers 200.
func (p *proxy) waitHealthy(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("proxy exited early: %v\nstderr:\n%s", p.waitErr, p.Stderr)
		default:
		}
		resp, err := http.Get(p.URL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("proxy did not become healthy\nstderr:\n%s", p.Stderr)
}

// stop sends SIGTERM and returns the exit code.
func (p *proxy) stop(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("proxy did not stop within 30 s of SIGTERM")
	}
	return p.cmd.ProcessState.ExitCode()
}

var passwordLine = regexp.MustCompile(`(?m)^\s+(\S{12,})\s*$`)

// generatedPassword reads the password the first start printed.
func (p *proxy) generatedPassword(t *testing.T) string {
	t.Helper()
	out := p.Stdout.String()
	i := strings.Index(out, "Generated admin password")
	if i < 0 {
		t.Fatalf("no generated password printed; stdout:\n%s", out)
	}
	m := passwordLine.FindStringSubmatch(out[i:])
	if m == nil {
		t.Fatalf("cannot find the password line; stdout:\n%s", out)
	}
	return m[1]
}

func environ(vars map[string]string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	return env
}

// cli runs a subcommand of the binary and returns stdout, stderr and the exit code.
func cli(t *testing.T, env map[string]string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	stdout, stderr, code, err := runCLI(60*time.Second, env, stdin, args...)
	if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return stdout, stderr, code
}

// runCLI runs the binary with env and stdin, killed after timeout. err is
// set when it could not run or was killed (then code is -1); an exit
// status other than 0 is not an error.
func runCLI(timeout time.Duration, env map[string]string, stdin string, args ...string) (stdout, stderr string, code int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = environ(env)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		err = fmt.Errorf("still running after %s", timeout)
	case errors.As(err, &ee):
		err = nil
	}
	code = -1
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	return out.String(), errOut.String(), code, err
}

// admin is a logged-in admin API client.
type admin struct {
	t    *testing.T
	base string
	hc   *http.Client
	csrf string
}

func login(t *testing.T, base, password string) (*admin, map[string]any) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	a := &admin{t: t, base: base, hc: &http.Client{Jar: jar}}
	status, body := a.do("POST", "/admin/api/login", map[string]string{"password": password})
	if status != http.StatusOK {
		t.Fatalf("login: status %d, body %s", status, body)
	}
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	a.csrf, _ = out["csrf_token"].(string)
	return a, out
}

func (a *admin) do(method, path string, body any) (int, []byte) {
	a.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.base+path, r)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.csrf != "" {
		req.Header.Set("X-CSRF-Token", a.csrf)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// eventually retries cond every 50 ms until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Package redistest runs real redis-server processes for tests: each Server
// is a private, throw-away instance on a free loopback port, with no
// persistence, stopped when the test ends. It never uses the default port
// 6379, so a Redis shared by the machine is never touched.
//
// redis-server must be on PATH (./scripts/test installs it); a test that
// needs it fails, rather than skips, when it is missing.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// startTimeout bounds the wait for a new server to answer PING.
	startTimeout = 10 * time.Second
	// portAttempts is how often Start tries another port when the one it
	// picked was taken before redis-server could bind it.
	portAttempts = 5
	// logLimit is how much of the server's output is kept for failure
	// messages (the end of it).
	logLimit = 32 << 10
	// sharedPort is the default Redis port, never used here.
	sharedPort = 6379
)

// Config are the options of StartWith. The zero value is what Start uses.
type Config struct {
	// Password, when set, is required from clients (--requirepass).
	Password string
}

// Server is one redis-server process. Its methods may be called from
// several goroutines.
type Server struct {
	bin      string
	dir      string
	port     int
	password string

	mu   sync.Mutex
	done chan struct{} // closed when the current process has exited; nil: stopped
	proc *exec.Cmd
}

// Start starts a redis-server for tb and stops it when tb ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartWith(tb, Config{})
}

// StartWith is Start with options.
func StartWith(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatal("redistest: redis-server is not on PATH; run ./scripts/test (it installs it) or apt-get install redis-server")
	}
	s := &Server{bin: bin, dir: tb.TempDir(), password: cfg.Password}
	var errs []error
	for range portAttempts {
		if s.port, err = freePort(); err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		err = s.launch()
		if err == nil {
			tb.Cleanup(func() { s.Stop(tb) })
			return s
		}
		errs = append(errs, err)
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	tb.Fatalf("redistest: start redis-server: %v", errors.Join(errs...))
	return nil
}

// Addr returns the server's "127.0.0.1:port".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the server's port.
func (s *Server) Port() int { return s.port }

// URL returns "redis://127.0.0.1:port/0". It carries no password, even when
// the server requires one (see Password).
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Password returns the password the server requires, or "".
func (s *Server) Password() string { return s.password }

// Stop kills the server (as a crash would) and waits for it to exit. It does
// nothing when the server is already stopped.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

// Restart stops the server if it runs and starts a new one on the same port.
// Nothing is persisted, so the new server is empty: the data is lost, as
// when a Redis without persistence restarts.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	s.stopLocked()
	s.mu.Unlock()
	// The port was ours a moment ago; someone may grab it in between, which
	// is unlikely and reported.
	var err error
	for range portAttempts {
		if err = s.launch(); !errors.Is(err, errPortTaken) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		tb.Fatalf("redistest: restart redis-server on port %d: %v", s.port, err)
	}
}

// Pause stalls the server for d, as a Redis busy with a long command or
// stuck on a slow disk would: it sends CLIENT PAUSE <d> ALL, so
// connections stay open and new ones are accepted, but no client's command
// (not even PING) is served until the pause ends; nothing is lost. It
// returns once the pause is in effect. The channel it returns receives the
// time at which the server served a client again (the answer to a PING
// sent during the pause), then closes; it closes without a value when that
// PING got no answer within d + startTimeout.
func (s *Server) Pause(tb testing.TB, d time.Duration) <-chan time.Time {
	tb.Helper()
	ms := d.Milliseconds()
	if ms < 1 {
		tb.Fatalf("redistest: pause for %v: at least a millisecond", d)
	}
	ctl, err := s.dial()
	if err != nil {
		tb.Fatalf("redistest: pause: %v", err)
	}
	defer ctl.Close()
	// The probe authenticates now: during the pause AUTH waits too.
	probe, err := s.dial()
	if err != nil {
		tb.Fatalf("redistest: pause: %v", err)
	}
	tb.Cleanup(func() { _ = probe.Close() })
	if err := ctl.conn.SetDeadline(time.Now().Add(startTimeout)); err != nil {
		tb.Fatalf("redistest: pause: %v", err)
	}
	if err := ctl.command("+OK", "CLIENT", "PAUSE", strconv.FormatInt(ms, 10), "ALL"); err != nil {
		tb.Fatalf("redistest: pause: %v", err)
	}
	ended := make(chan time.Time, 1)
	go func() {
		defer close(ended)
		if err := probe.conn.SetDeadline(time.Now().Add(d + startTimeout)); err != nil {
			return
		}
		if probe.command("+PONG", "PING") == nil {
			ended <- time.Now()
		}
	}()
	return ended
}

// Running reports whether the server process is alive.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

func (s *Server) stopLocked() {
	if s.done == nil {
		return
	}
	_ = s.proc.Process.Kill() // fails only when it already exited
	<-s.done
	s.done, s.proc = nil, nil
}

var errPortTaken = errors.New("port taken")

// launch starts redis-server on s.port and waits until it answers PING.
func (s *Server) launch() error {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--dir", s.dir,
		"--logfile", "",
	}
	if s.password != "" {
		args = append(args, "--requirepass", s.password)
	}
	log := &tailBuffer{limit: logLimit}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr()

	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The death signal of the child follows the thread that started
		// it: this goroutine keeps the thread until the server exits.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
	}()
	if err := <-started; err != nil {
		<-done
		return err
	}
	s.mu.Lock()
	s.proc, s.done = cmd, done
	s.mu.Unlock()

	err := s.waitReady(done)
	if err == nil {
		return nil
	}
	s.mu.Lock()
	s.stopLocked()
	s.mu.Unlock()
	if strings.Contains(log.String(), "Address already in use") {
		return fmt.Errorf("%w: port %d: %w", errPortTaken, s.port, err)
	}
	return fmt.Errorf("%w\nredis-server output:\n%s", err, log.String())
}

// waitReady polls the server with PING (after AUTH when it needs a
// password) until it answers PONG, it exits, or startTimeout passes.
func (s *Server) waitReady(exited <-chan struct{}) error {
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("redis-server exited")
		default:
		}
		if last = s.ping(); last == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("redis-server did not answer PING within %v: %w", startTimeout, last)
}

// ping sends PING on a new connection and expects +PONG.
func (s *Server) ping() error {
	c, err := s.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	return c.command("+PONG", "PING")
}

// client is one connection to the server.
type client struct {
	conn net.Conn
	rd   *bufio.Reader
}

// dial connects to the server, and authenticates when it needs a password.
func (s *Server) dial() (*client, error) {
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return nil, err
	}
	c := &client{conn: conn, rd: bufio.NewReader(conn)}
	if s.password == "" {
		return c, nil
	}
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.command("+OK", "AUTH", s.password); err != nil {
		conn.Close()
		// The server's answer, never the command: it holds the password.
		return nil, fmt.Errorf("AUTH: %w", err)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *client) Close() error { return c.conn.Close() }

// command sends a command and expects want as the answer's line.
func (c *client) command(want string, args ...string) error {
	var req bytes.Buffer
	writeCommand(&req, args...)
	if _, err := c.conn.Write(req.Bytes()); err != nil {
		return err
	}
	line, err := c.rd.ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimSpace(line); line != want {
		return fmt.Errorf("%s answered %q", args[0], line)
	}
	return nil
}

// writeCommand writes a command as a RESP array of bulk strings.
func writeCommand(b *bytes.Buffer, args ...string) {
	fmt.Fprintf(b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(b, "$%d\r\n%s\r\n", len(a), a)
	}
}

// freePort returns a loopback port that was free a moment ago, never the
// shared Redis port.
func freePort() (int, error) {
	for range 10 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if err := l.Close(); err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		if port != sharedPort {
			return port, nil
		}
	}
	return 0, errors.New("find a free port: only got the shared Redis port")
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	mu    sync.Mutex
	limit int
	buf   []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.limit; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

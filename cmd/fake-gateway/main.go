// Command fake-gateway serves the fake Atlassian AI Gateway (gateway/fake)
// for local demos: point atlassian-proxy's UPSTREAM_URL at it.
//
//	go run ./cmd/fake-gateway -addr 127.0.0.1:9999 -cred me@example.com:secret-token
//
// Each -cred email:token[:fault] registers a credential; the optional fault
// (e.g. rate_limit_minute, unauthorized, cut_mid_stream) is its permanent
// behaviour. Without -cred, demo@example.com:demo-token is registered.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "fake-gateway:", err)
		os.Exit(1)
	}
}

// credFlags collects repeated -cred values.
type credFlags []fake.Credential

func (c *credFlags) String() string { return fmt.Sprintf("%d credentials", len(*c)) }

func (c *credFlags) Set(v string) error {
	email, rest, ok := strings.Cut(v, ":")
	if !ok || email == "" || rest == "" {
		return errors.New("want email:token[:fault]")
	}
	token, faultName, _ := strings.Cut(rest, ":")
	if token == "" {
		return errors.New("want email:token[:fault]")
	}
	f, err := fake.ParseFault(faultName)
	if faultName != "" && err != nil {
		return err
	}
	*c = append(*c, fake.Credential{Email: email, Token: token, Default: fake.Behavior{Fault: f}})
	return nil
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("fake-gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9999", "listen address")
	latency := fs.Duration("latency", 0, "delay before every answer")
	eventDelay := fs.Duration("event-delay", 50*time.Millisecond, "delay between stream events")
	text := fs.String("text", fake.DefaultText, "answer text")
	anyModel := fs.Bool("any-model", false, "accept any upstream model id")
	var creds credFlags
	fs.Var(&creds, "cred", "credential email:token[:fault] (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(creds) == 0 {
		creds = credFlags{{Email: "demo@example.com", Token: "demo-token"}}
	}
	for i := range creds {
		creds[i].Default.EventDelay = *eventDelay
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	g := fake.New(fake.Options{Credentials: creds, Latency: *latency, Text: *text, AnyModel: *anyModel})
	defer g.Close()

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: logRequests(logger, g), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	for _, c := range creds {
		fault := string(c.Default.Fault)
		if fault == "" {
			fault = "ok"
		}
		logger.Info("credential", "email", c.Email, "fault", fault)
	}
	logger.Info("fake Atlassian gateway listening", "url", "http://"+ln.Addr().String())

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	g.Close() // release hanging requests so that Shutdown can finish
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// logRequests logs one line per request (never its headers: they carry credentials).
func logRequests(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		next.ServeHTTP(w, r)
		logger.Info("request", "method", r.Method, "path", r.URL.Path, "duration", time.Since(start).Round(time.Microsecond))
	})
}

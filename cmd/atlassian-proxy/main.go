package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sync/atomic"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

const usageText = `atlassian-proxy: an OpenAI-compatible API in front of the Atlassian AI Gateway

Usage:
  atlassian-proxy [serve] [flags]              run the server (the default)
  atlassian-proxy credential add|list|remove|enable|disable|reset
                                               manage Atlassian credentials
  atlassian-proxy token create|list|revoke     manage client API tokens
  atlassian-proxy reset-password               set and print a new random admin password
  atlassian-proxy export [FILE]                write the whole store as JSON (secrets stay sealed)
  atlassian-proxy import FILE | --clear-loss   load an export into the configured store (clears a recorded
                                               Redis data loss)
  atlassian-proxy rotate-key                   re-seal stored secrets from SECRET_KEY to NEW_SECRET_KEY
  atlassian-proxy version                      print the version

Run "atlassian-proxy <command> --help" for the flags of a command (serve's: the server's settings).
Every flag has an environment variable; see the README.
`

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	// Lives as long as the process: the first signal starts the drain, a
	// second one ends the process. sigs holds 2 (signal.Notify drops what
	// does not fit; a third signal has nothing left to do).
	go func() {
		sig := <-sigs
		// Ctrl-C in a terminal: nobody's load balancer needs the
		// SHUTDOWN_DELAY; drain at once.
		interrupted.Store(sig == os.Interrupt)
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "second signal: exiting without waiting for requests in flight")
		os.Exit(130)
	}()
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdin, os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}

// interrupted is set when the stop came from SIGINT (Ctrl-C) rather than
// SIGTERM (an orchestrator): the server then skips SHUTDOWN_DELAY.
var interrupted atomic.Bool

// env is the process environment as seen by run (tests pass their own).
type env struct {
	lookupEnv func(string) (string, bool)
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
}

func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) int {
	e := env{lookupEnv: lookupEnv, stdin: stdin, stdout: stdout, stderr: stderr}
	cmd, rest := "serve", args
	switch {
	case len(args) == 1 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help"):
		// The overview, not only serve's flags: "serve --help" has those.
		cmd, rest = "help", nil
	case len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-':
		cmd, rest = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, e, rest)
	case "credential", "credentials":
		err = credentialCmd(ctx, e, rest)
	case "token", "tokens":
		err = tokenCmd(ctx, e, rest)
	case "reset-password":
		err = resetPasswordCmd(ctx, e, rest)
	case "export":
		err = exportCmd(ctx, e, rest)
	case "import":
		err = importCmd(ctx, e, rest)
	case "rotate-key":
		err = rotateKeyCmd(ctx, e, rest)
	case "version":
		fmt.Fprintln(stdout, "atlassian-proxy", buildVersion())
	case "help":
		fmt.Fprint(stdout, usageText)
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", cmd, usageText)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "error:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
}

// getenv is the value of an environment variable, "" when unset.
func (e env) getenv(key string) string {
	v, _ := e.lookupEnv(key)
	return v
}

// errUsage marks errors in how a command was called (exit status 2).
var errUsage = errors.New("usage")

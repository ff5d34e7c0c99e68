package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/schematest"
)

// TestFirstStartAndRestart: a fresh DATA_DIR gets a generated admin password
// printed once, which must be changed at first login; the key file is 0600;
// SIGTERM exits 0; a restart keeps the password and prints nothing.
func TestFirstStartAndRestart(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "nested", "data") // like a container's /data volume
	p := startProxy(t, map[string]string{"DATA_DIR": dataDir})
	pw := p.generatedPassword(t)
	if strings.Contains(p.Stderr.String(), pw) {
		t.Error("the generated password reached the log")
	}
	_, body := login(t, p.URL, pw)
	if body["must_change_password"] != true {
		t.Errorf("must_change_password = %v, want true", body["must_change_password"])
	}
	// The admin API shares the access log (and request ids, metrics) of the OpenAI routes.
	eventually(t, 2*time.Second, "the admin login is in the access log", func() bool {
		return strings.Contains(p.Stderr.String(), `"route":"/admin/api/login"`)
	})
	if code := p.stop(t); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}

	for name, want := range map[string]fs.FileMode{dbFileName: 0, keyFileName: 0o600} {
		st, err := os.Stat(filepath.Join(dataDir, name))
		if err != nil {
			t.Fatalf("%s not in DATA_DIR: %v", name, err)
		}
		if want != 0 && st.Mode().Perm() != want {
			t.Errorf("%s mode = %v, want %v", name, st.Mode().Perm(), want)
		}
	}

	// Everything the server keeps is in DATA_DIR (the container's /data
	// volume): nothing was written to its working directory.
	if left, err := os.ReadDir(p.WorkDir); err != nil || len(left) != 0 {
		t.Errorf("the server wrote outside DATA_DIR, in its working directory: %v %v", left, err)
	}
	entries, _ := os.ReadDir(dataDir)
	for _, e := range entries {
		if n := e.Name(); n != dbFileName && n != keyFileName && !strings.HasPrefix(n, dbFileName+"-") {
			t.Errorf("unexpected file in DATA_DIR: %s", n)
		}
	}

	p2 := startProxy(t, map[string]string{"DATA_DIR": dataDir})
	if strings.Contains(p2.Stdout.String(), "Generated admin password") {
		t.Error("a restart printed a new password")
	}
	login(t, p2.URL, pw) // still valid
}

// TestAdminPasswordFromEnv: ADMIN_PASSWORD is used as is, nothing is printed
// and it need not be changed.
func TestAdminPasswordFromEnv(t *testing.T) {
	const pw = "correct horse battery staple"
	p := startProxy(t, map[string]string{"ADMIN_PASSWORD": pw})
	if strings.Contains(p.Stdout.String(), "Generated admin password") {
		t.Error("a password was generated although ADMIN_PASSWORD is set")
	}
	_, body := login(t, p.URL, pw)
	if body["must_change_password"] != false {
		t.Errorf("must_change_password = %v, want false", body["must_change_password"])
	}
	if strings.Contains(p.Stderr.String()+p.Stdout.String(), pw) {
		t.Error("ADMIN_PASSWORD reached the output")
	}
}

// TestCLIWhileServing: credentials and tokens added with the CLI while the
// server runs serve requests within 2 s; a revoked token is refused within 2 s.
// The requests go through the official OpenAI client, and the raw bodies
// are checked against OpenAI's published schemas.
func TestCLIWhileServing(t *testing.T) {
	const atlToken = "ATATT-canary-credential-token-1234567890"
	gw := fake.Start(t, fake.Options{Credentials: []fake.Credential{{Email: "dev@example.com", Token: atlToken}}})
	p := startProxy(t, map[string]string{"UPSTREAM_URL": gw.URL})
	env := map[string]string{"DATA_DIR": p.DataDir}

	out, errOut, code := cli(t, env, atlToken+"\n", "credential", "add", "--email", "dev@example.com", "--token", "-", "--label", "dev")
	if code != 0 {
		t.Fatalf("credential add: exit %d, stderr %s", code, errOut)
	}
	if !strings.Contains(out, "added credential cred_") {
		t.Errorf("credential add printed %q", out)
	}
	out, _, code = cli(t, env, "", "credential", "list")
	if code != 0 || !strings.Contains(out, "dev@example.com") || strings.Contains(out, atlToken) {
		t.Errorf("credential list: exit %d, output %q (must list the email, never the token)", code, out)
	}
	token, errOut, code := cli(t, env, "", "token", "create", "--name", "e2e")
	token = strings.TrimSpace(token)
	if code != 0 || !strings.HasPrefix(token, "sk-ap-") {
		t.Fatalf("token create: exit %d, token %q, stderr %s", code, token, errOut)
	}

	client := openai.NewClient(option.WithBaseURL(p.URL+"/v1/"), option.WithAPIKey(token), option.WithMaxRetries(0))
	params := openai.ChatCompletionNewParams{
		Model:    "anthropic:claude-sonnet-4@20250514",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("Hello")},
	}
	ctx := context.Background()
	took := eventually(t, 2*time.Second, "a CLI-added credential and token serve a request", func() bool {
		_, err := client.Chat.Completions.New(ctx, params)
		return err == nil
	})
	t.Logf("CLI changes served after %s", took)

	completion, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	schematest.Validate(t, schematest.ChatCompletion, []byte(completion.RawJSON()))
	if got := completion.Choices[0].Message.Content; got != fake.DefaultText {
		t.Errorf("content = %q, want %q", got, fake.DefaultText)
	}
	if completion.Usage.TotalTokens == 0 {
		t.Error("usage is missing")
	}
	last, ok := gw.LastRequest()
	if !ok || last.Model != "claude-sonnet-4@20250514" {
		t.Errorf("upstream model = %q, want claude-sonnet-4@20250514", last.Model)
	}
	if ua := last.Header.Get("User-Agent"); !strings.HasPrefix(ua, "atlassian-proxy/") {
		t.Errorf("User-Agent = %q, want atlassian-proxy/…", ua)
	}

	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	var text strings.Builder
	var sawUsage bool
	for stream.Next() {
		chunk := stream.Current()
		schematest.Validate(t, schematest.ChatCompletionChunk, []byte(chunk.RawJSON()))
		for _, c := range chunk.Choices {
			text.WriteString(c.Delta.Content)
		}
		sawUsage = sawUsage || chunk.Usage.TotalTokens > 0
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != fake.DefaultText || !sawUsage {
		t.Errorf("stream text = %q, usage seen = %v", text.String(), sawUsage)
	}

	// Disable the only credential from the CLI: requests get 503 no_credentials
	// within 2 s; enable it again: they are served again.
	var creds []struct{ ID string }
	out, _, _ = cli(t, env, "", "credential", "list", "--json")
	if err := json.Unmarshal([]byte(out), &creds); err != nil || len(creds) != 1 {
		t.Fatalf("credential list --json = %q (%v)", out, err)
	}
	for _, step := range []struct {
		verb   string
		status int
	}{{"disable", http.StatusServiceUnavailable}, {"enable", http.StatusOK}} {
		if _, errOut, code := cli(t, env, "", "credential", step.verb, creds[0].ID); code != 0 {
			t.Fatalf("credential %s: exit %d: %s", step.verb, code, errOut)
		}
		eventually(t, 2*time.Second, "credential "+step.verb+" takes effect", func() bool {
			_, err := client.Chat.Completions.New(ctx, params)
			if step.status == http.StatusOK {
				return err == nil
			}
			var apiErr *openai.Error
			return errors.As(err, &apiErr) && apiErr.StatusCode == step.status
		})
	}

	var listed []struct{ ID, Name string }
	out, _, _ = cli(t, env, "", "token", "list", "--json")
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed) != 1 {
		t.Fatalf("token list --json = %q (%v)", out, err)
	}
	if strings.Contains(out, token) {
		t.Error("token list shows the token")
	}
	if _, errOut, code := cli(t, env, "", "token", "revoke", listed[0].ID); code != 0 {
		t.Fatalf("token revoke: exit %d: %s", code, errOut)
	}
	took = eventually(t, 2*time.Second, "a revoked token is refused", func() bool {
		_, err := client.Chat.Completions.New(ctx, params)
		var apiErr *openai.Error
		return errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusUnauthorized
	})
	t.Logf("revocation effective after %s", took)

	// Metrics: on their own listener only, labelled by credential id, never a secret or an email.
	resp, err := http.Get(p.MetricsURL)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"atlassian_proxy_upstream_attempts_total", "atlassian_proxy_http_requests_total", "atlassian_proxy_build_info"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, secret := range []string{atlToken, token, "dev@example.com"} {
		if strings.Contains(string(metrics), secret) {
			t.Errorf("metrics contain %q", secret)
		}
	}
	if resp, err := http.Get(p.URL + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET /metrics on the public port: %d, want 404", resp.StatusCode)
		}
	}

	logs := p.Stdout.String() + p.Stderr.String()
	for _, secret := range []string{atlToken, token} {
		if strings.Contains(logs, secret) {
			t.Errorf("a secret reached the server output")
		}
	}
}

// TestBadConfiguration: a bad value stops start-up with exit code 2 and a
// message naming the variable, never echoing a secret.
func TestBadConfiguration(t *testing.T) {
	cases := []struct{ name, env, value, want string }{
		{"port", "PORT", "eighty", "PORT"},
		{"port range", "PORT", "70000", "PORT"},
		{"log level", "LOG_LEVEL", "loud", "LOG_LEVEL"},
		{"log format", "LOG_FORMAT", "xml", "LOG_FORMAT"},
		{"upstream", "UPSTREAM_URL", "ftp://example.com", "UPSTREAM_URL"},
		{"secret key", "SECRET_KEY", "c2hvcnQtc2VjcmV0LWtleQ==", "SECRET_KEY"},
		{"admin password", "ADMIN_PASSWORD", "short-pw", "ADMIN_PASSWORD"},
		{"body limit", "MAX_BODY_BYTES", "-5", "MAX_BODY_BYTES"},
		{"deadline", "RETRY_DEADLINE", "soon", "RETRY_DEADLINE"},
		{"models file", "MODELS_FILE", "/nonexistent/models.json", "MODELS_FILE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"DATA_DIR": t.TempDir(), c.env: c.value, "PORT": "0"}
			if c.env == "PORT" {
				env["PORT"] = c.value
			}
			_, errOut, code := cli(t, env, "", "serve")
			if code != 2 {
				t.Errorf("exit code = %d, want 2; stderr %s", code, errOut)
			}
			if !strings.Contains(errOut, c.want) {
				t.Errorf("stderr %q does not name %s", errOut, c.want)
			}
			if (c.env == "SECRET_KEY" || c.env == "ADMIN_PASSWORD") && strings.Contains(errOut, c.value) {
				t.Errorf("stderr echoes the secret: %q", errOut)
			}
		})
	}
}

// TestCLIUsage: help exits 0, mistakes exit 2 with a message.
func TestCLIUsage(t *testing.T) {
	env := map[string]string{"DATA_DIR": t.TempDir()}
	cases := []struct {
		args     []string
		code     int
		inOutput string
	}{
		{[]string{"version"}, 0, "atlassian-proxy"},
		{[]string{"help"}, 0, "Usage"},
		{[]string{"--help"}, 0, "reset-password"}, // the overview of the commands
		{[]string{"-h"}, 0, "rotate-key"},
		{[]string{"serve", "--help"}, 0, "-queue-timeout"},
		{[]string{"--port", "x"}, 2, "invalid --port"}, // flags alone still mean serve
		{[]string{"credential", "--help"}, 0, "add|list|remove|enable|disable"},
		{[]string{"credential", "disable"}, 2, "one credential id"},
		{[]string{"credential", "enable", "cred_nope"}, 1, "not found"},
		{[]string{"credential", "add", "--help"}, 0, "--email"},
		{[]string{"token", "create", "--help"}, 0, "--name"},
		{[]string{"reset-password", "--help"}, 0, "reset-password"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"credential", "fly"}, 2, "unknown subcommand"},
		{[]string{"credential", "add", "--email", "not-an-email", "--token", "x"}, 2, "email"},
		{[]string{"credential", "remove"}, 2, "one credential id"},
		{[]string{"credential", "remove", "cred_nope"}, 1, "not found"},
		{[]string{"token", "create"}, 2, "name"},
		{[]string{"token", "create", "--name", "x", "--models", "claude-sonnet-4,no-such-model"}, 2, "unknown model 'no-such-model'"},
		{[]string{"token", "revoke", "tok_nope"}, 1, "not found"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			out, errOut, code := cli(t, env, "", c.args...)
			if code != c.code {
				t.Errorf("exit code = %d, want %d; stdout %q stderr %q", code, c.code, out, errOut)
			}
			if !strings.Contains(strings.ToLower(out+errOut), strings.ToLower(c.inOutput)) {
				t.Errorf("output %q / %q lacks %q", out, errOut, c.inOutput)
			}
		})
	}
}

// TestResetPasswordCLI: the printed password logs in and must be changed.
func TestResetPasswordCLI(t *testing.T) {
	p := startProxy(t, nil)
	first := p.generatedPassword(t)
	out, errOut, code := cli(t, map[string]string{"DATA_DIR": p.DataDir}, "", "reset-password")
	if code != 0 {
		t.Fatalf("reset-password: exit %d: %s", code, errOut)
	}
	pw := strings.TrimSpace(out)
	if pw == "" || pw == first {
		t.Fatalf("reset-password printed %q", pw)
	}
	_, body := login(t, p.URL, pw)
	if body["must_change_password"] != true {
		t.Errorf("must_change_password = %v, want true", body["must_change_password"])
	}
}

// TestSIGTERMLetsStreamsFinish: a stream in flight when SIGTERM arrives
// runs to its end ([DONE]) and the process then exits 0.
func TestSIGTERMLetsStreamsFinish(t *testing.T) {
	gw := fake.Start(t, fake.Options{Credentials: []fake.Credential{{Email: "dev@example.com", Token: "tok-sigterm",
		Default: fake.Behavior{Pieces: []string{"one ", "two ", "three ", "four ", "five"}, EventDelay: 150 * time.Millisecond}}}})
	p := startProxy(t, map[string]string{"UPSTREAM_URL": gw.URL, "ADMIN_PASSWORD": "a long enough password"})
	env := map[string]string{"DATA_DIR": p.DataDir}
	if _, errOut, code := cli(t, env, "tok-sigterm\n", "credential", "add", "--email", "dev@example.com", "--token", "-"); code != 0 {
		t.Fatalf("credential add: %s", errOut)
	}
	token, _, _ := cli(t, env, "", "token", "create", "--name", "sigterm")
	token = strings.TrimSpace(token)
	client := openai.NewClient(option.WithBaseURL(p.URL+"/v1/"), option.WithAPIKey(token), option.WithMaxRetries(0))
	eventually(t, 2*time.Second, "the credential serves", func() bool {
		_, err := client.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
			Model: "claude-sonnet-4", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
		return err == nil
	})

	stream := client.Chat.Completions.NewStreaming(t.Context(), openai.ChatCompletionNewParams{
		Model: "claude-sonnet-4", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("count")}})
	if !stream.Next() {
		t.Fatalf("no first chunk: %v", stream.Err())
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for stream.Next() {
		for _, c := range stream.Current().Choices {
			text.WriteString(c.Delta.Content)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("the stream broke during the drain: %v", err)
	}
	if !strings.HasSuffix(text.String(), "five") {
		t.Errorf("stream text = %q, want it to run to the end", text.String())
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the process did not exit after the stream ended")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
}

// TestSIGTERMAfterGraceEndsStreamsWithAnError: a stream still running when
// SHUTDOWN_GRACE is over ends with an SSE error event (no [DONE]), and the
// process exits 0.
func TestSIGTERMAfterGraceEndsStreamsWithAnError(t *testing.T) {
	gw := fake.Start(t, fake.Options{Credentials: []fake.Credential{{Email: "dev@example.com", Token: "tok-grace",
		Default: fake.Behavior{Pieces: strings.Fields(strings.Repeat("word ", 40)), EventDelay: 200 * time.Millisecond}}}})
	p := startProxy(t, map[string]string{"UPSTREAM_URL": gw.URL, "ADMIN_PASSWORD": "a long enough password", "SHUTDOWN_GRACE": "1s"})
	env := map[string]string{"DATA_DIR": p.DataDir}
	if _, errOut, code := cli(t, env, "tok-grace\n", "credential", "add", "--email", "dev@example.com", "--token", "-"); code != 0 {
		t.Fatalf("credential add: %s", errOut)
	}
	token, _, _ := cli(t, env, "", "token", "create", "--name", "grace")
	token = strings.TrimSpace(token)
	client := openai.NewClient(option.WithBaseURL(p.URL+"/v1/"), option.WithAPIKey(token), option.WithMaxRetries(0))
	params := openai.ChatCompletionNewParams{Model: "claude-sonnet-4", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("talk")}}
	var stream interface {
		Next() bool
		Err() error
	}
	eventually(t, 2*time.Second, "a stream starts", func() bool {
		s := client.Chat.Completions.NewStreaming(t.Context(), params)
		if !s.Next() {
			return false
		}
		stream = s
		return true
	})
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for stream.Next() {
	}
	err := stream.Err()
	if err == nil || !strings.Contains(err.Error(), "server_shutting_down") {
		t.Errorf("stream error = %v, want the server_shutting_down event", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the stream ended %s after SIGTERM, want about the 1 s grace", took)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the process did not exit")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
}

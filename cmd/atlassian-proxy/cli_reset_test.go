package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
)

// The CLI's recoveries reach a running server: `credential enable` after
// `credential disable`, and `credential reset`, are stored as ready states,
// which the server's syncer applies as newer than the cooldown or invalid
// mark it holds, within a round (1 s), even when both commands fall in one
// round and leave the credential's configuration as it was.

const (
	resetAtlToken = "ATATT-cli-reset-credential-token-0123456789"
	resetPassword = "cli reset admin passphrase"
	resetModel    = "claude-sonnet-4"
)

// resetStack is a running server in front of a fake gateway, with one
// credential (the gateway's "a") and one client token added by the CLI, and
// a logged-in admin API client.
type resetStack struct {
	gw    *fake.Server
	p     *proxy
	env   map[string]string // the CLI's environment: the server's DATA_DIR
	id    string            // the credential's id in the store
	token string            // a client API token
	admin *admin
}

func startResetStack(t *testing.T) *resetStack {
	t.Helper()
	gw := fake.Start(t, fake.Options{Credentials: []fake.Credential{{ID: "a", Email: "ops@example.com", Token: resetAtlToken}}})
	p := startProxy(t, map[string]string{"UPSTREAM_URL": gw.URL, "ADMIN_PASSWORD": resetPassword})
	s := &resetStack{gw: gw, p: p, env: map[string]string{"DATA_DIR": p.DataDir}}
	out, errOut, code := cli(t, s.env, resetAtlToken+"\n", "credential", "add", "--email", "ops@example.com", "--token", "-")
	if f := strings.Fields(out); code != 0 || len(f) < 3 || !strings.HasPrefix(f[2], "cred_") {
		t.Fatalf("credential add: exit %d, stdout %q, stderr %s", code, out, errOut)
	}
	s.id = strings.Fields(out)[2]
	tok, errOut, code := cli(t, s.env, "", "token", "create", "--name", "reset")
	if s.token = strings.TrimSpace(tok); code != 0 || s.token == "" {
		t.Fatalf("token create: exit %d, stderr %s", code, errOut)
	}
	s.admin, _ = login(t, p.URL, resetPassword)
	eventually(t, 3*time.Second, "the CLI-added credential serves", func() bool {
		status, _, _ := chat(t, p.URL, s.token, resetModel)
		return status == http.StatusOK
	})
	return s
}

// poolState is the credential's state in GET /admin/api/pool.
func (s *resetStack) poolState(t *testing.T) string {
	t.Helper()
	status, body := s.admin.do("GET", "/admin/api/pool", nil)
	if status != http.StatusOK {
		t.Fatalf("pool: %d %s", status, body)
	}
	var pool struct {
		Credentials []struct{ ID, State string }
	}
	if err := json.Unmarshal(body, &pool); err != nil {
		t.Fatalf("pool: %v in %s", err, body)
	}
	for _, c := range pool.Credentials {
		if c.ID == s.id {
			return c.State
		}
	}
	t.Fatalf("credential %s is not in the pool: %s", s.id, body)
	return ""
}

// storedState is the credential's state in the store ("" when none).
func (s *resetStack) storedState(t *testing.T) string {
	t.Helper()
	return storedStates(t, s.env)[s.id]
}

// storedStates are the stored credential states by credential id, as
// `export` shows them.
func storedStates(t *testing.T, env map[string]string) map[string]string {
	t.Helper()
	out, errOut, code := cli(t, env, "", "export")
	if code != 0 {
		t.Fatalf("export: exit %d, stderr %s", code, errOut)
	}
	var d struct {
		States []struct{ CredentialID, State string } `json:"credential_states"`
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("export: %v", err)
	}
	states := make(map[string]string, len(d.States))
	for _, st := range d.States {
		states[st.CredentialID] = st.State
	}
	return states
}

// block makes the credential invalid (one 401) or cooling for an hour (one
// daily-limit 429) through a real request, and waits until the server has
// stored that state (so that its write cannot land after the recovery's).
func (s *resetStack) block(t *testing.T, fault fake.Fault, want string) {
	t.Helper()
	s.gw.Push("a", 1, fake.Behavior{Fault: fault, RetryAfterSeconds: 3600})
	if status, _, body := chat(t, s.p.URL, s.token, resetModel); status == http.StatusOK {
		t.Fatalf("a request answered %s upstream: 200 %s, want an error", fault, body)
	}
	if got := s.poolState(t); got != want {
		t.Fatalf("after a %s answer the server shows the credential %q, want %q", fault, got, want)
	}
	eventually(t, 3*time.Second, "the server stores the "+want+" state", func() bool { return s.storedState(t) == want })
}

// step is a CLI command on the server's store and what it must print.
type step struct {
	args []string
	out  string
}

// try runs a step; it reports a failure ("" when none), and checks that
// nothing the command printed holds the credential's token.
func (s *resetStack) try(t *testing.T, st step) string {
	t.Helper()
	stdout, stderr, code := cli(t, s.env, "", st.args...)
	if strings.Contains(stdout+stderr, resetAtlToken) {
		t.Errorf("%v printed the credential's token", st.args)
	}
	if code != 0 || strings.TrimSpace(stdout) != st.out {
		return fmt.Sprintf("%v: exit %d, stdout %q, stderr %s; want 0 and %q", st.args, code, stdout, stderr, st.out)
	}
	return ""
}

// run runs steps one after the other while the server runs.
func (s *resetStack) run(t *testing.T, steps ...step) {
	t.Helper()
	for _, st := range steps {
		if failed := s.try(t, st); failed != "" {
			t.Fatal(failed)
		}
	}
}

// frozen runs steps while the server process is stopped (SIGSTOP), so that
// its syncer sees what they wrote in one round once it continues (SIGCONT).
// A command can fail meanwhile only by waiting on a store write the server
// was stopped in the middle of (its usage or last-used flush): then the
// server continues for a moment and the steps (each sets a state, so they
// can be repeated) run again.
func (s *resetStack) frozen(t *testing.T, steps ...step) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		if err := s.p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		failed := ""
		for _, st := range steps {
			if failed = s.try(t, st); failed != "" {
				break
			}
		}
		if err := s.p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		switch {
		case failed == "":
			return
		case attempt == 3:
			t.Fatalf("with the server stopped, 3 times: %s", failed)
		}
		t.Logf("with the server stopped: %s; again", failed)
		time.Sleep(200 * time.Millisecond)
	}
}

// servedReady waits up to 3 s for the server to show the credential ready,
// then checks that it serves a request upstream.
func (s *resetStack) servedReady(t *testing.T) {
	t.Helper()
	took := eventually(t, 3*time.Second, "the server shows the credential ready", func() bool { return s.poolState(t) == "ready" })
	t.Logf("ready after %s", took)
	before := s.gw.Stats("a").Requests
	if status, _, body := chat(t, s.p.URL, s.token, resetModel); status != http.StatusOK {
		t.Fatalf("after the recovery: %d %s, want 200", status, body)
	}
	if got := s.gw.Stats("a").Requests; got != before+1 {
		t.Errorf("the credential sent %d requests upstream, want 1", got-before)
	}
}

func (s *resetStack) checkLogs(t *testing.T) {
	t.Helper()
	if strings.Contains(s.p.Stdout.String()+s.p.Stderr.String(), resetAtlToken) {
		t.Error("the credential's token is in the server's output")
	}
}

// TestCLIDisableEnableRecovers: a credential made invalid by a 401, then
// `credential disable` and `credential enable`, is ready within 3 s and
// serves: when the server's syncer sees both changes in one round (the
// server stopped meanwhile: its configuration of the credential is as it
// was, only the stored ready state is newer) and when it sees them apart.
func TestCLIDisableEnableRecovers(t *testing.T) {
	s := startResetStack(t)
	disable := step{[]string{"credential", "disable", s.id}, "disabled credential " + s.id}
	enable := step{[]string{"credential", "enable", s.id}, "enabled credential " + s.id}
	t.Run("one syncer round", func(t *testing.T) {
		s.block(t, fake.Unauthorized, "invalid")
		s.frozen(t, disable, enable)
		s.servedReady(t)
	})
	t.Run("quick succession", func(t *testing.T) {
		s.block(t, fake.Unauthorized, "invalid")
		s.run(t, disable, enable)
		s.servedReady(t)
	})
	t.Run("separate rounds", func(t *testing.T) {
		s.block(t, fake.Unauthorized, "invalid")
		s.run(t, disable)
		eventually(t, 3*time.Second, "the server shows the credential disabled", func() bool { return s.poolState(t) == "disabled" })
		s.run(t, enable)
		s.servedReady(t)
	})
	if got := s.storedState(t); got != "ready" {
		t.Errorf("stored state = %q, want ready", got)
	}
	s.checkLogs(t)
}

// TestCLIResetRecovers: `credential reset` of an invalid or a cooling
// credential makes it ready within 3 s, also when the server is stopped
// meanwhile, and it serves.
func TestCLIResetRecovers(t *testing.T) {
	s := startResetStack(t)
	tests := []struct {
		name   string
		fault  fake.Fault
		state  string
		frozen bool
	}{
		{"invalid", fake.Unauthorized, "invalid", false},
		{"cooling", fake.RateLimitDaily, "cooling", false},
		{"invalid, server stopped", fake.Unauthorized, "invalid", true},
		{"cooling, server stopped", fake.RateLimitDaily, "cooling", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.block(t, tc.fault, tc.state)
			reset := step{[]string{"credential", "reset", s.id}, "reset credential " + s.id}
			if tc.frozen {
				s.frozen(t, reset)
			} else {
				s.run(t, reset)
			}
			s.servedReady(t)
			if got := s.storedState(t); got != "ready" {
				t.Errorf("stored state = %q, want ready", got)
			}
		})
	}
	s.checkLogs(t)
}

// TestCLIResetErrors: an unknown id fails (exit 1, "not found") and
// stores nothing; a missing or extra id is a usage error (exit 2); a reset
// does not enable a disabled credential; the help names the command.
func TestCLIResetErrors(t *testing.T) {
	env := map[string]string{"DATA_DIR": t.TempDir()}
	out, errOut, code := cli(t, env, resetAtlToken+"\n", "credential", "add", "--email", "ops@example.com", "--token", "-")
	if code != 0 {
		t.Fatalf("credential add: exit %d, stderr %s", code, errOut)
	}
	id := strings.Fields(out)[2]

	tests := []struct {
		name     string
		args     []string
		code     int
		inStderr string
	}{
		{"unknown id", []string{"credential", "reset", "cred_0000000000000000"}, 1, "not found"},
		{"no id", []string{"credential", "reset"}, 2, "credential reset takes one credential id"},
		{"two ids", []string{"credential", "reset", id, "cred_0000000000000000"}, 2, "credential reset takes one credential id"},
		{"unknown flag", []string{"credential", "reset", "--bogus", id}, 2, "flag provided but not defined"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := cli(t, env, "", tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.inStderr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, tc.code, tc.inStderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
		})
	}
	if states := storedStates(t, env); len(states) != 0 {
		t.Errorf("stored states after the failed resets = %v, want none", states)
	}

	t.Run("disabled stays disabled", func(t *testing.T) {
		for _, args := range [][]string{{"credential", "disable", id}, {"credential", "reset", id}} {
			if _, stderr, code := cli(t, env, "", args...); code != 0 {
				t.Fatalf("%v: exit %d, stderr %s", args, code, stderr)
			}
		}
		out, _, code := cli(t, env, "", "credential", "list", "--json")
		var list []struct {
			ID      string
			Enabled bool
		}
		if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list) != 1 || list[0].ID != id || list[0].Enabled {
			t.Errorf("after disable and reset: exit %d, %+v, %v; want the credential still disabled", code, list, err)
		}
	})

	t.Run("help", func(t *testing.T) {
		for _, c := range []struct {
			args   []string
			stream int // 1 stdout, 2 stderr
			want   string
		}{
			{[]string{"help"}, 1, "credential add|list|remove|enable|disable|reset"},
			{[]string{"credential", "--help"}, 1, "credential add|list|remove|enable|disable|reset"},
			{[]string{"credential", "reset", "--help"}, 2, "Usage: atlassian-proxy credential reset ID"},
			{[]string{"credential", "reset", "--help"}, 2, "cooldown or invalid state"},
		} {
			stdout, stderr, code := cli(t, env, "", c.args...)
			got := map[int]string{1: stdout, 2: stderr}[c.stream]
			if code != 0 || !strings.Contains(got, c.want) {
				t.Errorf("%v: exit %d, output %q; want 0 and %q", c.args, code, got, c.want)
			}
		}
	})
}

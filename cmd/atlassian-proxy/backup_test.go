package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
)

// TestExportImportRotate: export a store, import it elsewhere (twice: the
// second changes nothing), refuse an import with the wrong key or a file
// that is not an export, and rotate the key of a store that then serves.
func TestExportImportRotate(t *testing.T) {
	const atlToken = "ATATT-canary-backup-token-0987654321"
	src := map[string]string{"DATA_DIR": t.TempDir()}
	if _, errOut, code := cli(t, src, atlToken+"\n", "credential", "add", "--email", "dev@example.com", "--token", "-"); code != 0 {
		t.Fatalf("credential add: %d %s", code, errOut)
	}
	apiToken, errOut, code := cli(t, src, "", "token", "create", "--name", "backup", "--rate-limit", "30")
	apiToken = strings.TrimSpace(apiToken)
	if code != 0 {
		t.Fatalf("token create: %d %s", code, errOut)
	}
	if _, errOut, code := cli(t, src, "", "reset-password"); code != 0 {
		t.Fatalf("reset-password: %d %s", code, errOut)
	}

	file := filepath.Join(t.TempDir(), "backup.json")
	// An older file with a loose mode is replaced, not rewritten in place.
	if err := os.WriteFile(file, []byte("an older backup"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = cli(t, src, "", "export", file)
	if code != 0 || !strings.Contains(errOut, "exported 1 credentials, 1 tokens") || !strings.Contains(errOut, "admin password") {
		t.Fatalf("export: exit %d, stderr %q", code, errOut)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 { // also over the older 0644 file
		t.Errorf("export file mode %v, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(file)
	for _, secret := range []string{atlToken, apiToken} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("the export holds a secret in clear")
		}
	}
	stdoutDump, _, code := cli(t, src, "", "export")
	if code != 0 || !strings.Contains(stdoutDump, `"format": "atlassian-proxy-export"`) {
		t.Errorf("export to standard output: exit %d, %.80q", code, stdoutDump)
	}

	key, err := os.ReadFile(filepath.Join(src["DATA_DIR"], keyFileName))
	if err != nil {
		t.Fatal(err)
	}

	// The wrong key: refused before anything is written.
	wrong := map[string]string{"DATA_DIR": t.TempDir(), "SECRET_KEY": randomKey(t)}
	_, errOut, code = cli(t, wrong, "", "import", file)
	if code != 2 || !strings.Contains(errOut, "SECRET_KEY is not the key this export was made with") {
		t.Errorf("import with the wrong key: exit %d, stderr %q", code, errOut)
	}
	if out, _, _ := cli(t, wrong, "", "credential", "list"); strings.Contains(out, "dev@example.com") {
		t.Errorf("an import with the wrong key wrote credentials: %s", out)
	}

	// Not an export file, and a missing one.
	junk := filepath.Join(t.TempDir(), "junk.json")
	os.WriteFile(junk, []byte(`{"hello": 1}`), 0o600)
	for _, args := range [][]string{{"import", junk}, {"import"}, {"export", "a", "b"}} {
		if _, errOut, code := cli(t, wrong, "", args...); code != 2 || errOut == "" {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message", args, code, errOut)
		}
	}
	if _, errOut, code := cli(t, wrong, "", "import", filepath.Join(t.TempDir(), "missing.json")); code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("import of a missing file: exit %d, stderr %q", code, errOut)
	}

	// The right key: everything arrives; a second import changes nothing.
	dst := map[string]string{"DATA_DIR": t.TempDir(), "SECRET_KEY": strings.TrimSpace(string(key))}
	_, errOut, code = cli(t, dst, "", "import", file)
	if code != 0 || !strings.Contains(errOut, "imported 1 credentials (0 already there), 1 tokens (0 already there)") {
		t.Fatalf("import: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = cli(t, dst, "", "import", file)
	if code != 0 || !strings.Contains(errOut, "imported 0 credentials (1 already there), 0 tokens (1 already there)") {
		t.Errorf("second import: exit %d, stderr %q", code, errOut)
	}
	if out, _, _ := cli(t, dst, "", "token", "list"); !strings.Contains(out, "backup") {
		t.Errorf("token list after import: %s", out)
	}

	// A server still on the old key keeps serving when another process
	// rotates the key under it (until it restarts with the new key).
	gwDst := fake.Start(t, fake.Options{Credentials: []fake.Credential{{Email: "dev@example.com", Token: atlToken}}})
	running := startProxy(t, map[string]string{"DATA_DIR": dst["DATA_DIR"], "SECRET_KEY": dst["SECRET_KEY"], "UPSTREAM_URL": gwDst.URL})
	eventually(t, 2*time.Second, "the imported credential serves", func() bool {
		s, _ := chatOnce(t, running.URL, apiToken)
		return s == http.StatusOK
	})
	rotDst := map[string]string{"DATA_DIR": dst["DATA_DIR"], "SECRET_KEY": dst["SECRET_KEY"], "NEW_SECRET_KEY": randomKey(t)}
	if _, errOut, code := cli(t, rotDst, "", "rotate-key"); code != 0 || !strings.Contains(errOut, "restart every replica") {
		t.Fatalf("rotate-key with SECRET_KEY: exit %d, stderr %q", code, errOut)
	}
	eventually(t, 3*time.Second, "the running server notices the rotation", func() bool {
		return strings.Contains(running.Stderr.String(), "keeping the token held in memory")
	})
	if s, b := chatOnce(t, running.URL, apiToken); s != http.StatusOK {
		t.Errorf("after a rotation by another process: %d %s, want the old-key server to keep serving", s, b)
	}

	// Rotation: without NEW_SECRET_KEY it refuses; with it the key file is
	// replaced and a server on that directory still opens the credential.
	if _, errOut, code := cli(t, src, "", "rotate-key"); code != 2 || !strings.Contains(errOut, "NEW_SECRET_KEY") {
		t.Errorf("rotate-key without a new key: exit %d, stderr %q", code, errOut)
	}
	newKey := randomKey(t)
	rot := map[string]string{"DATA_DIR": src["DATA_DIR"], "NEW_SECRET_KEY": newKey}
	if _, errOut, code := cli(t, rot, "", "rotate-key"); code != 0 || !strings.Contains(errOut, "re-sealed 1 credentials") {
		t.Fatalf("rotate-key: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := cli(t, rot, "", "rotate-key"); code != 0 || !strings.Contains(errOut, "re-sealed 0 credentials") {
		t.Errorf("rotate-key again (already done): exit %d, stderr %q", code, errOut)
	}
	got, _ := os.ReadFile(filepath.Join(src["DATA_DIR"], keyFileName))
	if strings.TrimSpace(string(got)) != newKey {
		t.Errorf("the key file does not hold the new key")
	}
	gw := fake.Start(t, fake.Options{Credentials: []fake.Credential{{Email: "dev@example.com", Token: atlToken}}})
	p := startProxy(t, map[string]string{"DATA_DIR": src["DATA_DIR"], "UPSTREAM_URL": gw.URL})
	eventually(t, 2*time.Second, "the rotated credential serves", func() bool {
		s, _ := chatOnce(t, p.URL, apiToken)
		return s == http.StatusOK
	})
	if strings.Contains(p.Stderr.String(), "cannot decrypt") {
		t.Errorf("the server could not open a rotated credential:\n%s", p.Stderr)
	}
}

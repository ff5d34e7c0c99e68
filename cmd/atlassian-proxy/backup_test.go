package main

import (
	"database/sql"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/internal/redistest"
	"github.com/atlassian-proxy/atlassian-proxy/store"
	redisstore "github.com/atlassian-proxy/atlassian-proxy/store/redis"
	"github.com/atlassian-proxy/atlassian-proxy/store/sqlite"
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

// sealedAs names the token a stored credential opens to (tokens are named,
// never printed) and the key that opens it: "old", "new" or "none".
type sealedAs struct{ token, key string }

// TestRotateKeyConcurrentWrite: a credential changed, or added, by another
// writer while rotate-key runs (an admin on a server still holding the old
// key) stops the rotation with a message to run it again. The store stays
// usable: every credential opens with the old key or the new one, the other
// writer's token is kept, the key file still holds the old key (the
// credentials not yet re-sealed need it); a second run finishes.
//
// The other writer is a trigger in the SQLite file, fired by the rotation's
// first write (of credential cred-a): a real write to the store, committed
// with that write, so after the rotation has listed the credentials and
// before it reads the next one and lists them again at the end.
func TestRotateKeyConcurrentWrite(t *testing.T) {
	tokens := map[string]string{ // name → the token in clear
		"A":  "ATATT-canary-rotate-a-1111111111",
		"B":  "ATATT-canary-rotate-b-2222222222",
		"B2": "ATATT-canary-rotate-b-changed-3333333333",
		"C":  "ATATT-canary-rotate-c-4444444444",
	}
	tests := []struct {
		name string
		// prepare readies the other writer's change and returns the body of
		// the trigger that makes it.
		prepare   func(t *testing.T, st *sqlite.Store, db *sql.DB, seal func(id, token string) []byte) string
		wantErr   string
		afterFail map[string]sealedAs
		afterRun2 map[string]sealedAs
	}{
		{
			name: "token changed",
			prepare: func(t *testing.T, _ *sqlite.Store, _ *sql.DB, seal func(id, token string) []byte) string {
				return fmt.Sprintf("UPDATE credentials SET token = X'%x' WHERE id = 'cred-b';", seal("cred-b", "B2"))
			},
			wantErr: "rotate-key: credential cred-b changed while rotating; run rotate-key again",
			afterFail: map[string]sealedAs{
				"cred-a": {"A", "new"},
				"cred-b": {"B2", "old"}, // the other writer's token, not overwritten with the one read before
			},
			afterRun2: map[string]sealedAs{"cred-a": {"A", "new"}, "cred-b": {"B2", "new"}},
		},
		{
			name: "credential added",
			prepare: func(t *testing.T, st *sqlite.Store, db *sql.DB, seal func(id, token string) []byte) string {
				// Made by the store, then set aside for the trigger to put back.
				now := time.Now().UTC()
				c := store.Credential{ID: "cred-c", Email: "c@example.com", Token: seal("cred-c", "C"), Enabled: true,
					CreatedAt: now, UpdatedAt: now}
				if err := st.CreateCredential(t.Context(), c); err != nil {
					t.Fatal(err)
				}
				for _, q := range []string{
					"CREATE TABLE test_added AS SELECT * FROM credentials WHERE id = 'cred-c'",
					"DELETE FROM credentials WHERE id = 'cred-c'",
				} {
					if _, err := db.ExecContext(t.Context(), q); err != nil {
						t.Fatalf("%s: %v", q, err)
					}
				}
				return "INSERT INTO credentials SELECT * FROM test_added;"
			},
			wantErr: "rotate-key: credential cred-c was added during the rotation with the old key; run rotate-key again",
			afterFail: map[string]sealedAs{
				"cred-a": {"A", "new"},
				"cred-b": {"B", "new"},
				"cred-c": {"C", "old"},
			},
			afterRun2: map[string]sealedAs{"cred-a": {"A", "new"}, "cred-b": {"B", "new"}, "cred-c": {"C", "new"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			keyFile := filepath.Join(dir, keyFileName)
			oldKey, err := auth.LoadOrCreateKeyFile(keyFile) // as the server's first start does
			if err != nil {
				t.Fatal(err)
			}
			newKey := randomKey(t)
			parsedNew, err := auth.ParseKey(newKey)
			if err != nil {
				t.Fatal(err)
			}
			ciphers := map[string]*auth.Cipher{"old": rotateTestCipher(t, oldKey), "new": rotateTestCipher(t, parsedNew)}
			seal := func(id, token string) []byte {
				t.Helper()
				b, err := ciphers["old"].Seal(id, []byte(tokens[token]))
				if err != nil {
					t.Fatal(err)
				}
				return b
			}

			dbPath := filepath.Join(dir, dbFileName)
			st, err := sqlite.Open(t.Context(), dbPath)
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now().UTC()
			for i, c := range []struct{ id, token string }{{"cred-a", "A"}, {"cred-b", "B"}} {
				// Listed, and so rotated, in this order (and before cred-c).
				at := t0.Add(time.Duration(i-10) * time.Second)
				err := st.CreateCredential(t.Context(), store.Credential{ID: c.id, Email: c.id + "@example.com",
					Token: seal(c.id, c.token), Enabled: true, CreatedAt: at, UpdatedAt: at})
				if err != nil {
					t.Fatal(err)
				}
			}
			db, err := sql.Open("sqlite", dbPath)
			if err != nil {
				t.Fatal(err)
			}
			body := tt.prepare(t, st, db, seal)
			trigger := "CREATE TRIGGER test_other_writer AFTER UPDATE OF token ON credentials WHEN NEW.id = 'cred-a' BEGIN " + body + " END"
			if _, err := db.ExecContext(t.Context(), trigger); err != nil {
				t.Fatalf("%s: %v", trigger, err)
			}
			st.Close()
			db.Close()

			secrets := []string{auth.EncodeKey(oldKey), newKey}
			for _, tok := range tokens {
				secrets = append(secrets, tok)
			}
			env := map[string]string{"DATA_DIR": dir, "NEW_SECRET_KEY": newKey}
			_, errOut, code := cli(t, env, "", "rotate-key")
			if code != 1 || !strings.Contains(errOut, "error: "+tt.wantErr) {
				t.Fatalf("rotate-key with another writer: exit %d, stderr %q; want 1 and %q", code, errOut, tt.wantErr)
			}
			assertNoSecretIn(t, "rotate-key's output", errOut, secrets)
			if keyFileText(t, keyFile) != auth.EncodeKey(oldKey) {
				t.Errorf("the key file changed although credentials sealed with the old key remain")
			}
			if got := openedTokens(t, dbPath, ciphers, tokens); !maps.Equal(got, tt.afterFail) {
				t.Errorf("after the interrupted rotation: %v, want %v", got, tt.afterFail)
			}

			// The other writer is done; the rotation is run again and finishes.
			if db, err = sql.Open("sqlite", dbPath); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(t.Context(), "DROP TRIGGER test_other_writer"); err != nil {
				t.Fatal(err)
			}
			db.Close()
			_, errOut, code = cli(t, env, "", "rotate-key")
			if code != 0 || !strings.Contains(errOut, "re-sealed 1 credentials; the key file in "+dir+" now holds the new key") {
				t.Fatalf("rotate-key again: exit %d, stderr %q; want 0 and 1 credential re-sealed", code, errOut)
			}
			assertNoSecretIn(t, "rotate-key's output", errOut, secrets)
			if keyFileText(t, keyFile) != newKey {
				t.Errorf("after the second run the key file does not hold the new key")
			}
			if got := openedTokens(t, dbPath, ciphers, tokens); !maps.Equal(got, tt.afterRun2) {
				t.Errorf("after the second run: %v, want %v", got, tt.afterRun2)
			}
		})
	}
}

func rotateTestCipher(t *testing.T, key []byte) *auth.Cipher {
	t.Helper()
	c, err := auth.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func keyFileText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// openedTokens opens the token of every credential of the store at path
// with whichever of ciphers opens it, and names it by tokens (name → token
// in clear); "unknown" is a token not in tokens.
func openedTokens(t *testing.T, path string, ciphers map[string]*auth.Cipher, tokens map[string]string) map[string]sealedAs {
	t.Helper()
	st, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	creds, err := st.ListCredentials(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]sealedAs{}
	for _, c := range creds {
		got[c.ID] = sealedAs{key: "none"}
		for keyName, ci := range ciphers {
			p, err := ci.Open(c.ID, c.Token)
			if err != nil {
				continue
			}
			s := sealedAs{token: "unknown", key: keyName}
			for name, tok := range tokens {
				if tok == string(p) {
					s.token = name
				}
			}
			got[c.ID] = s
		}
	}
	return got
}

func assertNoSecretIn(t *testing.T, where, text string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s holds a secret in clear (%d characters starting %.6q)", where, len(s), s)
		}
	}
}

// TestImportDataLossRecord: with Redis, a successful import clears the
// record of a data loss; an import that could not clear it says how to
// (exit 1, the data in); `import --clear-loss` clears it alone, refuses a
// file and the embedded store, and fails when Redis does not let it or is
// gone; export refuses a store that records a loss unless forced, and
// fails when it cannot read the record. No output shows a Redis password.
func TestImportDataLossRecord(t *testing.T) {
	const (
		redisPW   = "redis-default-pw-7c1e5a93"
		noClearPW = "redis-noclear-pw-2b8d4f60"
		noLossPW  = "redis-noloss-pw-91e07a3c"
	)
	rs := redistest.StartWith(t, redistest.Config{Password: redisPW})
	raw := goredis.NewClient(&goredis.Options{Addr: rs.Addr(), Password: redisPW,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	t.Cleanup(func() { raw.Close() })
	ctx := t.Context()
	const p = redisstore.DefaultPrefix
	// noclear may read the loss record but not delete it; noloss may not
	// touch it at all. Both may do everything else.
	for _, acl := range [][]any{
		{"ACL", "SETUSER", "noclear", "on", ">" + noClearPW, "~" + p + "[^l]*", "%R~" + p + "lost", "&*", "+@all"},
		{"ACL", "SETUSER", "noloss", "on", ">" + noLossPW, "~" + p + "[^l]*", "&*", "+@all"},
	} {
		if err := raw.Do(ctx, acl...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	key := randomKey(t)
	as := func(user, pw string) map[string]string {
		return map[string]string{"REDIS_URL": "redis://" + user + ":" + pw + "@" + rs.Addr() + "/0", "SECRET_KEY": key}
	}
	env, noClear, noLoss := as("default", redisPW), as("noclear", noClearPW), as("noloss", noLossPW)
	var outputs []string
	run := func(env map[string]string, stdin string, args ...string) (string, int) {
		t.Helper()
		out, errOut, code := cli(t, env, stdin, args...)
		outputs = append(outputs, out, errOut)
		return errOut, code
	}

	if errOut, code := run(env, "ATATT-loss-record-token\n", "credential", "add", "--email", "dev@example.com", "--token", "-"); code != 0 {
		t.Fatalf("credential add: %d %s", code, errOut)
	}
	backup := filepath.Join(t.TempDir(), "backup.json")
	if errOut, code := run(env, "", "export", backup); code != 0 {
		t.Fatalf("export: %d %s", code, errOut)
	}
	// A replica (this store connection) saw the data; Redis loses it.
	replica, err := redisstore.Open(ctx, redisstore.Options{URL: rs.URL(), Password: redisPW})
	if err != nil {
		t.Fatal(err)
	}
	defer replica.Close()
	if rec, err := replica.Marker(ctx); err != nil || rec != nil {
		t.Fatalf("Marker before the loss: %v, %v", rec, err)
	}
	if err := raw.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if rec, err := replica.Marker(ctx); err != nil || rec == nil {
		t.Fatalf("Marker after the loss: %v, %v; want the record", rec, err)
	}
	recorded := func() bool {
		t.Helper()
		rec, err := replica.Loss(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return rec != nil
	}

	// Export: refused while the loss is recorded; an unreadable record is an error.
	if errOut, code := run(env, "", "export", filepath.Join(t.TempDir(), "x.json")); code != 1 || !strings.Contains(errOut, "the store lost its data (noticed at") {
		t.Errorf("export during the loss: exit %d, %s", code, errOut)
	}
	if errOut, code := run(noLoss, "", "export", "--force"); code != 0 {
		t.Errorf("export --force (the record not even read): exit %d, %s", code, errOut)
	}
	if errOut, code := run(noLoss, "", "export"); code != 1 || !strings.Contains(errOut, "export: redis: read the loss record") {
		t.Errorf("export without access to the record: exit %d, %s", code, errOut)
	}

	// An import whose record cannot be cleared: the data is in, exit 1 with the way out.
	errOut, code := run(noClear, "", "import", backup)
	if code != 1 || !strings.Contains(errOut, "imported 1 credentials") || !strings.Contains(errOut, "import --clear-loss") {
		t.Errorf("import unable to clear the record: exit %d, %s", code, errOut)
	}
	if !recorded() {
		t.Error("the record went though the import could not clear it")
	}
	if errOut, code := run(noClear, "", "import", "--clear-loss"); code != 1 || !strings.Contains(errOut, "import --clear-loss: redis: clear the loss record") {
		t.Errorf("import --clear-loss without the right: exit %d, %s", code, errOut)
	}

	// Usage errors: a file with --clear-loss, the embedded store.
	if errOut, code := run(env, "", "import", "--clear-loss", backup); code != 2 || !strings.Contains(errOut, "takes no file") {
		t.Errorf("import --clear-loss FILE: exit %d, %s", code, errOut)
	}
	embedded := map[string]string{"DATA_DIR": t.TempDir()}
	if errOut, code := run(embedded, "", "import", "--clear-loss"); code != 2 || !strings.Contains(errOut, "only a Redis store") {
		t.Errorf("import --clear-loss on the embedded store: exit %d, %s", code, errOut)
	}
	if entries, _ := os.ReadDir(embedded["DATA_DIR"]); len(entries) != 0 {
		t.Errorf("import --clear-loss on the embedded store created %d files", len(entries))
	}

	// The import (again: safe) clears it; then there is nothing to clear.
	errOut, code = run(env, "", "import", backup)
	if code != 0 || !strings.Contains(errOut, "imported 0 credentials (1 already there)") ||
		!strings.Contains(errOut, "cleared the record of the store's data loss (noticed at") {
		t.Errorf("import: exit %d, %s", code, errOut)
	}
	if recorded() {
		t.Error("the record is still there after the import")
	}
	if errOut, code := run(env, "", "export", filepath.Join(t.TempDir(), "y.json")); code != 0 {
		t.Errorf("export after the import: exit %d, %s", code, errOut)
	}
	if errOut, code := run(env, "", "import", "--clear-loss"); code != 0 || !strings.Contains(errOut, "no data loss is recorded") {
		t.Errorf("import --clear-loss with nothing recorded: exit %d, %s", code, errOut)
	}

	// Redis gone: the clear fails.
	rs.Stop(t)
	if errOut, code := run(env, "", "import", "--clear-loss"); code != 1 || !strings.Contains(errOut, "open the Redis store") {
		t.Errorf("import --clear-loss with Redis down: exit %d, %s", code, errOut)
	}
	assertNoSecretIn(t, "the CLI's output", strings.Join(outputs, "\n"), []string{redisPW, noClearPW, noLossPW})
}

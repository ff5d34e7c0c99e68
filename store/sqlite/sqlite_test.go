package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
	"github.com/atlassian-proxy/atlassian-proxy/store/storetest"
)

// openAt opens a Store at path and closes it when the test ends.
func openAt(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openAt(t, filepath.Join(t.TempDir(), "data", "proxy.db"))
	})
}

func cred(id, email string) store.Credential {
	return store.Credential{
		ID: id, Email: email, Token: []byte("sealed"), Enabled: true,
		CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC),
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proxy.db")
	ctx := t.Context()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	want := cred("c1", "a@example.com")
	if err := s.CreateCredential(ctx, want); err != nil {
		t.Fatal(err)
	}
	if _, err := s.InitAdminPassword(ctx, store.AdminPassword{Hash: "h", MustChange: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateToken(ctx, store.APIToken{ID: "t1", Hash: []byte("hash"), AllowedModels: []string{"m"}}); err != nil {
		t.Fatal(err)
	}
	gen, err := s.Generation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openAt(t, path)
	got, err := s2.GetCredential(ctx, "c1")
	if err != nil {
		t.Fatalf("GetCredential after reopen: %v", err)
	}
	// Nanosecond precision survives, and times come back in UTC.
	if !got.CreatedAt.Equal(want.CreatedAt) || got.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt after reopen = %v, want %v in UTC", got.CreatedAt, want.CreatedAt)
	}
	if p, err := s2.AdminPassword(ctx); err != nil || p.Hash != "h" || !p.MustChange {
		t.Errorf("AdminPassword after reopen = %+v, %v; want hash h, must change", p, err)
	}
	if toks, err := s2.ListTokens(ctx); err != nil || len(toks) != 1 || len(toks[0].AllowedModels) != 1 {
		t.Errorf("ListTokens after reopen = %+v, %v; want t1 with one model", toks, err)
	}
	if g, err := s2.Generation(ctx); err != nil || g != gen {
		t.Errorf("Generation after reopen = %d, %v; want %d", g, err, gen)
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proxy.db")
	for i := range 3 {
		s, err := Open(t.Context(), path)
		if err != nil {
			t.Fatalf("Open #%d: %v", i+1, err)
		}
		var v int
		if err := s.r.QueryRowContext(t.Context(), "SELECT version FROM schema_version").Scan(&v); err != nil {
			t.Fatal(err)
		}
		if v != len(migrations) {
			t.Errorf("Open #%d: schema version = %d, want %d", i+1, v, len(migrations))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMigrateFromVersion1 upgrades a file written by the first schema (as
// released binaries left it): the data stays, the new tables work.
func TestMigrateFromVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proxy.db")
	ctx := t.Context()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"PRAGMA journal_mode = WAL",
		`CREATE TABLE schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL) STRICT`,
		migrations[0],
		`INSERT INTO schema_version (id, version) VALUES (1, 1)`,
		`INSERT INTO credentials (id, email, email_fold, token, cloud_id, label, enabled, max_concurrency, created_at, updated_at)
VALUES ('c1', 'A@example.com', 'a@example.com', x'00', '', '', 1, 0, 1, 1)`,
		`INSERT INTO sessions (id, csrf_token, created_at, last_seen_at) VALUES ('s1', 'x', 1, 1)`,
		`UPDATE generation SET value = 7`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openAt(t, path)
	var v int
	if err := s.r.QueryRowContext(ctx, "SELECT version FROM schema_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != len(migrations) {
		t.Errorf("schema version after Open = %d, want %d", v, len(migrations))
	}
	if _, err := s.GetCredential(ctx, "c1"); err != nil {
		t.Errorf("GetCredential of a version-1 record: %v", err)
	}
	if g, err := s.Generation(ctx); err != nil || g != 7 {
		t.Errorf("Generation = %d, %v; want 7 (migrations do not move it)", g, err)
	}
	if n, err := s.DeleteSessionsBefore(ctx, time.Unix(0, 2)); err != nil || n != 1 {
		t.Errorf("DeleteSessionsBefore of the version-1 session = %d, %v; want 1", n, err)
	}
	row := store.Usage{Day: "2025-01-02", TokenID: "t1", Model: "m", Requests: 2}
	if err := s.AddUsage(ctx, []store.Usage{row}); err != nil {
		t.Fatalf("AddUsage after migrating: %v", err)
	}
	if got, err := s.ListUsage(ctx, row.Day, row.Day); err != nil || len(got) != 1 || got[0] != row {
		t.Errorf("ListUsage after migrating = %+v, %v; want [%+v]", got, err, row)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proxy.db")
	s := openAt(t, path)
	if _, err := s.w.ExecContext(t.Context(), "UPDATE schema_version SET version = 999"); err != nil {
		t.Fatal(err)
	}
	_, err := Open(t.Context(), path)
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open of a newer schema: err = %v, want one saying it is newer", err)
	}
}

func TestConcurrentOpenOfNewFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proxy.db")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := Open(t.Context(), path)
			if err != nil {
				t.Errorf("Open: %v", err)
				return
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
}

// TestTwoStoresOneFile plays the server and the CLI: two Store values on
// one file, each seeing the other's writes and generation changes.
func TestTwoStoresOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proxy.db")
	server, cli := openAt(t, path), openAt(t, path)
	ctx := t.Context()

	gen := func(s *Store) int64 {
		t.Helper()
		g, err := s.Generation(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}

	before := gen(server)
	if err := cli.CreateCredential(ctx, cred("c1", "a@example.com")); err != nil {
		t.Fatal(err)
	}
	if after := gen(server); after <= before {
		t.Errorf("server generation after a CLI write = %d, want > %d", after, before)
	}
	if _, err := server.GetCredential(ctx, "c1"); err != nil {
		t.Errorf("server GetCredential of the CLI's credential: %v", err)
	}
	before = gen(cli)
	if err := server.UpdateCredential(ctx, cred("c1", "b@example.com")); err != nil {
		t.Fatal(err)
	}
	if after := gen(cli); after <= before {
		t.Errorf("CLI generation after a server write = %d, want > %d", after, before)
	}
	if g1, g2 := gen(server), gen(cli); g1 != g2 {
		t.Errorf("generations differ: server %d, CLI %d", g1, g2)
	}
	err := server.CreateCredential(ctx, cred("c2", "B@EXAMPLE.COM"))
	if !errors.Is(err, store.ErrDuplicate) {
		t.Errorf("server CreateCredential of the CLI's email: err = %v, want ErrDuplicate", err)
	}
}

// TestTwoStoresConcurrentWrites hammers one file from two Store values at
// once: no write may fail with "database is locked".
func TestTwoStoresConcurrentWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proxy.db")
	stores := []*Store{openAt(t, path), openAt(t, path)}
	ctx := t.Context()
	const (
		workers = 4
		each    = 12
	)
	var wg sync.WaitGroup
	for si, s := range stores {
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					id := fmt.Sprintf("s%d-w%d-%d", si, w, i)
					if err := s.CreateCredential(ctx, cred(id, id+"@example.com")); err != nil {
						t.Errorf("CreateCredential: %v", err)
						return
					}
					if err := s.SetCredentialState(ctx, store.CredentialState{CredentialID: id, State: "invalid"}); err != nil {
						t.Errorf("SetCredentialState: %v", err)
						return
					}
					if _, err := s.InitAdminPassword(ctx, store.AdminPassword{Hash: id}); err != nil {
						t.Errorf("InitAdminPassword: %v", err)
						return
					}
					if _, err := s.ListCredentials(ctx); err != nil {
						t.Errorf("ListCredentials: %v", err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	want := len(stores) * workers * each
	for i, s := range stores {
		creds, err := s.ListCredentials(ctx)
		if err != nil {
			t.Fatal(err)
		}
		states, err := s.ListCredentialStates(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(creds) != want || len(states) != want {
			t.Errorf("store %d sees %d credentials and %d states, want %d of each", i, len(creds), len(states), want)
		}
	}
}

func TestWALMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proxy.db")
	openAt(t, path)
	// Ask with a connection of our own: the mode is a property of the file.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
}

func TestPragmas(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "proxy.db"))
	tests := []struct {
		db     *sql.DB
		pragma string
		want   int64
	}{
		{s.w, "busy_timeout", busyTimeout.Milliseconds()},
		{s.r, "busy_timeout", busyTimeout.Milliseconds()},
		{s.w, "foreign_keys", 1},
		{s.w, "synchronous", 1}, // NORMAL
		{s.r, "query_only", 1},
		{s.w, "query_only", 0},
	}
	for _, tt := range tests {
		name := "write/" + tt.pragma
		if tt.db == s.r {
			name = "read/" + tt.pragma
		}
		t.Run(name, func(t *testing.T) {
			var got int64
			if err := tt.db.QueryRowContext(t.Context(), "PRAGMA "+tt.pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("PRAGMA %s = %d, want %d", tt.pragma, got, tt.want)
			}
		})
	}
}

func TestOpenCreatesDirectoryAndFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b c", "data?#")
	path := filepath.Join(dir, "proxy.db")
	s := openAt(t, path)
	if err := s.CreateCredential(t.Context(), cred("c1", "a@example.com")); err != nil {
		t.Fatal(err)
	}
	if got := s.Path(); got != path {
		t.Errorf("Path() = %q, want %q", got, path)
	}
	tests := []struct {
		path string
		mode os.FileMode
	}{
		{dir, 0o700 | os.ModeDir},
		{path, 0o600},
		{path + "-wal", 0o600},
	}
	for _, tt := range tests {
		fi, err := os.Stat(tt.path)
		if err != nil {
			t.Errorf("Stat: %v", err)
			continue
		}
		if got := fi.Mode() & (os.ModePerm | os.ModeDir); got != tt.mode {
			t.Errorf("mode of %s = %v, want %v", tt.path, got, tt.mode)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "plain-file")
	if err := os.WriteFile(file, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	notDB := filepath.Join(dir, "not.db")
	if err := os.WriteFile(notDB, []byte(strings.Repeat("this is not a database file. ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		want string // in the error message
	}{
		{"empty path", "", "empty path"},
		{"parent is a file", filepath.Join(file, "proxy.db"), "create directory"},
		{"path is a directory", dir, dir},
		{"not a database", notDB, "not a database"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.Context(), tt.path)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) = nil error, want one containing %q", tt.path, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open(%q) error = %q, want it to contain %q", tt.path, err, tt.want)
			}
		})
	}
}

func TestTimeOutOfRange(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "proxy.db"))
	tk := store.APIToken{ID: "t1", Hash: []byte("h"), ExpiresAt: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}
	err := s.CreateToken(t.Context(), tk)
	if err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("CreateToken expiring in 3000: err = %v, want out of range", err)
	}
	_, err = s.DeleteSessionsBefore(t.Context(), time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC))
	if err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("DeleteSessionsBefore 3000: err = %v, want out of range", err)
	}
}

func TestClosedStore(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "proxy.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); err == nil {
		t.Error("Ping after Close = nil, want an error")
	}
}

func TestCanceledContextIsReported(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "proxy.db"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.CreateCredential(ctx, cred("c1", "a@example.com")); !errors.Is(err, context.Canceled) {
		t.Errorf("CreateCredential with a cancelled context: err = %v, want context.Canceled", err)
	}
}

func BenchmarkGeneration(b *testing.B) {
	s := openAt(b, filepath.Join(b.TempDir(), "proxy.db"))
	ctx := b.Context()
	for b.Loop() {
		if _, err := s.Generation(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkListCredentials(b *testing.B) {
	s := openAt(b, filepath.Join(b.TempDir(), "proxy.db"))
	ctx := b.Context()
	for i := range 100 {
		id := fmt.Sprintf("c%03d", i)
		if err := s.CreateCredential(ctx, cred(id, id+"@example.com")); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if _, err := s.ListCredentials(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCreateCredential(b *testing.B) {
	s := openAt(b, filepath.Join(b.TempDir(), "proxy.db"))
	ctx := b.Context()
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("c%d", i)
		i++
		if err := s.CreateCredential(ctx, cred(id, id+"@example.com")); err != nil {
			b.Fatal(err)
		}
	}
}

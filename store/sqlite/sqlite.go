package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	sqlitedrv "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// busyTimeout is how long a connection waits for a lock held by another
// connection (another process, usually the CLI) before giving up with
// store.ErrUnavailable.
const busyTimeout = 5 * time.Second

// Store is the embedded SQLite implementation of store.Store. It is safe for
// concurrent use, and several Store values (in one process or several) may
// share one file.
type Store struct {
	path string
	// w holds the single write connection: every mutation is a BEGIN
	// IMMEDIATE transaction on it, so writers of this process queue in
	// database/sql instead of fighting over SQLite locks, and writers of
	// other processes are waited for by the busy handler.
	w *sql.DB
	// r is a pool of read-only (query_only) connections. WAL lets them
	// read while a write is in progress.
	r *sql.DB
}

var _ store.Store = (*Store)(nil)

// Open opens the database at path, creating its directory (0700) and the
// file (0600) when missing, switches it to WAL mode and brings its schema up
// to date. The caller must Close the Store.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite: open: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: create directory: %w", abs, err)
	}
	// Create the file ourselves so that it (and the -wal and -shm files,
	// which SQLite creates with the database's permissions) is private, and
	// so that an unwritable file fails here with a clear error instead of
	// SQLite silently falling back to read-only.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}

	s := &Store{path: abs}
	ok := false
	defer func() {
		if !ok {
			_ = s.Close()
		}
	}()

	busy := fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds())
	s.w, err = sql.Open("sqlite", dsn(abs, url.Values{
		"_pragma": {busy, "foreign_keys(1)", "synchronous(NORMAL)"},
		"_txlock": {"immediate"},
	}))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)

	if err := setWAL(ctx, s.w); err != nil {
		return nil, s.wrap(ctx, "open "+abs, err)
	}
	if err := migrate(ctx, s.w); err != nil {
		return nil, s.wrap(ctx, "open "+abs, err)
	}

	s.r, err = sql.Open("sqlite", dsn(abs, url.Values{
		"_pragma": {busy, "query_only(1)"},
	}))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	s.r.SetMaxOpenConns(readers)
	s.r.SetMaxIdleConns(readers)
	if err := s.r.PingContext(ctx); err != nil {
		return nil, s.wrap(ctx, "open "+abs, err)
	}
	ok = true
	return s, nil
}

// setWAL switches the file to WAL mode (a persistent property of the file)
// and checks that it took. The switch of a new file needs an exclusive lock
// and SQLite does not call the busy handler for it, so when several
// processes open a new file at once the losers retry here for up to
// busyTimeout.
func setWAL(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(busyTimeout)
	for {
		var mode string
		err := db.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode)
		switch {
		case err == nil && strings.EqualFold(mode, "wal"):
			return nil
		case err == nil:
			return fmt.Errorf("journal mode is %q, want wal (is the file system local?)", mode)
		case !isBusy(err) || time.Now().After(deadline):
			return fmt.Errorf("set WAL mode: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("set WAL mode: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// isBusy reports whether err is SQLITE_BUSY or SQLITE_LOCKED.
func isBusy(err error) bool {
	var se *sqlitedrv.Error
	if !errors.As(err, &se) {
		return false
	}
	code := se.Code() & 0xff
	return code == sqlite3.SQLITE_BUSY || code == sqlite3.SQLITE_LOCKED
}

// dsn builds a "file:" URI, so that any character in the path (a '?' in
// particular) is escaped rather than taken for the start of the parameters.
func dsn(abs string, params url.Values) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: params.Encode()}
	if !strings.HasPrefix(u.Path, "/") { // a Windows path: file:///C:/...
		u.Path = "/" + u.Path
	}
	return u.String()
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Close closes every connection. The last connection to the file to close
// checkpoints the WAL into the database.
func (s *Store) Close() error {
	var errs []error
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}

// Ping reports whether the database answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return s.wrap(ctx, "ping", err)
	}
	return nil
}

// Generation returns the counter every write transaction that changes
// something increments, whichever process made it. A write that changes
// nothing (DeleteSession of an absent id, TouchTokens of unknown ids, an
// InitAdminPassword that finds a password) leaves it unchanged.
func (s *Store) Generation(ctx context.Context) (int64, error) {
	var g int64
	if err := s.r.QueryRowContext(ctx, "SELECT value FROM generation WHERE id = 1").Scan(&g); err != nil {
		return 0, s.wrap(ctx, "generation", err)
	}
	return g, nil
}

// write runs fn, a change of configuration (credentials, tokens, the admin
// password), in a BEGIN IMMEDIATE transaction on the write connection.
// When fn reports a change, the generation is bumped in the same
// transaction and the transaction is committed; otherwise (or on error) it
// is rolled back.
func (s *Store) write(ctx context.Context, op string, fn func(tx *sql.Tx) (changed bool, err error)) error {
	return s.writeTx(ctx, op, true, fn)
}

// writeRuntime is write for runtime records (sessions, last-used times,
// credential states): they do not move the generation, so that traffic and
// cooldowns never make the server reload its configuration.
func (s *Store) writeRuntime(ctx context.Context, op string, fn func(tx *sql.Tx) (changed bool, err error)) error {
	return s.writeTx(ctx, op, false, fn)
}

func (s *Store) writeTx(ctx context.Context, op string, bump bool, fn func(tx *sql.Tx) (changed bool, err error)) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.wrap(ctx, op, err)
	}
	defer func() { _ = tx.Rollback() }()
	changed, err := fn(tx)
	if err != nil {
		return s.wrap(ctx, op, err)
	}
	if !changed {
		return nil
	}
	if bump {
		if _, err := tx.ExecContext(ctx, "UPDATE generation SET value = value + 1 WHERE id = 1"); err != nil {
			return s.wrap(ctx, op, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return s.wrap(ctx, op, err)
	}
	return nil
}

// wrap names the operation and maps SQLite errors onto the store errors:
// unique violations to store.ErrDuplicate, a lock not obtained within the
// busy timeout to store.ErrUnavailable. Errors that already wrap a store
// error pass through with the operation name added.
func (s *Store) wrap(ctx context.Context, op string, err error) error {
	var se *sqlitedrv.Error
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrDuplicate), errors.Is(err, store.ErrUnavailable):
	case errors.Is(err, sql.ErrNoRows):
		err = store.ErrNotFound
	case errors.As(err, &se):
		switch code := se.Code(); {
		case code == sqlite3.SQLITE_CONSTRAINT_UNIQUE, code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			err = fmt.Errorf("%w: %w", store.ErrDuplicate, err)
		case isBusy(se):
			err = fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
	}
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		err = fmt.Errorf("%w: %w", ctxErr, err)
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

// nanos converts several times at once, for the argument lists of a query.
func nanos(ts ...time.Time) ([]int64, error) {
	out := make([]int64, len(ts))
	for i, t := range ts {
		n, err := store.UnixNanos(t)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// rowsChanged reports whether an Exec affected at least one row.
func rowsChanged(res sql.Result) (bool, error) {
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	return n > 0, nil
}

// execOne runs a statement that must change at least one row (an update or
// delete by id): store.ErrNotFound when it changed none.
func execOne(ctx context.Context, tx *sql.Tx, query string, args ...any) (bool, error) {
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return false, err
	}
	changed, err := rowsChanged(res)
	if err == nil && !changed {
		err = store.ErrNotFound
	}
	return changed, err
}

// checkID rejects an empty identifier, which no record may have.
func checkID(what, id string) error {
	if id == "" {
		return fmt.Errorf("empty %s id", what)
	}
	return nil
}

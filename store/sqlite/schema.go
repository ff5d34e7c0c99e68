package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// migrations[i] brings the schema from version i to version i+1. Append
// only: a released migration is never edited.
var migrations = []string{
	// 1: the first schema.
	`
CREATE TABLE generation (
	id    INTEGER PRIMARY KEY CHECK (id = 1),
	value INTEGER NOT NULL
) STRICT;
INSERT INTO generation (id, value) VALUES (1, 0);

CREATE TABLE credentials (
	id              TEXT PRIMARY KEY,
	email           TEXT NOT NULL,
	email_fold      TEXT NOT NULL, -- lower-cased email, for the unique index
	token           BLOB NOT NULL, -- sealed by auth.Cipher
	cloud_id        TEXT NOT NULL,
	label           TEXT NOT NULL,
	enabled         INTEGER NOT NULL,
	max_concurrency INTEGER NOT NULL,
	created_at      INTEGER NOT NULL, -- Unix nanoseconds, 0 = zero time
	updated_at      INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX credentials_email_cloud ON credentials (email_fold, cloud_id);
CREATE INDEX credentials_created ON credentials (created_at, id);

CREATE TABLE credential_states (
	credential_id TEXT PRIMARY KEY REFERENCES credentials (id) ON DELETE CASCADE,
	state         TEXT NOT NULL,
	reason        TEXT NOT NULL,
	until         INTEGER NOT NULL,
	updated_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE api_tokens (
	id             TEXT PRIMARY KEY,
	name           TEXT NOT NULL,
	prefix         TEXT NOT NULL,
	hash           BLOB NOT NULL UNIQUE,
	created_at     INTEGER NOT NULL,
	expires_at     INTEGER NOT NULL,
	last_used_at   INTEGER NOT NULL,
	allowed_models TEXT NOT NULL, -- JSON array of strings
	rate_limit     INTEGER NOT NULL
) STRICT;
CREATE INDEX api_tokens_created ON api_tokens (created_at, id);

CREATE TABLE admin_password (
	id          INTEGER PRIMARY KEY CHECK (id = 1),
	hash        TEXT NOT NULL,
	must_change INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
	id           TEXT PRIMARY KEY, -- SHA-256 (hex) of the cookie value
	csrf_token   TEXT NOT NULL,
	created_at   INTEGER NOT NULL,
	last_seen_at INTEGER NOT NULL
) STRICT;
`,
	// 2: usage accounting; an index for pruning idle sessions.
	`
CREATE TABLE usage (
	day           TEXT NOT NULL, -- "2006-01-02", UTC
	credential_id TEXT NOT NULL, -- "" when no credential served; no foreign key: history outlives credentials
	token_id      TEXT NOT NULL,
	model         TEXT NOT NULL,
	requests      INTEGER NOT NULL,
	failures      INTEGER NOT NULL,
	input_tokens  INTEGER NOT NULL,
	output_tokens INTEGER NOT NULL,
	PRIMARY KEY (day, credential_id, token_id, model)
) STRICT, WITHOUT ROWID;

CREATE INDEX sessions_last_seen ON sessions (last_seen_at);
`,
}

// migrate applies the missing migrations in one IMMEDIATE transaction, so
// two processes opening a new file at once do not both apply them. It runs
// at every Open and does nothing when the schema is current.
func migrate(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer func() { _ = tx.Rollback() }()

	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
	id      INTEGER PRIMARY KEY CHECK (id = 1),
	version INTEGER NOT NULL
) STRICT`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var version int
	err = tx.QueryRowContext(ctx, "SELECT version FROM schema_version WHERE id = 1").Scan(&version)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("migrate: read version: %w", err)
	}
	switch {
	case version == len(migrations):
		return nil // nothing to do; the deferred rollback ends the transaction
	case version < 0:
		return fmt.Errorf("migrate: invalid database schema version %d", version)
	case version > len(migrations):
		return fmt.Errorf("migrate: database schema version %d is newer than this binary supports (%d); upgrade atlassian-proxy",
			version, len(migrations))
	}
	for v := version; v < len(migrations); v++ {
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migrate: to version %d: %w", v+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (id, version) VALUES (1, ?)
ON CONFLICT (id) DO UPDATE SET version = excluded.version`, len(migrations)); err != nil {
		return fmt.Errorf("migrate: record version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	return nil
}

package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// AdminPassword returns the admin password; store.ErrNotFound when none was
// ever set.
func (s *Store) AdminPassword(ctx context.Context) (store.AdminPassword, error) {
	var (
		p          store.AdminPassword
		mustChange int64
		updated    int64
	)
	err := s.r.QueryRowContext(ctx, `SELECT hash, must_change, updated_at FROM admin_password WHERE id = 1`).
		Scan(&p.Hash, &mustChange, &updated)
	if err != nil {
		return store.AdminPassword{}, s.wrap(ctx, "get admin password", err)
	}
	p.MustChange = mustChange != 0
	p.UpdatedAt = fromNanos(updated)
	return p, nil
}

// InitAdminPassword stores p only when no password exists and reports
// whether it did. Concurrent callers, in any process, see exactly one true.
func (s *Store) InitAdminPassword(ctx context.Context, p store.AdminPassword) (bool, error) {
	var set bool
	err := s.write(ctx, "init admin password", func(tx *sql.Tx) (bool, error) {
		updated, err := store.UnixNanos(p.UpdatedAt)
		if err != nil {
			return false, err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO admin_password (id, hash, must_change, updated_at)
VALUES (1, ?, ?, ?) ON CONFLICT (id) DO NOTHING`, p.Hash, p.MustChange, updated)
		if err != nil {
			return false, err
		}
		set, err = rowsChanged(res)
		return set, err
	})
	if err != nil {
		return false, err
	}
	return set, nil
}

// SetAdminPassword stores p, replacing any password.
func (s *Store) SetAdminPassword(ctx context.Context, p store.AdminPassword) error {
	return s.write(ctx, "set admin password", func(tx *sql.Tx) (bool, error) {
		updated, err := store.UnixNanos(p.UpdatedAt)
		if err != nil {
			return false, err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO admin_password (id, hash, must_change, updated_at)
VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET
hash = excluded.hash, must_change = excluded.must_change, updated_at = excluded.updated_at`,
			p.Hash, p.MustChange, updated)
		return err == nil, err
	})
}

// Session ids are hashes of cookies: they are left out of error messages all
// the same.

// CreateSession inserts sess; store.ErrDuplicate when its ID exists.
func (s *Store) CreateSession(ctx context.Context, sess store.Session) error {
	return s.writeRuntime(ctx, "create session", func(tx *sql.Tx) (bool, error) {
		if err := checkID("session", sess.ID); err != nil {
			return false, err
		}
		ts, err := nanos(sess.CreatedAt, sess.LastSeenAt)
		if err != nil {
			return false, err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO sessions (id, csrf_token, created_at, last_seen_at) VALUES (?, ?, ?, ?)`,
			sess.ID, sess.CSRFToken, ts[0], ts[1])
		return err == nil, err
	})
}

// GetSession returns a session; store.ErrNotFound when it does not exist.
func (s *Store) GetSession(ctx context.Context, id string) (store.Session, error) {
	var (
		sess              store.Session
		created, lastSeen int64
	)
	err := s.r.QueryRowContext(ctx, `SELECT id, csrf_token, created_at, last_seen_at FROM sessions WHERE id = ?`, id).
		Scan(&sess.ID, &sess.CSRFToken, &created, &lastSeen)
	if err != nil {
		return store.Session{}, s.wrap(ctx, "get session", err)
	}
	sess.CreatedAt = fromNanos(created)
	sess.LastSeenAt = fromNanos(lastSeen)
	return sess, nil
}

// TouchSession sets the last-seen time of a session; store.ErrNotFound when
// it does not exist.
func (s *Store) TouchSession(ctx context.Context, id string, at time.Time) error {
	return s.writeRuntime(ctx, "touch session", func(tx *sql.Tx) (bool, error) {
		n, err := store.UnixNanos(at)
		if err != nil {
			return false, err
		}
		return execOne(ctx, tx, `UPDATE sessions SET last_seen_at = ? WHERE id = ?`, n, id)
	})
}

// DeleteSession removes a session, if it exists.
func (s *Store) DeleteSession(ctx context.Context, id string) error {
	return s.writeRuntime(ctx, "delete session", func(tx *sql.Tx) (bool, error) {
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE id = ?`, id)
		if err != nil {
			return false, err
		}
		return rowsChanged(res)
	})
}

// DeleteAllSessions removes every session (logout everywhere).
func (s *Store) DeleteAllSessions(ctx context.Context) error {
	return s.writeRuntime(ctx, "delete all sessions", func(tx *sql.Tx) (bool, error) {
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions`)
		if err != nil {
			return false, err
		}
		return rowsChanged(res)
	})
}

// DeleteSessionsBefore removes the sessions last seen before t and reports
// how many it removed.
func (s *Store) DeleteSessionsBefore(ctx context.Context, t time.Time) (int, error) {
	var n int64
	err := s.writeRuntime(ctx, "delete sessions before", func(tx *sql.Tx) (bool, error) {
		cutoff, err := store.UnixNanos(t)
		if err != nil {
			return false, err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE last_seen_at < ?`, cutoff)
		if err != nil {
			return false, err
		}
		if n, err = res.RowsAffected(); err != nil {
			return false, err
		}
		return n > 0, nil
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

const credentialColumns = `id, email, token, cloud_id, label, enabled, max_concurrency, created_at, updated_at`

// foldEmail is the form of an email address the (email, cloud id)
// uniqueness is decided on.
func foldEmail(email string) string { return strings.ToLower(email) }

func scanCredential(row interface{ Scan(...any) error }) (store.Credential, error) {
	var (
		c                  store.Credential
		created, updated   int64
		enabled, maxConcur int64
	)
	if err := row.Scan(&c.ID, &c.Email, &c.Token, &c.CloudID, &c.Label, &enabled, &maxConcur, &created, &updated); err != nil {
		return store.Credential{}, err
	}
	c.Enabled = enabled != 0
	c.MaxConcurrency = int(maxConcur)
	c.CreatedAt = fromNanos(created)
	c.UpdatedAt = fromNanos(updated)
	return c, nil
}

// ListCredentials returns every credential, sorted by CreatedAt then ID.
func (s *Store) ListCredentials(ctx context.Context) ([]store.Credential, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+credentialColumns+` FROM credentials ORDER BY created_at, id`)
	if err != nil {
		return nil, s.wrap(ctx, "list credentials", err)
	}
	defer rows.Close()
	out := []store.Credential{}
	for rows.Next() {
		c, err := scanCredential(rows)
		if err != nil {
			return nil, s.wrap(ctx, "list credentials", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(ctx, "list credentials", err)
	}
	return out, nil
}

// GetCredential returns one credential, or store.ErrNotFound.
func (s *Store) GetCredential(ctx context.Context, id string) (store.Credential, error) {
	c, err := scanCredential(s.r.QueryRowContext(ctx, `SELECT `+credentialColumns+` FROM credentials WHERE id = ?`, id))
	if err != nil {
		return store.Credential{}, s.wrap(ctx, fmt.Sprintf("get credential %q", id), err)
	}
	return c, nil
}

// CreateCredential inserts c; store.ErrDuplicate when its ID, or its email
// (compared case-insensitively) and cloud id, are taken.
func (s *Store) CreateCredential(ctx context.Context, c store.Credential) error {
	op := fmt.Sprintf("create credential %q", c.ID)
	return s.write(ctx, op, func(tx *sql.Tx) (bool, error) {
		if err := checkID("credential", c.ID); err != nil {
			return false, err
		}
		ts, err := nanos(c.CreatedAt, c.UpdatedAt)
		if err != nil {
			return false, err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO credentials
(id, email, email_fold, token, cloud_id, label, enabled, max_concurrency, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			c.ID, c.Email, foldEmail(c.Email), nonNil(c.Token), c.CloudID, c.Label, c.Enabled, c.MaxConcurrency, ts[0], ts[1])
		return err == nil, err
	})
}

// UpdateCredential replaces every field of the credential c.ID except
// CreatedAt; store.ErrNotFound when it does not exist, store.ErrDuplicate
// when the new email and cloud id belong to another credential.
func (s *Store) UpdateCredential(ctx context.Context, c store.Credential) error {
	op := fmt.Sprintf("update credential %q", c.ID)
	return s.write(ctx, op, func(tx *sql.Tx) (bool, error) {
		updated, err := store.UnixNanos(c.UpdatedAt)
		if err != nil {
			return false, err
		}
		return execOne(ctx, tx, `UPDATE credentials SET
email = ?, email_fold = ?, token = ?, cloud_id = ?, label = ?, enabled = ?, max_concurrency = ?, updated_at = ?
WHERE id = ?`,
			c.Email, foldEmail(c.Email), nonNil(c.Token), c.CloudID, c.Label, c.Enabled, c.MaxConcurrency, updated, c.ID)
	})
}

// DeleteCredential removes a credential and its state; store.ErrNotFound
// when it does not exist.
func (s *Store) DeleteCredential(ctx context.Context, id string) error {
	op := fmt.Sprintf("delete credential %q", id)
	return s.write(ctx, op, func(tx *sql.Tx) (bool, error) {
		// The foreign key's ON DELETE CASCADE removes the state too; the
		// explicit delete keeps that true should foreign keys be off.
		if _, err := tx.ExecContext(ctx, `DELETE FROM credential_states WHERE credential_id = ?`, id); err != nil {
			return false, err
		}
		return execOne(ctx, tx, `DELETE FROM credentials WHERE id = ?`, id)
	})
}

// SetCredentialState inserts or replaces the state of a credential;
// store.ErrNotFound when the credential does not exist.
func (s *Store) SetCredentialState(ctx context.Context, st store.CredentialState) error {
	op := fmt.Sprintf("set credential state %q", st.CredentialID)
	return s.writeRuntime(ctx, op, func(tx *sql.Tx) (bool, error) {
		ts, err := nanos(st.Until, st.UpdatedAt)
		if err != nil {
			return false, err
		}
		var one int
		err = tx.QueryRowContext(ctx, `SELECT 1 FROM credentials WHERE id = ?`, st.CredentialID).Scan(&one)
		if err != nil {
			return false, err // sql.ErrNoRows becomes store.ErrNotFound
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO credential_states (credential_id, state, reason, until, updated_at)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (credential_id) DO UPDATE SET
state = excluded.state, reason = excluded.reason, until = excluded.until, updated_at = excluded.updated_at`,
			st.CredentialID, st.State, st.Reason, ts[0], ts[1])
		return err == nil, err
	})
}

// ClearCredentialState removes the state of a credential, if any.
func (s *Store) ClearCredentialState(ctx context.Context, credentialID string) error {
	op := fmt.Sprintf("clear credential state %q", credentialID)
	return s.writeRuntime(ctx, op, func(tx *sql.Tx) (bool, error) {
		res, err := tx.ExecContext(ctx, `DELETE FROM credential_states WHERE credential_id = ?`, credentialID)
		if err != nil {
			return false, err
		}
		return rowsChanged(res)
	})
}

// ListCredentialStates returns the states in force, sorted by credential
// id: every "invalid" and "ready" state, and the other states ("cooling")
// whose Until is still in the future.
func (s *Store) ListCredentialStates(ctx context.Context) ([]store.CredentialState, error) {
	const op = "list credential states"
	rows, err := s.r.QueryContext(ctx, `SELECT credential_id, state, reason, until, updated_at
FROM credential_states WHERE state IN (?, ?) OR until > ? ORDER BY credential_id`,
		store.StateInvalid, store.StateReady, time.Now().UnixNano())
	if err != nil {
		return nil, s.wrap(ctx, op, err)
	}
	defer rows.Close()
	out := []store.CredentialState{}
	for rows.Next() {
		var (
			st             store.CredentialState
			until, updated int64
		)
		if err := rows.Scan(&st.CredentialID, &st.State, &st.Reason, &until, &updated); err != nil {
			return nil, s.wrap(ctx, op, err)
		}
		st.Until = fromNanos(until)
		st.UpdatedAt = fromNanos(updated)
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(ctx, op, err)
	}
	return out, nil
}

// nonNil turns a nil slice into an empty one, for NOT NULL BLOB columns.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

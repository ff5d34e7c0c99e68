package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// ListTokens returns every API token, sorted by CreatedAt then ID.
func (s *Store) ListTokens(ctx context.Context) ([]store.APIToken, error) {
	const op = "list tokens"
	rows, err := s.r.QueryContext(ctx, `SELECT id, name, prefix, hash, created_at, expires_at, last_used_at, allowed_models, rate_limit
FROM api_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, s.wrap(ctx, op, err)
	}
	defer rows.Close()
	out := []store.APIToken{}
	for rows.Next() {
		var (
			t                          store.APIToken
			created, expires, lastUsed int64
			models                     string
			rateLimit                  int64
		)
		if err := rows.Scan(&t.ID, &t.Name, &t.Prefix, &t.Hash, &created, &expires, &lastUsed, &models, &rateLimit); err != nil {
			return nil, s.wrap(ctx, op, err)
		}
		t.CreatedAt = fromNanos(created)
		t.ExpiresAt = fromNanos(expires)
		t.LastUsedAt = fromNanos(lastUsed)
		t.RateLimit = int(rateLimit)
		if t.AllowedModels, err = store.DecodeModels(models); err != nil {
			return nil, s.wrap(ctx, op, fmt.Errorf("token %q: %w", t.ID, err))
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(ctx, op, err)
	}
	return out, nil
}

// CreateToken inserts t; store.ErrDuplicate when its ID or its hash exists.
func (s *Store) CreateToken(ctx context.Context, t store.APIToken) error {
	op := fmt.Sprintf("create token %q", t.ID)
	return s.write(ctx, op, func(tx *sql.Tx) (bool, error) {
		if err := checkID("token", t.ID); err != nil {
			return false, err
		}
		ts, err := nanos(t.CreatedAt, t.ExpiresAt, t.LastUsedAt)
		if err != nil {
			return false, err
		}
		models, err := store.EncodeModels(t.AllowedModels)
		if err != nil {
			return false, err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO api_tokens
(id, name, prefix, hash, created_at, expires_at, last_used_at, allowed_models, rate_limit)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			t.ID, t.Name, t.Prefix, nonNil(t.Hash), ts[0], ts[1], ts[2], models, t.RateLimit)
		return err == nil, err
	})
}

// UpdateToken changes the name, expiry, allowed models and rate limit of
// the token t.ID; the other fields are left as they are. store.ErrNotFound
// when it does not exist.
func (s *Store) UpdateToken(ctx context.Context, t store.APIToken) error {
	op := fmt.Sprintf("update token %q", t.ID)
	return s.write(ctx, op, func(tx *sql.Tx) (bool, error) {
		expires, err := store.UnixNanos(t.ExpiresAt)
		if err != nil {
			return false, err
		}
		models, err := store.EncodeModels(t.AllowedModels)
		if err != nil {
			return false, err
		}
		return execOne(ctx, tx, `UPDATE api_tokens SET name = ?, expires_at = ?, allowed_models = ?, rate_limit = ?
WHERE id = ?`, t.Name, expires, models, t.RateLimit, t.ID)
	})
}

// DeleteToken removes a token; store.ErrNotFound when it does not exist.
func (s *Store) DeleteToken(ctx context.Context, id string) error {
	op := fmt.Sprintf("delete token %q", id)
	return s.write(ctx, op, func(tx *sql.Tx) (bool, error) {
		return execOne(ctx, tx, `DELETE FROM api_tokens WHERE id = ?`, id)
	})
}

// TouchTokens sets the last-used time of every listed token in one
// transaction; unknown ids are ignored.
func (s *Store) TouchTokens(ctx context.Context, lastUsed map[string]time.Time) error {
	if len(lastUsed) == 0 {
		return nil
	}
	return s.writeRuntime(ctx, "touch tokens", func(tx *sql.Tx) (bool, error) {
		stmt, err := tx.PrepareContext(ctx, `UPDATE api_tokens SET last_used_at = ? WHERE id = ?`)
		if err != nil {
			return false, err
		}
		defer stmt.Close()
		changed := false
		for id, at := range lastUsed {
			n, err := store.UnixNanos(at)
			if err != nil {
				return false, fmt.Errorf("token %q: %w", id, err)
			}
			res, err := stmt.ExecContext(ctx, n, id)
			if err != nil {
				return false, err
			}
			c, err := rowsChanged(res)
			if err != nil {
				return false, err
			}
			changed = changed || c
		}
		return changed, nil
	})
}

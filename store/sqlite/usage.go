package sqlite

import (
	"context"
	"database/sql"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// AddUsage adds the counts of every row to the stored row with the same
// (Day, CredentialID, TokenID, Model), creating it when absent. The whole
// batch is one transaction; a batch with an invalid day writes nothing.
func (s *Store) AddUsage(ctx context.Context, rows []store.Usage) error {
	if len(rows) == 0 {
		return nil
	}
	return s.writeRuntime(ctx, "add usage", func(tx *sql.Tx) (bool, error) {
		for _, u := range rows {
			if err := store.CheckDay(u.Day); err != nil {
				return false, err
			}
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO usage
(day, credential_id, token_id, model, requests, failures, input_tokens, output_tokens)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (day, credential_id, token_id, model) DO UPDATE SET
requests = requests + excluded.requests,
failures = failures + excluded.failures,
input_tokens = input_tokens + excluded.input_tokens,
output_tokens = output_tokens + excluded.output_tokens`)
		if err != nil {
			return false, err
		}
		defer stmt.Close()
		for _, u := range rows {
			if _, err := stmt.ExecContext(ctx, u.Day, u.CredentialID, u.TokenID, u.Model,
				u.Requests, u.Failures, u.InputTokens, u.OutputTokens); err != nil {
				return false, err
			}
		}
		return true, nil
	})
}

// ListUsage returns the rows of the days from fromDay to toDay (both
// included), sorted by Day, CredentialID, TokenID, Model.
func (s *Store) ListUsage(ctx context.Context, fromDay, toDay string) ([]store.Usage, error) {
	const op = "list usage"
	for _, d := range []string{fromDay, toDay} {
		if err := store.CheckDay(d); err != nil {
			return nil, s.wrap(ctx, op, err)
		}
	}
	rows, err := s.r.QueryContext(ctx, `SELECT day, credential_id, token_id, model, requests, failures, input_tokens, output_tokens
FROM usage WHERE day >= ? AND day <= ? ORDER BY day, credential_id, token_id, model`, fromDay, toDay)
	if err != nil {
		return nil, s.wrap(ctx, op, err)
	}
	defer rows.Close()
	out := []store.Usage{}
	for rows.Next() {
		var u store.Usage
		if err := rows.Scan(&u.Day, &u.CredentialID, &u.TokenID, &u.Model,
			&u.Requests, &u.Failures, &u.InputTokens, &u.OutputTokens); err != nil {
			return nil, s.wrap(ctx, op, err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(ctx, op, err)
	}
	return out, nil
}

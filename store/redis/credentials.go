package redis

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// credIndex is the entry of the (email, cloud id) uniqueness index: the
// lower-cased email and the cloud id, separated by a NUL byte.
func credIndex(c store.Credential) string {
	return strings.ToLower(c.Email) + "\x00" + c.CloudID
}

// credFields are the hash fields of a credential; created_at is left out
// for an update, which keeps the stored one.
func credFields(c store.Credential, withCreated bool) ([]any, error) {
	ts, err := nanos(c.CreatedAt, c.UpdatedAt)
	if err != nil {
		return nil, err
	}
	f := []any{
		"email", c.Email, "token", string(c.Token), "cloud", c.CloudID, "label", c.Label,
		"enabled", boolString(c.Enabled), "maxc", strconv.Itoa(c.MaxConcurrency), "updated", ts[1],
	}
	if withCreated {
		f = append(f, "created", ts[0])
	}
	return f, nil
}

func decodeCredential(id string, r record) (store.Credential, error) {
	c := store.Credential{
		ID: id, Email: r["email"], CloudID: r["cloud"], Label: r["label"], Enabled: r["enabled"] == "1",
	}
	if tok := r["token"]; tok != "" {
		c.Token = []byte(tok)
	}
	maxc, err := r.int("maxc")
	if err != nil {
		return store.Credential{}, err
	}
	c.MaxConcurrency = int(maxc)
	if c.CreatedAt, err = r.time("created"); err != nil {
		return store.Credential{}, err
	}
	if c.UpdatedAt, err = r.time("updated"); err != nil {
		return store.Credential{}, err
	}
	return c, nil
}

// ListCredentials returns every credential, sorted by CreatedAt then ID.
func (s *Store) ListCredentials(ctx context.Context) ([]store.Credential, error) {
	out := []store.Credential{}
	err := s.run(ctx, "list credentials", func(ctx context.Context) error {
		return s.listed(ctx, listRecords, []string{s.k.creds}, []any{s.k.cred}, func(id string, r record) error {
			c, err := decodeCredential(id, r)
			out = append(out, c)
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b store.Credential) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// GetCredential returns one credential, or store.ErrNotFound.
func (s *Store) GetCredential(ctx context.Context, id string) (store.Credential, error) {
	var c store.Credential
	err := s.run(ctx, fmt.Sprintf("get credential %q", id), func(ctx context.Context) error {
		r, err := s.getRecord(ctx, s.k.cred+id)
		if err != nil {
			return err
		}
		c, err = decodeCredential(id, r)
		return err
	})
	return c, err
}

// CreateCredential stores c; store.ErrDuplicate when its ID, or its email
// (compared case-insensitively) and cloud id, are taken.
func (s *Store) CreateCredential(ctx context.Context, c store.Credential) error {
	op := fmt.Sprintf("create credential %q", c.ID)
	if err := checkID("credential", c.ID); err != nil {
		return s.invalid(op, err)
	}
	return s.writeCredential(ctx, op, credCreate, c, true)
}

// UpdateCredential replaces every field of the credential c.ID except
// CreatedAt; store.ErrNotFound when it does not exist, store.ErrDuplicate
// when the new email and cloud id belong to another credential.
func (s *Store) UpdateCredential(ctx context.Context, c store.Credential) error {
	return s.writeCredential(ctx, fmt.Sprintf("update credential %q", c.ID), credUpdate, c, false)
}

// writeCredential runs credCreate or credUpdate (same keys and arguments)
// with the fields of c.
func (s *Store) writeCredential(ctx context.Context, op string, sc *goredis.Script, c store.Credential, withCreated bool) error {
	fields, err := credFields(c, withCreated)
	if err != nil {
		return s.invalid(op, err)
	}
	return s.run(ctx, op, func(ctx context.Context) error {
		args := append([]any{c.ID, credIndex(c), s.k.events}, fields...)
		return s.script(ctx, sc, []string{s.k.cred + c.ID, s.k.creds, s.k.credIdx, s.k.gen}, args...)
	})
}

// DeleteCredential removes a credential and its state; store.ErrNotFound
// when it does not exist.
func (s *Store) DeleteCredential(ctx context.Context, id string) error {
	return s.run(ctx, fmt.Sprintf("delete credential %q", id), func(ctx context.Context) error {
		return s.script(ctx, credDelete,
			[]string{s.k.cred + id, s.k.creds, s.k.credIdx, s.k.gen, s.k.state + id, s.k.states},
			id, s.k.events)
	})
}

// expires reports whether a state lapses at its Until: every state but
// "invalid" and "ready", which stay until replaced or cleared.
func expires(state string) bool {
	return state != store.StateInvalid && state != store.StateReady
}

// SetCredentialState replaces the state of a credential and publishes the
// change; store.ErrNotFound when the credential does not exist. A state
// that lapses ("cooling") is kept in Redis until its Until (rounded up to
// the millisecond), so an expired cooldown disappears by itself.
func (s *Store) SetCredentialState(ctx context.Context, st store.CredentialState) error {
	op := fmt.Sprintf("set credential state %q", st.CredentialID)
	ts, err := nanos(st.Until, st.UpdatedAt)
	if err != nil {
		return s.invalid(op, err)
	}
	expireAt := ""
	if expires(st.State) {
		ms := int64(0) // the zero Until: lapsed already
		if !st.Until.IsZero() {
			ms = st.Until.Add(time.Millisecond - 1).UnixMilli()
		}
		expireAt = strconv.FormatInt(max(ms, 1), 10)
	}
	return s.run(ctx, op, func(ctx context.Context) error {
		return s.script(ctx, stateSet,
			[]string{s.k.cred + st.CredentialID, s.k.state + st.CredentialID, s.k.states},
			st.CredentialID, s.k.events, expireAt,
			"state", st.State, "reason", st.Reason, "until", ts[0], "updated", ts[1])
	})
}

// ClearCredentialState removes the state of a credential, if any.
func (s *Store) ClearCredentialState(ctx context.Context, credentialID string) error {
	return s.run(ctx, fmt.Sprintf("clear credential state %q", credentialID), func(ctx context.Context) error {
		return s.script(ctx, stateClear, []string{s.k.state + credentialID, s.k.states}, credentialID, s.k.events)
	})
}

// ListCredentialStates returns the states in force, sorted by credential
// id: every "invalid" and "ready" state, and the others ("cooling") whose
// Until is after the local clock's now.
func (s *Store) ListCredentialStates(ctx context.Context) ([]store.CredentialState, error) {
	out := []store.CredentialState{}
	err := s.run(ctx, "list credential states", func(ctx context.Context) error {
		now := time.Now()
		return s.listed(ctx, listRecords, []string{s.k.states}, []any{s.k.state}, func(id string, r record) error {
			st := store.CredentialState{CredentialID: id, State: r["state"], Reason: r["reason"]}
			var err error
			if st.Until, err = r.time("until"); err != nil {
				return err
			}
			if st.UpdatedAt, err = r.time("updated"); err != nil {
				return err
			}
			if !expires(st.State) || st.Until.After(now) {
				out = append(out, st)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b store.CredentialState) int { return strings.Compare(a.CredentialID, b.CredentialID) })
	return out, nil
}

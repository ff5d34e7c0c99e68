package redis

import (
	"context"
	"strconv"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

func passwordFields(p store.AdminPassword) ([]any, error) {
	ts, err := nanos(p.UpdatedAt)
	if err != nil {
		return nil, err
	}
	return []any{"hash", p.Hash, "must_change", boolString(p.MustChange), "updated", ts[0]}, nil
}

// AdminPassword returns the admin password; store.ErrNotFound when none was
// ever set.
func (s *Store) AdminPassword(ctx context.Context) (store.AdminPassword, error) {
	var p store.AdminPassword
	err := s.run(ctx, "get admin password", func(ctx context.Context) error {
		r, err := s.getRecord(ctx, s.k.admin)
		if err != nil {
			return err
		}
		p = store.AdminPassword{Hash: r["hash"], MustChange: r["must_change"] == "1"}
		p.UpdatedAt, err = r.time("updated")
		return err
	})
	return p, err
}

// InitAdminPassword stores p only when no password exists and reports
// whether it did. It is one script, so replicas starting at once store
// exactly one password.
func (s *Store) InitAdminPassword(ctx context.Context, p store.AdminPassword) (bool, error) {
	const op = "init admin password"
	fields, err := passwordFields(p)
	if err != nil {
		return false, s.invalid(op, err)
	}
	var set bool
	err = s.run(ctx, op, func(ctx context.Context) error {
		n, err := adminInit.Run(ctx, s.client, []string{s.k.admin, s.k.gen}, append([]any{s.k.events}, fields...)...).Int()
		set = n == 1
		return err
	})
	return set, err
}

// SetAdminPassword stores p, replacing any password.
func (s *Store) SetAdminPassword(ctx context.Context, p store.AdminPassword) error {
	const op = "set admin password"
	fields, err := passwordFields(p)
	if err != nil {
		return s.invalid(op, err)
	}
	return s.run(ctx, op, func(ctx context.Context) error {
		return s.script(ctx, adminSet, []string{s.k.admin, s.k.gen}, append([]any{s.k.events}, fields...)...)
	})
}

// Session ids are hashes of cookies: they are left out of error messages all
// the same.

// sessionMember is the entry of a session in the index: its sortable
// last-seen time, then its id.
func sessionMember(id string, lastSeen time.Time) (member, seen string, err error) {
	n, err := store.UnixNanos(lastSeen)
	if err != nil {
		return "", "", err
	}
	return sortable(n) + id, strconv.FormatInt(n, 10), nil
}

// CreateSession stores sess; store.ErrDuplicate when its ID exists.
func (s *Store) CreateSession(ctx context.Context, sess store.Session) error {
	const op = "create session"
	if err := checkID("session", sess.ID); err != nil {
		return s.invalid(op, err)
	}
	member, seen, err := sessionMember(sess.ID, sess.LastSeenAt)
	if err != nil {
		return s.invalid(op, err)
	}
	created, err := nanos(sess.CreatedAt)
	if err != nil {
		return s.invalid(op, err)
	}
	return s.run(ctx, op, func(ctx context.Context) error {
		return s.script(ctx, sessCreate, []string{s.k.sess + sess.ID, s.k.sessions},
			member, "csrf", sess.CSRFToken, "created", created[0], "seen", seen)
	})
}

// GetSession returns a session; store.ErrNotFound when it does not exist.
func (s *Store) GetSession(ctx context.Context, id string) (store.Session, error) {
	var sess store.Session
	err := s.run(ctx, "get session", func(ctx context.Context) error {
		if id == "" {
			return store.ErrNotFound
		}
		r, err := s.getRecord(ctx, s.k.sess+id)
		if err != nil {
			return err
		}
		sess = store.Session{ID: id, CSRFToken: r["csrf"]}
		if sess.CreatedAt, err = r.time("created"); err != nil {
			return err
		}
		sess.LastSeenAt, err = r.time("seen")
		return err
	})
	return sess, err
}

// TouchSession sets the last-seen time of a session; store.ErrNotFound when
// it does not exist.
func (s *Store) TouchSession(ctx context.Context, id string, at time.Time) error {
	const op = "touch session"
	member, seen, err := sessionMember(id, at)
	if err != nil {
		return s.invalid(op, err)
	}
	return s.run(ctx, op, func(ctx context.Context) error {
		return s.script(ctx, sessTouch, []string{s.k.sess + id, s.k.sessions}, member, seen)
	})
}

// DeleteSession removes a session, if it exists.
func (s *Store) DeleteSession(ctx context.Context, id string) error {
	return s.run(ctx, "delete session", func(ctx context.Context) error {
		return s.script(ctx, sessDelete, []string{s.k.sess + id, s.k.sessions})
	})
}

// DeleteAllSessions removes every session of this prefix (logout
// everywhere).
func (s *Store) DeleteAllSessions(ctx context.Context) error {
	_, err := s.deleteSessions(ctx, "delete all sessions", "-", "+")
	return err
}

// DeleteSessionsBefore removes the sessions last seen before t and reports
// how many it removed.
func (s *Store) DeleteSessionsBefore(ctx context.Context, t time.Time) (int, error) {
	const op = "delete sessions before"
	n, err := store.UnixNanos(t)
	if err != nil {
		return 0, s.invalid(op, err)
	}
	// Members are the sortable time then the id: every member of an
	// earlier time sorts before the bare time of t, and none of t's own.
	return s.deleteSessions(ctx, op, "-", "("+sortable(n))
}

func (s *Store) deleteSessions(ctx context.Context, op, from, to string) (int, error) {
	var n int
	err := s.run(ctx, op, func(ctx context.Context) error {
		var err error
		n, err = sessDeleteRange.Run(ctx, s.client, []string{s.k.sessions}, s.k.sess, sortLen, from, to).Int()
		return err
	})
	return n, err
}

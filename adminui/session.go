package adminui

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// touchEvery bounds how often a session's last-seen time is written: a
// write per request would bump the store generation (and make the server
// reload) on every admin click. The idle timeout is therefore exact to
// within this interval.
const touchEvery = time.Minute

// SessionInfo is a live admin session as the handlers need it.
type SessionInfo struct {
	// Key is the store key of the session (SHA-256 hex of the cookie
	// value), never the cookie value itself.
	Key        string
	CSRFToken  string
	CreatedAt  time.Time
	LastSeenAt time.Time
	// IdleExpiresAt and ExpiresAt are when the session ends if unused, and
	// at the latest.
	IdleExpiresAt      time.Time
	ExpiresAt          time.Time
	MustChangePassword bool
}

// EnsureAdminPassword makes sure an admin password exists at start-up.
//
// With fromEnv empty: when no password is stored, a random one is generated
// and stored (atomic set-if-absent, so two processes starting together
// agree) marked must-change, and returned so that the caller can print it
// once; otherwise "" is returned.
//
// With fromEnv set (ADMIN_PASSWORD): it must follow the password rules
// (a *ValidationError with Field "password" otherwise); the stored hash is
// made to match it, not must-change, and "" is returned. When that replaces
// a different stored password, every session ends.
func (s *Service) EnsureAdminPassword(ctx context.Context, fromEnv string) (string, error) {
	if fromEnv != "" {
		return "", s.ensureFromEnv(ctx, fromEnv)
	}
	_, err := s.st.AdminPassword(ctx)
	switch {
	case err == nil:
		return "", nil
	case !errors.Is(err, store.ErrNotFound):
		return "", fmt.Errorf("ensure admin password: %w", err)
	}
	pw, err := auth.GeneratePassword()
	if err != nil {
		return "", fmt.Errorf("ensure admin password: %w", err)
	}
	hash, err := auth.HashPassword(pw)
	if err != nil {
		return "", fmt.Errorf("ensure admin password: %w", err)
	}
	set, err := s.st.InitAdminPassword(ctx, store.AdminPassword{Hash: hash, MustChange: true, UpdatedAt: s.now().UTC()})
	if err != nil {
		return "", fmt.Errorf("ensure admin password: %w", err)
	}
	if !set {
		return "", nil // another process got there first
	}
	s.logger.LogAttrs(ctx, slog.LevelInfo, "admin password generated")
	return pw, nil
}

func (s *Service) ensureFromEnv(ctx context.Context, pw string) error {
	if err := validateNewPassword("password", pw); err != nil {
		return err
	}
	cur, err := s.st.AdminPassword(ctx)
	existed := err == nil
	switch {
	case existed:
		if !cur.MustChange && auth.VerifyPassword(cur.Hash, pw) {
			return nil
		}
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("ensure admin password: %w", err)
	}
	hash, err := auth.HashPassword(pw)
	if err != nil {
		return fmt.Errorf("ensure admin password: %w", err)
	}
	if err := s.st.SetAdminPassword(ctx, store.AdminPassword{Hash: hash, UpdatedAt: s.now().UTC()}); err != nil {
		return fmt.Errorf("ensure admin password: %w", err)
	}
	if existed {
		if err := s.st.DeleteAllSessions(ctx); err != nil {
			return fmt.Errorf("ensure admin password: end sessions: %w", err)
		}
	}
	s.logger.LogAttrs(ctx, slog.LevelInfo, "admin password set from the environment")
	return nil
}

// ChangePassword replaces the admin password after checking the current
// one, and ends every session (the caller's too). A wrong current password
// is a *ValidationError on "current"; a new one that breaks the rules (12
// to 128 characters, different from the current one) one on "new".
func (s *Service) ChangePassword(ctx context.Context, current, newPassword string) error {
	if current == "" {
		return invalid("current", "current password is required")
	}
	if err := validateNewPassword("new", newPassword); err != nil {
		return err
	}
	release, err := s.hashSlot(ctx)
	if err != nil {
		return err
	}
	defer release()
	cur, err := s.st.AdminPassword(ctx)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("change password: %w", err)
	}
	if err != nil || !auth.VerifyPassword(cur.Hash, current) {
		return invalid("current", "current password is incorrect")
	}
	if current == newPassword {
		return invalid("new", "the new password must differ from the current one")
	}
	hash, err := auth.HashPassword(newPassword)
	if err != nil {
		return fmt.Errorf("change password: %w", err)
	}
	if err := s.setPassword(ctx, store.AdminPassword{Hash: hash, UpdatedAt: s.now().UTC()}); err != nil {
		return fmt.Errorf("change password: %w", err)
	}
	s.logger.LogAttrs(ctx, slog.LevelInfo, "admin password changed; all sessions ended")
	return nil
}

// ResetPassword replaces the admin password with a new random one that
// must be changed at the next login, ends every session, and returns it
// (the CLI prints it once).
func (s *Service) ResetPassword(ctx context.Context) (string, error) {
	pw, err := auth.GeneratePassword()
	if err != nil {
		return "", fmt.Errorf("reset password: %w", err)
	}
	hash, err := auth.HashPassword(pw)
	if err != nil {
		return "", fmt.Errorf("reset password: %w", err)
	}
	if err := s.setPassword(ctx, store.AdminPassword{Hash: hash, MustChange: true, UpdatedAt: s.now().UTC()}); err != nil {
		return "", fmt.Errorf("reset password: %w", err)
	}
	s.logger.LogAttrs(ctx, slog.LevelInfo, "admin password reset; all sessions ended")
	return pw, nil
}

func (s *Service) setPassword(ctx context.Context, p store.AdminPassword) error {
	if err := s.st.SetAdminPassword(ctx, p); err != nil {
		return err
	}
	if err := s.st.DeleteAllSessions(ctx); err != nil {
		return fmt.Errorf("password set, but ending sessions failed: %w", err)
	}
	return nil
}

// Login checks the admin password and opens a new session. It returns the
// session id (the cookie value: 256 random bits; the store keeps only its
// SHA-256), the session's CSRF token and whether the password must be
// changed first. Every failure costs one argon2id verification, also when
// no password is set, and returns ErrInvalidPassword.
func (s *Service) Login(ctx context.Context, password string) (sessionID, csrf string, mustChange bool, err error) {
	// The session counts from before the check: if the password changes
	// while this login runs, the session is older than the new password
	// and is refused (see session).
	now := s.now().UTC()
	release, err := s.hashSlot(ctx)
	if err != nil {
		return "", "", false, err
	}
	defer release()
	cur, err := s.st.AdminPassword(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
		auth.VerifyPassword(s.dummy(), password) // same cost as a real check
		return "", "", false, ErrInvalidPassword
	case err != nil:
		return "", "", false, fmt.Errorf("login: %w", err)
	}
	if ok := auth.VerifyPassword(cur.Hash, password); !ok || password == "" {
		return "", "", false, ErrInvalidPassword
	}
	sessionID, err = randomToken()
	if err != nil {
		return "", "", false, fmt.Errorf("login: %w", err)
	}
	csrf, err = randomToken()
	if err != nil {
		return "", "", false, fmt.Errorf("login: %w", err)
	}
	if err := s.st.CreateSession(ctx, store.Session{
		ID:         SessionKey(sessionID),
		CSRFToken:  csrf,
		CreatedAt:  now,
		LastSeenAt: now,
	}); err != nil {
		return "", "", false, fmt.Errorf("login: %w", err)
	}
	return sessionID, csrf, cur.MustChange, nil
}

// dummy is a valid argon2id hash of a random password, verified when no
// admin password exists so that a failure takes the usual time.
func (s *Service) dummy() string {
	s.dummyOnce.Do(func() {
		pw, err := randomToken()
		if err == nil {
			s.dummyHash, err = auth.HashPassword(pw)
		}
		if err != nil {
			s.logger.Error("cannot build the dummy password hash", slog.String("error", err.Error()))
		}
	})
	return s.dummyHash
}

// Session looks a session up by its id (the cookie value) and enforces the
// idle and absolute timeouts: an expired session is deleted and
// ErrNoSession returned. A live one has its last-seen time refreshed (at
// most once a minute) and reports whether the password must be changed.
func (s *Service) Session(ctx context.Context, sessionID string) (SessionInfo, error) {
	return s.session(ctx, sessionID, true)
}

// PeekSession is Session without refreshing the last-seen time: for
// requests a page makes by itself (the dashboard's refresh), which must
// not keep an unattended session alive.
func (s *Service) PeekSession(ctx context.Context, sessionID string) (SessionInfo, error) {
	return s.session(ctx, sessionID, false)
}

func (s *Service) session(ctx context.Context, sessionID string, touch bool) (SessionInfo, error) {
	if sessionID == "" {
		return SessionInfo{}, ErrNoSession
	}
	key := SessionKey(sessionID)
	sess, err := s.st.GetSession(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return SessionInfo{}, ErrNoSession
	case err != nil:
		return SessionInfo{}, fmt.Errorf("session: %w", err)
	}
	now := s.now()
	expires := sess.CreatedAt.Add(s.sessionAbsolute)
	if !now.Before(expires) || !now.Before(sess.LastSeenAt.Add(s.sessionIdle)) {
		if err := s.st.DeleteSession(ctx, key); err != nil {
			s.logger.LogAttrs(ctx, slog.LevelWarn, "delete expired session", slog.String("error", err.Error()))
		}
		return SessionInfo{}, ErrNoSession
	}
	if touch && now.Sub(sess.LastSeenAt) >= touchEvery {
		switch err := s.st.TouchSession(ctx, key, now.UTC()); {
		case errors.Is(err, store.ErrNotFound):
			return SessionInfo{}, ErrNoSession // ended meanwhile
		case err != nil:
			return SessionInfo{}, fmt.Errorf("session: %w", err)
		}
		sess.LastSeenAt = now
	}
	pw, err := s.st.AdminPassword(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return SessionInfo{}, ErrNoSession // password gone: nothing to be logged in to
	case err != nil:
		return SessionInfo{}, fmt.Errorf("session: %w", err)
	}
	if sess.CreatedAt.Before(pw.UpdatedAt) {
		// Opened with an earlier password: a password change ends every
		// session, also one a login still in flight wrote after the
		// change's DeleteAllSessions, or one that call failed to delete.
		if err := s.st.DeleteSession(ctx, key); err != nil {
			s.logger.LogAttrs(ctx, slog.LevelWarn, "delete stale session", slog.String("error", err.Error()))
		}
		return SessionInfo{}, ErrNoSession
	}
	idle := sess.LastSeenAt.Add(s.sessionIdle)
	if idle.After(expires) {
		idle = expires
	}
	return SessionInfo{
		Key:                key,
		CSRFToken:          sess.CSRFToken,
		CreatedAt:          sess.CreatedAt,
		LastSeenAt:         sess.LastSeenAt,
		IdleExpiresAt:      idle,
		ExpiresAt:          expires,
		MustChangePassword: pw.MustChange,
	}, nil
}

// Logout ends one session; an unknown id is not an error.
func (s *Service) Logout(ctx context.Context, sessionID string) error {
	if sessionID == "" {
		return nil
	}
	if err := s.st.DeleteSession(ctx, SessionKey(sessionID)); err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	return nil
}

// EndAllSessions ends every admin session.
func (s *Service) EndAllSessions(ctx context.Context) error {
	if err := s.st.DeleteAllSessions(ctx); err != nil {
		return fmt.Errorf("end sessions: %w", err)
	}
	return nil
}

// SessionKey is the store key of a session id: its SHA-256 in hex.
func SessionKey(sessionID string) string {
	sum := sha256.Sum256([]byte(sessionID))
	return hex.EncodeToString(sum[:])
}

// randomToken returns 256 random bits, base64url without padding.
func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// hashSlots bounds the argon2id checks and hashes running at once: each
// takes 19 MiB, so a burst of logins (each within its rate limit, from
// several addresses) must not take the process's memory with it.
const (
	hashSlots    = 2
	hashSlotWait = 3 * time.Second
)

// hashSlot waits (at most hashSlotWait) for one of the hashSlots and
// returns its release; ErrBusy when none frees up in time.
func (s *Service) hashSlot(ctx context.Context) (func(), error) {
	t := time.NewTimer(hashSlotWait)
	defer t.Stop()
	select {
	case s.hashSem <- struct{}{}:
		return func() { <-s.hashSem }, nil
	case <-t.C:
		return nil, ErrBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

package adminui

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/internal/logtest"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

func TestMaskToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"atlassian", atlassianToken, "ATAT…x9Q2"},
		{"exactly 24", "abcdefghijklmnopqrstuvwx", "abcd…uvwx"},
		{"23 hides all", "abcdefghijklmnopqrstuvw", "••••••••"},
		{"short", "secret", "••••••••"},
		{"one char", "s", "••••••••"},
		{"multibyte", strings.Repeat("é", 30) + "ü", "éééé…éééü"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := MaskToken(tc.in)
			if got != tc.want {
				t.Errorf("MaskToken(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// FuzzMaskToken: a mask never shows more than 8 characters of the secret,
// and never any of a short one.
func FuzzMaskToken(f *testing.F) {
	for _, s := range []string{"", "a", atlassianToken, "abcdefghijklmnopqrstuvwx", strings.Repeat("é", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m := MaskToken(s)
		if s == "" {
			if m != "" {
				t.Fatalf("MaskToken(\"\") = %q", m)
			}
			return
		}
		r := []rune(s)
		if len(r) < minMaskableLength {
			if m != "••••••••" {
				t.Fatalf("MaskToken(%q) = %q shows part of a short secret", s, m)
			}
			return
		}
		if want := string(r[:4]) + "…" + string(r[len(r)-4:]); m != want {
			t.Fatalf("MaskToken(%q) = %q, want %q", s, m, want)
		}
		if utf8.RuneCountInString(m) != 2*maskVisible+1 {
			t.Fatalf("MaskToken(%q) = %q is not 4+…+4", s, m)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"custom", Config{SessionIdle: time.Minute, SessionAbsolute: time.Hour, LoginAttemptsPerIP: 3, TrustedOrigins: []string{"https://a.example"}}, true},
		{"negative idle", Config{SessionIdle: -1}, false},
		{"negative absolute", Config{SessionAbsolute: -1}, false},
		{"idle above absolute", Config{SessionIdle: 2 * time.Hour, SessionAbsolute: time.Hour}, false},
		{"idle above default absolute", Config{SessionIdle: 13 * time.Hour}, false},
		{"negative attempts", Config{LoginAttemptsPerIP: -1}, false},
		{"negative total", Config{LoginAttemptsTotal: -1}, false},
		{"negative window", Config{LoginWindow: -time.Second}, false},
		{"negative body", Config{MaxBodyBytes: -1}, false},
		{"bad origin", Config{TrustedOrigins: []string{"https://a.example/path"}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if _, err := New(Config{SessionIdle: -1}, Deps{}); err == nil {
		t.Errorf("New accepted an invalid Config")
	}
	if _, err := New(Config{}, Deps{}); err == nil {
		t.Errorf("New accepted Deps without Store and Cipher")
	}
}

func TestEnsureAdminPassword(t *testing.T) {
	t.Parallel()
	ctx := t.Context()

	t.Run("generated once", func(t *testing.T) {
		e := newEnv(t, envOptions{password: "-"})
		s := e.admin.Service()
		pw, err := s.EnsureAdminPassword(ctx, "")
		if err != nil || len(pw) != auth.GeneratedPasswordLength {
			t.Fatalf("first start: %q, %v; want a generated password", pw, err)
		}
		stored, err := e.st.AdminPassword(ctx)
		if err != nil || !stored.MustChange || !auth.VerifyPassword(stored.Hash, pw) || !strings.HasPrefix(stored.Hash, "$argon2id$") {
			t.Fatalf("stored = %+v, %v; want the argon2id hash, must change", stored, err)
		}
		again, err := s.EnsureAdminPassword(ctx, "")
		if err != nil || again != "" {
			t.Errorf("second start: %q, %v; want nothing generated", again, err)
		}
		if after, _ := e.st.AdminPassword(ctx); after.Hash != stored.Hash {
			t.Errorf("the second start replaced the password")
		}
	})

	t.Run("from the environment", func(t *testing.T) {
		e := newEnv(t, envOptions{password: "-"})
		s := e.admin.Service()
		if _, err := s.EnsureAdminPassword(ctx, ""); err != nil {
			t.Fatal(err)
		}
		c := e.loggedIn(mustGenerated(t, e)) // a session under the generated password
		pw, err := s.EnsureAdminPassword(ctx, testPassword)
		if err != nil || pw != "" {
			t.Fatalf("EnsureAdminPassword(env) = %q, %v", pw, err)
		}
		stored, _ := e.st.AdminPassword(ctx)
		if stored.MustChange || !auth.VerifyPassword(stored.Hash, testPassword) {
			t.Errorf("stored = %+v; want the env password, not must-change", stored)
		}
		if res := c.do("GET", "/api/session", nil, nil); res.status != 401 {
			t.Errorf("a session under the replaced password still works: %d", res.status)
		}
		// Unchanged env password: the hash is left alone.
		if _, err := s.EnsureAdminPassword(ctx, testPassword); err != nil {
			t.Fatal(err)
		}
		if again, _ := e.st.AdminPassword(ctx); again.Hash != stored.Hash {
			t.Errorf("an unchanged ADMIN_PASSWORD rehashed the password")
		}
	})

	t.Run("env password too short", func(t *testing.T) {
		e := newEnv(t, envOptions{password: "-"})
		_, err := e.admin.Service().EnsureAdminPassword(ctx, "short")
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != "password" {
			t.Fatalf("err = %v, want a ValidationError on password", err)
		}
		if strings.Contains(err.Error(), "short") {
			t.Errorf("the error shows the password: %v", err)
		}
		if _, err := e.st.AdminPassword(ctx); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a rejected password was stored: %v", err)
		}
	})
}

// mustGenerated resets the password to a known generated one and returns it.
func mustGenerated(t *testing.T, e *env) string {
	t.Helper()
	pw, err := e.admin.Service().ResetPassword(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return pw
}

func TestResetPassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.loggedIn(testPassword)
	// The CLI works on the store with its own Service.
	cli := NewService(e.st, e.cipher, nil, nil)
	pw, err := cli.ResetPassword(t.Context())
	if err != nil || len(pw) != auth.GeneratedPasswordLength {
		t.Fatalf("ResetPassword = %q, %v", pw, err)
	}
	if res := c.do("GET", "/api/session", nil, nil); res.status != 401 {
		t.Errorf("a session survived the reset: %d", res.status)
	}
	wantError(t, e.client().do("POST", "/api/login", map[string]any{"password": testPassword}, nil), 401, "invalid_password", "")
	c2 := e.client()
	res := c2.do("POST", "/api/login", map[string]any{"password": pw}, nil)
	var lr loginResponse
	res.decode(t, &lr)
	if res.status != 200 || !lr.MustChangePassword {
		t.Errorf("login with the reset password: %d %s; want must_change_password", res.status, res.body)
	}
}

func TestServiceDirect(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newEnv(t, envOptions{noPool: true})
	s := NewService(e.st, e.cipher, nil, nil)

	c, err := s.AddCredential(ctx, CredentialInput{Email: "cli@example.com", Token: atlassianToken})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Enabled || c.MaxConcurrency != 0 || string(c.Token) == atlassianToken {
		t.Errorf("added = %+v", c)
	}
	_, err = s.AddCredential(ctx, CredentialInput{Email: "cli@example.com", Token: "ATATT3-another-one"})
	var ce *ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, store.ErrDuplicate) || ce.Field != "email" {
		t.Errorf("duplicate: err = %v, want a ConflictError on email wrapping store.ErrDuplicate", err)
	}
	if err := s.SetCredentialEnabled(ctx, c.ID, false); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCredentialLimit(ctx, c.ID, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCredentialLimit(ctx, c.ID, -1); !isValidation(err, "max_concurrency") {
		t.Errorf("limit -1: %v", err)
	}
	// Re-enabling replaces a persisted invalid state with a ready one
	// (TestServiceStoresRecoveries has the details).
	if err := e.st.SetCredentialState(ctx, store.CredentialState{CredentialID: c.ID, State: "invalid", Reason: "unauthorized", UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCredentialEnabled(ctx, c.ID, true); err != nil {
		t.Fatal(err)
	}
	if states, _ := e.st.ListCredentialStates(ctx); len(states) != 1 || states[0].State != store.StateReady {
		t.Errorf("states after re-enabling = %+v, want one ready state", states)
	}
	vs, err := s.ListCredentials(ctx)
	if err != nil || len(vs) != 1 || !vs[0].Enabled || vs[0].MaxConcurrency != 3 || vs[0].TokenMasked != "ATAT…x9Q2" {
		t.Errorf("list = %+v, %v", vs, err)
	}
	if err := s.SetCredentialEnabled(ctx, "cred_missing", true); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown id: %v, want ErrNotFound", err)
	}

	// A token sealed under another key reads as unreadable, not as an error.
	other, _ := auth.NewCipher(make([]byte, auth.KeySize))
	vs, err = NewService(e.st, other, nil, nil).ListCredentials(ctx)
	if err != nil || vs[0].TokenReadable || vs[0].TokenMasked != maskedUnknown {
		t.Errorf("wrong key: %+v, %v", vs, err)
	}

	plain, tok, err := s.CreateToken(ctx, TokenInput{Name: "cli"})
	if err != nil || !strings.HasPrefix(plain, auth.TokenPrefix) {
		t.Fatalf("CreateToken = %q, %v", plain, err)
	}
	if string(tok.Hash) != string(auth.HashToken(plain)) || !strings.HasPrefix(plain, tok.Prefix) {
		t.Errorf("token record %+v does not match the token", tok)
	}
	ts, err := s.ListTokens(ctx)
	if err != nil || len(ts) != 1 || ts[0].ID != tok.ID {
		t.Errorf("ListTokens = %+v, %v", ts, err)
	}
	if err := s.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeToken(ctx, tok.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoke twice: %v", err)
	}
	if err := s.RemoveCredential(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if e.changed.Load() != 0 {
		t.Errorf("NewService called the admin's Changed hook")
	}
}

func TestLoginService(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newEnv(t, envOptions{noPool: true})
	s := e.admin.Service()
	id, csrf, must, err := s.Login(ctx, testPassword)
	if err != nil || must || len(id) < 43 || len(csrf) < 43 || id == csrf {
		t.Fatalf("Login = %q, %q, %v, %v", id, csrf, must, err)
	}
	info, err := s.Session(ctx, id)
	if err != nil || info.CSRFToken != csrf || info.Key != SessionKey(id) || info.Key == id {
		t.Fatalf("Session = %+v, %v", info, err)
	}
	if !info.ExpiresAt.Equal(info.CreatedAt.Add(DefaultSessionAbsolute)) || info.IdleExpiresAt.After(info.ExpiresAt) {
		t.Errorf("expiry = %v / %v", info.IdleExpiresAt, info.ExpiresAt)
	}
	for _, bad := range []string{"", "nope", id + "x", SessionKey(id)} {
		if _, err := s.Session(ctx, bad); !errors.Is(err, ErrNoSession) {
			t.Errorf("Session(%q) = %v, want ErrNoSession", bad, err)
		}
	}
	if _, _, _, err := s.Login(ctx, "wrong"); !errors.Is(err, ErrInvalidPassword) {
		t.Errorf("wrong password: %v", err)
	}
	if err := s.Logout(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, id); !errors.Is(err, ErrNoSession) {
		t.Errorf("after logout: %v", err)
	}
	if err := s.Logout(ctx, id); err != nil {
		t.Errorf("logout twice: %v", err)
	}
}

func isValidation(err error, field string) bool {
	var ve *ValidationError
	return errors.As(err, &ve) && ve.Field == field
}

// TestServiceStoresRecoveries: enabling a disabled credential and
// resetting one store a ready state dated by the service's clock (never a
// deletion, which would offer a running pool nothing newer than the state it
// holds); disabling, and enabling one already enabled, leave the state as
// it is; an unknown id is ErrNotFound and stores nothing.
func TestServiceStoresRecoveries(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newEnv(t, envOptions{noPool: true})
	now := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	var changed int
	s := newService(e.st, e.cipher, nil, Config{}.withDefaults(), func() time.Time { return now }, func() { changed++ }, nil)
	earlier := now.Add(-time.Minute)
	ready := func(id string) store.CredentialState {
		return store.CredentialState{CredentialID: id, State: store.StateReady, Reason: "success", UpdatedAt: now}
	}
	invalid := func(id string) store.CredentialState {
		return store.CredentialState{CredentialID: id, State: store.StateInvalid, Reason: "unauthorized", UpdatedAt: earlier}
	}
	cooling := func(id string) store.CredentialState {
		return store.CredentialState{CredentialID: id, State: store.StateCooling, Reason: "rate_limited",
			Until: time.Now().Add(time.Hour).UTC(), UpdatedAt: earlier}
	}

	tests := []struct {
		name    string
		enabled bool                                   // the credential's flag before do
		before  func(id string) *store.CredentialState // nil: no stored state
		do      func(id string) error
		want    func(id string) *store.CredentialState // nil: no stored state
	}{
		{"enable a disabled invalid one", false, someRecord(invalid), func(id string) error { return s.SetCredentialEnabled(ctx, id, true) }, someRecord(ready)},
		{"enable a disabled cooling one", false, someRecord(cooling), func(id string) error { return s.SetCredentialEnabled(ctx, id, true) }, someRecord(ready)},
		{"enable a disabled one without state", false, nil, func(id string) error { return s.SetCredentialEnabled(ctx, id, true) }, someRecord(ready)},
		{"enable through UpdateCredential", false, someRecord(invalid), func(id string) error {
			on := true
			_, err := s.UpdateCredential(ctx, id, CredentialPatch{Enabled: &on})
			return err
		}, someRecord(ready)},
		{"enable an enabled one", true, someRecord(invalid), func(id string) error { return s.SetCredentialEnabled(ctx, id, true) }, someRecord(invalid)},
		{"disable", true, someRecord(invalid), func(id string) error { return s.SetCredentialEnabled(ctx, id, false) }, someRecord(invalid)},
		{"reset an invalid one", true, someRecord(invalid), func(id string) error { return s.ResetCredential(ctx, id) }, someRecord(ready)},
		{"reset a cooling one", true, someRecord(cooling), func(id string) error { return s.ResetCredential(ctx, id) }, someRecord(ready)},
		{"reset one without state", true, nil, func(id string) error { return s.ResetCredential(ctx, id) }, someRecord(ready)},
		{"reset a disabled one", false, someRecord(invalid), func(id string) error { return s.ResetCredential(ctx, id) }, someRecord(ready)},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := s.AddCredential(ctx, CredentialInput{Email: fmt.Sprintf("r%d@example.com", i), Token: atlassianToken})
			if err != nil {
				t.Fatal(err)
			}
			if !tc.enabled {
				if err := s.SetCredentialEnabled(ctx, c.ID, false); err != nil {
					t.Fatal(err)
				}
			}
			if tc.before != nil {
				if err := e.st.SetCredentialState(ctx, *tc.before(c.ID)); err != nil {
					t.Fatal(err)
				}
			}
			calls := changed
			if err := tc.do(c.ID); err != nil {
				t.Fatalf("err = %v", err)
			}
			if changed != calls+1 {
				t.Errorf("change hook ran %d times, want once", changed-calls)
			}
			got, ok := storedStateOf(t, e.st, c.ID)
			var want *store.CredentialState
			if tc.want != nil {
				want = tc.want(c.ID)
			}
			switch {
			case want == nil && ok:
				t.Errorf("state = %+v, want none", got)
			case want != nil && !ok:
				t.Errorf("no state, want %+v", *want)
			case want != nil && !sameStateRecord(got, *want):
				t.Errorf("state = %+v, want %+v", got, *want)
			}
		})
	}

	t.Run("reset an unknown id", func(t *testing.T) {
		calls := changed
		err := s.ResetCredential(ctx, "cred_missing")
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("err = %v, want ErrNotFound", err)
		}
		if changed != calls {
			t.Error("the change hook ran after a failed reset")
		}
		if st, ok := storedStateOf(t, e.st, "cred_missing"); ok {
			t.Errorf("a state was stored for an unknown id: %+v", st)
		}
	})
}

// TestServiceRecoveryStoreDown: when the state cannot be written, a reset
// fails (wrapping store.ErrUnavailable) and an enable still enables,
// warning by id that the old state stays.
func TestServiceRecoveryStoreDown(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	var down *statesDownStore
	e := newEnv(t, envOptions{noPool: true, wrapStore: func(s store.Store) store.Store { down = &statesDownStore{Store: s}; return down }})
	logs := &logtest.Buffer{}
	s := NewService(down, e.cipher, slog.New(slog.NewJSONHandler(logs, nil)), nil)
	c, err := s.AddCredential(ctx, CredentialInput{Email: "down@example.com", Token: atlassianToken})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetCredentialEnabled(ctx, c.ID, false); err != nil {
		t.Fatal(err)
	}
	old := store.CredentialState{CredentialID: c.ID, State: store.StateInvalid, Reason: "unauthorized", UpdatedAt: time.Now().UTC()}
	if err := e.st.SetCredentialState(ctx, old); err != nil {
		t.Fatal(err)
	}
	down.statesDown.Store(true)

	if err := s.ResetCredential(ctx, c.ID); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("reset: err = %v, want store.ErrUnavailable", err)
	}
	if err := s.SetCredentialEnabled(ctx, c.ID, true); err != nil {
		t.Fatalf("enable: %v, want the credential enabled all the same", err)
	}
	if v, err := s.GetCredential(ctx, c.ID); err != nil || !v.Enabled {
		t.Errorf("after enabling: %+v, %v, want enabled", v, err)
	}
	if got, ok := storedStateOf(t, e.st, c.ID); !ok || !sameStateRecord(got, old) {
		t.Errorf("state = %+v (%t), want the old one %+v", got, ok, old)
	}
	warns := logs.Messages(t, "credential enabled, but its cooldown or invalid state was not reset")
	if len(warns) != 1 || warns[0]["credential_id"] != c.ID || warns[0]["level"] != "WARN" {
		t.Errorf("warnings = %+v, want one naming %s", warns, c.ID)
	}
	if strings.Contains(logs.String(), atlassianToken) {
		t.Error("the credential's token is in the log")
	}
}

// TestServiceRecoveryReachesPool: with a real pool synced from the store
// only after both calls (one syncer round), a disable then an enable, and a
// reset, bring back a credential the pool holds as invalid.
func TestServiceRecoveryReachesPool(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newEnv(t, envOptions{})
	s := NewService(e.st, e.cipher, nil, nil) // no change hook: e.resync is the syncer round
	c, err := s.AddCredential(ctx, CredentialInput{Email: "pool@example.com", Token: atlassianToken})
	if err != nil {
		t.Fatal(err)
	}
	invalidate := func(t *testing.T) {
		t.Helper()
		if err := e.st.SetCredentialState(ctx, store.CredentialState{CredentialID: c.ID, State: store.StateInvalid,
			Reason: "unauthorized", UpdatedAt: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
		e.resync()
		if got := poolStateOf(t, e.pool, c.ID); got != pool.StateInvalid {
			t.Fatalf("pool state = %q, want %q before the recovery", got, pool.StateInvalid)
		}
	}
	tests := []struct {
		name    string
		recover func() error
	}{
		{"disable and enable", func() error {
			if err := s.SetCredentialEnabled(ctx, c.ID, false); err != nil {
				return err
			}
			return s.SetCredentialEnabled(ctx, c.ID, true)
		}},
		{"reset", func() error { return s.ResetCredential(ctx, c.ID) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			invalidate(t)
			if err := tc.recover(); err != nil {
				t.Fatal(err)
			}
			e.resync()
			if got := poolStateOf(t, e.pool, c.ID); got != pool.StateReady {
				t.Errorf("pool state = %q, want %q", got, pool.StateReady)
			}
		})
	}
}

// statesDownStore fails every credential state write.
type statesDownStore struct {
	store.Store
	statesDown atomic.Bool
}

func (d *statesDownStore) SetCredentialState(ctx context.Context, st store.CredentialState) error {
	if d.statesDown.Load() {
		return errors.Join(errors.New("sqlite: set credential state: connection refused"), store.ErrUnavailable)
	}
	return d.Store.SetCredentialState(ctx, st)
}

func someRecord(f func(string) store.CredentialState) func(string) *store.CredentialState {
	return func(id string) *store.CredentialState { st := f(id); return &st }
}

// stateOf is the stored state of a credential.
func storedStateOf(t *testing.T, st store.Store, id string) (store.CredentialState, bool) {
	t.Helper()
	states, err := st.ListCredentialStates(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range states {
		if s.CredentialID == id {
			return s, true
		}
	}
	return store.CredentialState{}, false
}

func sameStateRecord(a, b store.CredentialState) bool {
	return a.CredentialID == b.CredentialID && a.State == b.State && a.Reason == b.Reason &&
		a.Until.Equal(b.Until) && a.UpdatedAt.Equal(b.UpdatedAt)
}

func poolStateOf(t *testing.T, p *pool.Pool, id string) string {
	t.Helper()
	for _, c := range p.Status().Credentials {
		if c.ID == id {
			return c.State
		}
	}
	t.Fatalf("credential %s is not in the pool", id)
	return ""
}

package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// Run runs the conformance suite. open must return a new, empty store each
// time it is called and close it when the test ends (t.Cleanup).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	t.Run("Ping", func(t *testing.T) {
		s := open(t)
		if err := s.Ping(t.Context()); err != nil {
			t.Errorf("Ping() = %v, want nil", err)
		}
	})
	t.Run("Credentials", func(t *testing.T) { testCredentials(t, open) })
	t.Run("CredentialStates", func(t *testing.T) { testCredentialStates(t, open) })
	t.Run("Tokens", func(t *testing.T) { testTokens(t, open) })
	t.Run("AdminPassword", func(t *testing.T) { testAdminPassword(t, open) })
	t.Run("Sessions", func(t *testing.T) { testSessions(t, open) })
	t.Run("Usage", func(t *testing.T) { testUsage(t, open) })
	t.Run("Generation", func(t *testing.T) { testGeneration(t, open) })
	t.Run("Context", func(t *testing.T) { testContext(t, open) })
	t.Run("Concurrency", func(t *testing.T) { testConcurrency(t, open) })
}

// base is the fixed time the suite's records are built from. It has
// millisecond precision, like every offset the suite adds to it.
var base = time.Date(2025, time.March, 14, 9, 26, 53, 589_000_000, time.UTC)

// at returns base plus d.
func at(d time.Duration) time.Time { return base.Add(d) }

func credential(id, email string, created time.Duration) store.Credential {
	return store.Credential{
		ID:             id,
		Email:          email,
		Token:          []byte("sealed:" + id),
		CloudID:        "",
		Label:          "label " + id,
		Enabled:        true,
		MaxConcurrency: 0,
		CreatedAt:      at(created),
		UpdatedAt:      at(created),
	}
}

func token(id string, created time.Duration) store.APIToken {
	hash := make([]byte, 32)
	copy(hash, "hash:"+id)
	return store.APIToken{
		ID:        id,
		Name:      "name " + id,
		Prefix:    "sk-ap-" + id,
		Hash:      hash,
		CreatedAt: at(created),
	}
}

// must stops the test when a step that prepares the case fails.
func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// wantErr checks that err matches target with errors.Is.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: err = %v, want %v", what, err, target)
	}
}

// normTime makes equal instants compare equal with reflect.DeepEqual.
func normTime(tm time.Time) time.Time {
	if tm.IsZero() {
		return time.Time{}
	}
	return time.Unix(0, tm.UnixNano()).UTC()
}

func normCredential(c store.Credential) store.Credential {
	c.CreatedAt, c.UpdatedAt = normTime(c.CreatedAt), normTime(c.UpdatedAt)
	if len(c.Token) == 0 {
		c.Token = nil
	}
	return c
}

func normToken(tk store.APIToken) store.APIToken {
	tk.CreatedAt, tk.ExpiresAt, tk.LastUsedAt = normTime(tk.CreatedAt), normTime(tk.ExpiresAt), normTime(tk.LastUsedAt)
	if len(tk.Hash) == 0 {
		tk.Hash = nil
	}
	if len(tk.AllowedModels) == 0 {
		tk.AllowedModels = nil
	}
	return tk
}

func normSession(s store.Session) store.Session {
	s.CreatedAt, s.LastSeenAt = normTime(s.CreatedAt), normTime(s.LastSeenAt)
	return s
}

func normPassword(p store.AdminPassword) store.AdminPassword {
	p.UpdatedAt = normTime(p.UpdatedAt)
	return p
}

func normState(s store.CredentialState) store.CredentialState {
	s.Until, s.UpdatedAt = normTime(s.Until), normTime(s.UpdatedAt)
	return s
}

// checkRecord compares one record after normalisation.
func checkRecord[T any](t *testing.T, what string, got, want T, norm func(T) T) {
	t.Helper()
	if g, w := norm(got), norm(want); !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, g, w)
	}
}

// checkRecords compares two lists, order included, after normalisation.
func checkRecords[T any](t *testing.T, what string, got, want []T, norm func(T) T) {
	t.Helper()
	g, w := make([]T, len(got)), make([]T, len(want))
	for i := range got {
		g[i] = norm(got[i])
	}
	for i := range want {
		w[i] = norm(want[i])
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %s\nwant %s", what, lines(g), lines(w))
	}
}

func lines[T any](recs []T) string {
	if len(recs) == 0 {
		return "[]"
	}
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "\n\t%+v", r)
	}
	return b.String()
}

func listCredentials(t *testing.T, s store.Store) []store.Credential {
	t.Helper()
	got, err := s.ListCredentials(t.Context())
	must(t, "ListCredentials", err)
	return got
}

func listTokens(t *testing.T, s store.Store) []store.APIToken {
	t.Helper()
	got, err := s.ListTokens(t.Context())
	must(t, "ListTokens", err)
	return got
}

func listStates(t *testing.T, s store.Store) []store.CredentialState {
	t.Helper()
	got, err := s.ListCredentialStates(t.Context())
	must(t, "ListCredentialStates", err)
	return got
}

func generation(t *testing.T, s store.Store) int64 {
	t.Helper()
	g, err := s.Generation(t.Context())
	must(t, "Generation", err)
	return g
}

// testContext checks that a cancelled context fails calls and writes nothing.
func testContext(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	calls := []struct {
		name string
		call func() error
	}{
		{"Ping", func() error { return s.Ping(ctx) }},
		{"Generation", func() error { _, err := s.Generation(ctx); return err }},
		{"ListCredentials", func() error { _, err := s.ListCredentials(ctx); return err }},
		{"CreateCredential", func() error { return s.CreateCredential(ctx, credential("c1", "a@example.com", 0)) }},
		{"CreateToken", func() error { return s.CreateToken(ctx, token("t1", 0)) }},
		{"SetAdminPassword", func() error {
			return s.SetAdminPassword(ctx, store.AdminPassword{Hash: "h", UpdatedAt: base})
		}},
		{"CreateSession", func() error { return s.CreateSession(ctx, store.Session{ID: "s1", CreatedAt: base}) }},
		{"DeleteSessionsBefore", func() error { _, err := s.DeleteSessionsBefore(ctx, at(time.Hour)); return err }},
		{"ListCredentialStates", func() error { _, err := s.ListCredentialStates(ctx); return err }},
		{"AddUsage", func() error {
			return s.AddUsage(ctx, []store.Usage{{Day: "2025-03-14", TokenID: "t1", Model: "m1", Requests: 1}})
		}},
		{"ListUsage", func() error { _, err := s.ListUsage(ctx, "2025-03-14", "2025-03-14"); return err }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			if err := c.call(); err == nil {
				t.Errorf("%s with a cancelled context = nil, want an error", c.name)
			}
		})
	}
	if got := listCredentials(t, s); len(got) != 0 {
		t.Errorf("credentials after cancelled writes = %d, want 0", len(got))
	}
	if got := listTokens(t, s); len(got) != 0 {
		t.Errorf("tokens after cancelled writes = %d, want 0", len(got))
	}
	_, err := s.AdminPassword(t.Context())
	wantErr(t, "AdminPassword after a cancelled SetAdminPassword", err, store.ErrNotFound)
	_, err = s.GetSession(t.Context(), "s1")
	wantErr(t, "GetSession after a cancelled CreateSession", err, store.ErrNotFound)
	if got, err := s.ListUsage(t.Context(), "2025-03-14", "2025-03-14"); err != nil || len(got) != 0 {
		t.Errorf("ListUsage after a cancelled AddUsage = %+v, %v; want none", got, err)
	}

	// A cancelled SetCredentialState leaves the state as it was.
	c := credential("c2", "b@example.com", 0)
	must(t, "CreateCredential", s.CreateCredential(t.Context(), c))
	if err := s.SetCredentialState(ctx, store.CredentialState{CredentialID: c.ID, State: store.StateInvalid, UpdatedAt: base}); err == nil {
		t.Error("SetCredentialState with a cancelled context = nil, want an error")
	}
	if got := listStates(t, s); len(got) != 0 {
		t.Errorf("states after a cancelled SetCredentialState = %+v, want none", got)
	}
}

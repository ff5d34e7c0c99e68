package main

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/store"
	"github.com/atlassian-proxy/atlassian-proxy/store/sqlite"
)

// The syncer's guard against a store that lost its data (the Redis
// marker): the empty store does not empty the pool, the credentials held
// keep serving until the store holds credentials again. A marker that
// cannot be read fails the round and keeps the state.
func TestSyncerHoldsStateWhileStoreLost(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "sync.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cipher, err := auth.NewCipher(make([]byte, auth.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	addCred := func(id string) {
		t.Helper()
		sealed, err := cipher.Seal(id, []byte("atl-"+id+"-secret"))
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		if err := st.CreateCredential(ctx, store.Credential{ID: id, Email: id + "@example.com", Token: sealed,
			Enabled: true, CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	logger := slog.New(slog.DiscardHandler)
	p, err := pool.New(pool.Config{}, pool.Deps{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	s := newSyncer(st, cipher, auth.NewTokens(st, logger), p, logger)
	var (
		lostOnce  bool  // the marker's next answer: lost since the last call
		markerErr error // the marker's error
		reports   []bool
	)
	s.marker = func(context.Context) (bool, error) {
		lost := lostOnce
		lostOnce = false
		return lost, markerErr
	}
	s.onLost = func(lost bool) { reports = append(reports, lost) }
	ids := func() []string {
		var out []string
		for _, c := range p.Status().Credentials {
			out = append(out, c.ID)
		}
		slices.Sort(out)
		return out
	}

	addCred("a")
	if err := s.once(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ids(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("pool after the first load: %v", got)
	}

	markerErr = errors.New("marker unreadable")
	if err := s.round(ctx); err == nil || !strings.Contains(err.Error(), "read store marker") {
		t.Errorf("round with an unreadable marker: %v, want the marker's error", err)
	}
	markerErr = nil

	// The store restarts empty.
	if err := st.DeleteCredential(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	lostOnce = true
	for i := range 2 {
		if err := s.round(ctx); err != nil {
			t.Fatalf("round %d with the store lost: %v", i+1, err)
		}
		if got := ids(); !slices.Equal(got, []string{"a"}) {
			t.Errorf("round %d with the store lost: pool %v, want the credential held", i+1, got)
		}
	}
	// Re-seeded: the store is the reference again.
	addCred("b")
	if err := s.round(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ids(); !slices.Equal(got, []string{"b"}) {
		t.Errorf("pool after the re-seed: %v, want the store's credentials", got)
	}
	if !slices.Equal(reports, []bool{true, false}) {
		t.Errorf("lost reports %v, want lost then found", reports)
	}
}

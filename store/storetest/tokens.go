package storetest

import (
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

func testTokens(t *testing.T, open func(t *testing.T) store.Store) {
	t.Run("EmptyList", func(t *testing.T) {
		s := open(t)
		if got := listTokens(t, s); len(got) != 0 {
			t.Errorf("ListTokens() on an empty store = %d records, want 0", len(got))
		}
	})

	t.Run("CreateList", func(t *testing.T) {
		s := open(t)
		full := token("t1", 0)
		full.ExpiresAt = at(30 * 24 * time.Hour)
		full.LastUsedAt = at(time.Hour)
		full.AllowedModels = []string{"claude-sonnet-4", "anthropic:claude-opus-4@20250514"}
		full.RateLimit = 60
		bare := token("t2", time.Second) // never expires, never used, every model, unlimited
		must(t, "CreateToken t1", s.CreateToken(t.Context(), full))
		must(t, "CreateToken t2", s.CreateToken(t.Context(), bare))
		got := listTokens(t, s)
		checkRecords(t, "ListTokens", got, []store.APIToken{full, bare}, normToken)
		if len(got) == 2 {
			b := got[1]
			if !b.ExpiresAt.IsZero() || !b.LastUsedAt.IsZero() || len(b.AllowedModels) != 0 || b.RateLimit != 0 {
				t.Errorf("token without options came back as %+v, want zero expiry, last use, models, rate limit", b)
			}
		}
	})

	t.Run("ListOrder", func(t *testing.T) {
		s := open(t)
		toks := []store.APIToken{
			token("tb", time.Second),
			token("tc", 0),
			token("ta", time.Second),
			token("td", -time.Second),
		}
		for _, tk := range toks {
			must(t, "CreateToken "+tk.ID, s.CreateToken(t.Context(), tk))
		}
		want := []store.APIToken{toks[3], toks[1], toks[2], toks[0]}
		checkRecords(t, "ListTokens", listTokens(t, s), want, normToken)
	})

	t.Run("Duplicates", func(t *testing.T) {
		existing := token("t1", 0)
		sameHash := token("t2", time.Second)
		sameHash.Hash = existing.Hash
		tests := []struct {
			name string
			tok  store.APIToken
		}{
			{"same id", func() store.APIToken {
				tk := token("t1", time.Second)
				tk.Hash = []byte("another hash, 32 bytes long.....")
				return tk
			}()},
			{"same hash", sameHash},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := open(t)
				must(t, "CreateToken existing", s.CreateToken(t.Context(), existing))
				wantErr(t, "CreateToken", s.CreateToken(t.Context(), tt.tok), store.ErrDuplicate)
				checkRecords(t, "ListTokens after a duplicate", listTokens(t, s),
					[]store.APIToken{existing}, normToken)
			})
		}
	})

	t.Run("EmptyIDRejected", func(t *testing.T) {
		s := open(t)
		if err := s.CreateToken(t.Context(), token("", 0)); err == nil {
			t.Error("CreateToken with an empty id = nil, want an error")
		}
		if got := listTokens(t, s); len(got) != 0 {
			t.Errorf("tokens = %d, want 0", len(got))
		}
	})

	t.Run("Update", func(t *testing.T) {
		s := open(t)
		orig := token("t1", 0)
		orig.LastUsedAt = at(time.Minute)
		orig.AllowedModels = []string{"claude-sonnet-4"}
		orig.RateLimit = 10
		must(t, "CreateToken", s.CreateToken(t.Context(), orig))

		upd := store.APIToken{
			ID:            "t1",
			Name:          "renamed",
			ExpiresAt:     at(48 * time.Hour),
			AllowedModels: []string{"gpt-x", "claude-opus-4"},
			RateLimit:     120,
			// Ignored by UpdateToken:
			Prefix:     "sk-ap-other",
			Hash:       []byte("a different hash, 32 bytes long."),
			CreatedAt:  at(time.Hour),
			LastUsedAt: at(2 * time.Hour),
		}
		must(t, "UpdateToken", s.UpdateToken(t.Context(), upd))
		want := orig
		want.Name, want.ExpiresAt, want.AllowedModels, want.RateLimit = upd.Name, upd.ExpiresAt, upd.AllowedModels, upd.RateLimit
		checkRecords(t, "ListTokens after UpdateToken", listTokens(t, s), []store.APIToken{want}, normToken)

		// Back to no expiry, every model, unlimited.
		plain := store.APIToken{ID: "t1", Name: "plain"}
		must(t, "UpdateToken (clear)", s.UpdateToken(t.Context(), plain))
		want.Name, want.ExpiresAt, want.AllowedModels, want.RateLimit = "plain", time.Time{}, nil, 0
		checkRecords(t, "ListTokens after clearing UpdateToken", listTokens(t, s), []store.APIToken{want}, normToken)
	})

	t.Run("UpdateMissing", func(t *testing.T) {
		s := open(t)
		wantErr(t, "UpdateToken(missing)", s.UpdateToken(t.Context(), token("nope", 0)), store.ErrNotFound)
		if got := listTokens(t, s); len(got) != 0 {
			t.Errorf("tokens after updating a missing one = %d, want 0", len(got))
		}
	})

	t.Run("Delete", func(t *testing.T) {
		s := open(t)
		t1, t2 := token("t1", 0), token("t2", time.Second)
		must(t, "CreateToken", s.CreateToken(t.Context(), t1))
		must(t, "CreateToken", s.CreateToken(t.Context(), t2))
		must(t, "DeleteToken", s.DeleteToken(t.Context(), "t1"))
		checkRecords(t, "ListTokens after DeleteToken", listTokens(t, s), []store.APIToken{t2}, normToken)
		wantErr(t, "DeleteToken again", s.DeleteToken(t.Context(), "t1"), store.ErrNotFound)
		// The id and the hash are free again.
		must(t, "CreateToken after DeleteToken", s.CreateToken(t.Context(), t1))
	})

	t.Run("Touch", func(t *testing.T) {
		tests := []struct {
			name  string
			touch map[string]time.Time
			want  map[string]time.Time // last use per id afterwards; absent = zero
		}{
			{"nil map", nil, map[string]time.Time{"t1": at(time.Minute)}},
			{"empty map", map[string]time.Time{}, map[string]time.Time{"t1": at(time.Minute)}},
			{"one token", map[string]time.Time{"t2": at(time.Hour)},
				map[string]time.Time{"t1": at(time.Minute), "t2": at(time.Hour)}},
			{"several tokens", map[string]time.Time{"t1": at(2 * time.Hour), "t2": at(3 * time.Hour), "t3": at(4 * time.Hour)},
				map[string]time.Time{"t1": at(2 * time.Hour), "t2": at(3 * time.Hour), "t3": at(4 * time.Hour)}},
			{"unknown ids ignored", map[string]time.Time{"ghost": at(time.Hour), "t3": at(5 * time.Hour)},
				map[string]time.Time{"t1": at(time.Minute), "t3": at(5 * time.Hour)}},
			{"only unknown ids", map[string]time.Time{"ghost": at(time.Hour)},
				map[string]time.Time{"t1": at(time.Minute)}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := open(t)
				toks := []store.APIToken{token("t1", 0), token("t2", time.Second), token("t3", 2*time.Second)}
				toks[0].LastUsedAt = at(time.Minute)
				for _, tk := range toks {
					must(t, "CreateToken "+tk.ID, s.CreateToken(t.Context(), tk))
				}
				must(t, "TouchTokens", s.TouchTokens(t.Context(), tt.touch))
				want := make([]store.APIToken, len(toks))
				for i, tk := range toks {
					tk.LastUsedAt = tt.want[tk.ID]
					want[i] = tk
				}
				checkRecords(t, "ListTokens after TouchTokens", listTokens(t, s), want, normToken)
			})
		}
	})
}

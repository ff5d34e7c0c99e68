package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

func testGeneration(t *testing.T, open func(t *testing.T) store.Store) {
	t.Run("GrowsWithEveryConfigurationChange", func(t *testing.T) {
		s := open(t)
		ctx := t.Context()
		c1 := credential("c1", "a@example.com", 0)
		steps := []struct {
			name string
			do   func() error
		}{
			{"CreateCredential", func() error { return s.CreateCredential(ctx, c1) }},
			{"UpdateCredential", func() error {
				c := c1
				c.Enabled = false
				return s.UpdateCredential(ctx, c)
			}},
			{"DeleteCredential", func() error { return s.DeleteCredential(ctx, "c1") }},
			{"CreateToken", func() error { return s.CreateToken(ctx, token("t1", 0)) }},
			{"UpdateToken", func() error {
				tk := token("t1", 0)
				tk.Name = "renamed"
				return s.UpdateToken(ctx, tk)
			}},
			{"DeleteToken", func() error { return s.DeleteToken(ctx, "t1") }},
			{"InitAdminPassword", func() error {
				set, err := s.InitAdminPassword(ctx, store.AdminPassword{Hash: "h1", UpdatedAt: base})
				if err == nil && !set {
					err = errors.New("InitAdminPassword on an empty store did not set")
				}
				return err
			}},
			{"SetAdminPassword", func() error { return s.SetAdminPassword(ctx, store.AdminPassword{Hash: "h2", UpdatedAt: base}) }},
		}
		prev := generation(t, s)
		for _, st := range steps {
			if err := st.do(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			got := generation(t, s)
			if got <= prev {
				t.Errorf("generation after %s = %d, want > %d", st.name, got, prev)
			}
			prev = got
		}
	})

	// Runtime records (sessions, last-used times, cooldown states) change
	// with traffic; they must not make a server reload its configuration.
	t.Run("UnchangedByRuntimeWrites", func(t *testing.T) {
		s := open(t)
		ctx := t.Context()
		must(t, "CreateCredential", s.CreateCredential(ctx, credential("c1", "a@example.com", 0)))
		must(t, "CreateToken", s.CreateToken(ctx, token("t1", 0)))
		steps := []struct {
			name string
			do   func() error
		}{
			{"SetCredentialState", func() error {
				return s.SetCredentialState(ctx, store.CredentialState{CredentialID: "c1", State: "invalid", Reason: "unauthorized", UpdatedAt: base})
			}},
			{"ClearCredentialState", func() error { return s.ClearCredentialState(ctx, "c1") }},
			{"TouchTokens", func() error { return s.TouchTokens(ctx, map[string]time.Time{"t1": at(time.Hour)}) }},
			{"CreateSession", func() error { return s.CreateSession(ctx, store.Session{ID: "s1", CreatedAt: base, LastSeenAt: base}) }},
			{"TouchSession", func() error { return s.TouchSession(ctx, "s1", at(time.Minute)) }},
			{"DeleteSession", func() error { return s.DeleteSession(ctx, "s1") }},
			{"DeleteAllSessions", func() error { return s.DeleteAllSessions(ctx) }},
			{"SetCredentialState ready", func() error {
				return s.SetCredentialState(ctx, store.CredentialState{CredentialID: "c1", State: store.StateReady, Reason: "success", UpdatedAt: base})
			}},
			{"SetCredentialState cooling", func() error {
				return s.SetCredentialState(ctx, store.CredentialState{CredentialID: "c1", State: store.StateCooling, Reason: "rate_limited",
					Until: time.Now().Add(time.Hour), UpdatedAt: base})
			}},
			{"CreateSession again", func() error {
				return s.CreateSession(ctx, store.Session{ID: "s2", CreatedAt: base, LastSeenAt: base})
			}},
			{"DeleteSessionsBefore", func() error {
				n, err := s.DeleteSessionsBefore(ctx, at(time.Hour))
				if err == nil && n != 1 {
					err = fmt.Errorf("deleted %d sessions, want 1", n)
				}
				return err
			}},
			{"AddUsage", func() error {
				return s.AddUsage(ctx, []store.Usage{{Day: "2025-03-14", CredentialID: "c1", TokenID: "t1", Model: "m1", Requests: 1}})
			}},
			{"AddUsage again", func() error {
				return s.AddUsage(ctx, []store.Usage{{Day: "2025-03-14", CredentialID: "c1", TokenID: "t1", Model: "m1", Requests: 1}})
			}},
		}
		for _, st := range steps {
			before := generation(t, s)
			if err := st.do(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if after := generation(t, s); after != before {
				t.Errorf("generation after %s = %d, want %d (unchanged)", st.name, after, before)
			}
		}
	})

	t.Run("UnchangedByReadsAndFailures", func(t *testing.T) {
		s := open(t)
		ctx := t.Context()
		must(t, "CreateCredential", s.CreateCredential(ctx, credential("c1", "a@example.com", 0)))
		must(t, "CreateToken", s.CreateToken(ctx, token("t1", 0)))
		must(t, "CreateSession", s.CreateSession(ctx, store.Session{ID: "s1", CreatedAt: base, LastSeenAt: base}))
		calls := []struct {
			name string
			do   func() error
			want error // the error the call must return; nil: any
		}{
			{"Ping", func() error { return s.Ping(ctx) }, nil},
			{"ListCredentials", func() error { _, err := s.ListCredentials(ctx); return err }, nil},
			{"GetCredential", func() error { _, err := s.GetCredential(ctx, "c1"); return err }, nil},
			{"ListTokens", func() error { _, err := s.ListTokens(ctx); return err }, nil},
			{"ListCredentialStates", func() error { _, err := s.ListCredentialStates(ctx); return err }, nil},
			{"GetSession", func() error { _, err := s.GetSession(ctx, "s1"); return err }, nil},
			{"ListUsage", func() error { _, err := s.ListUsage(ctx, "2025-01-01", "2025-12-31"); return err }, nil},
			{"DeleteSessionsBefore of none", func() error { _, err := s.DeleteSessionsBefore(ctx, at(-time.Hour)); return err }, nil},
			{"AdminPassword", func() error { _, err := s.AdminPassword(ctx); return err }, store.ErrNotFound},
			{"CreateCredential duplicate", func() error {
				return s.CreateCredential(ctx, credential("c1", "b@example.com", 0))
			}, store.ErrDuplicate},
			{"UpdateCredential missing", func() error {
				return s.UpdateCredential(ctx, credential("c9", "z@example.com", 0))
			}, store.ErrNotFound},
			{"DeleteCredential missing", func() error { return s.DeleteCredential(ctx, "c9") }, store.ErrNotFound},
			{"CreateToken duplicate", func() error { return s.CreateToken(ctx, token("t1", 0)) }, store.ErrDuplicate},
			{"UpdateToken missing", func() error { return s.UpdateToken(ctx, token("t9", 0)) }, store.ErrNotFound},
			{"DeleteToken missing", func() error { return s.DeleteToken(ctx, "t9") }, store.ErrNotFound},
			{"CreateSession duplicate", func() error {
				return s.CreateSession(ctx, store.Session{ID: "s1", CreatedAt: base})
			}, store.ErrDuplicate},
			{"TouchSession missing", func() error { return s.TouchSession(ctx, "s9", base) }, store.ErrNotFound},
			{"SetCredentialState unknown", func() error {
				return s.SetCredentialState(ctx, store.CredentialState{CredentialID: "c9", State: "invalid"})
			}, store.ErrNotFound},
		}
		for _, c := range calls {
			t.Run(c.name, func(t *testing.T) {
				before := generation(t, s)
				err := c.do()
				switch {
				case c.want == nil && err != nil:
					t.Fatalf("%s: %v", c.name, err)
				case c.want != nil:
					wantErr(t, c.name, err, c.want)
				}
				if after := generation(t, s); after != before {
					t.Errorf("generation after %s = %d, want %d (unchanged)", c.name, after, before)
				}
			})
		}
	})
}

func testConcurrency(t *testing.T, open func(t *testing.T) store.Store) {
	t.Run("WritersAndReaders", func(t *testing.T) {
		s := open(t)
		const (
			writers = 8
			each    = 6
		)
		ctx, stopReaders := context.WithCancel(t.Context())
		var readers sync.WaitGroup
		for r := range 2 {
			readers.Go(func() {
				last := int64(-1)
				for ctx.Err() == nil {
					g, err := s.Generation(ctx)
					if err != nil {
						if ctx.Err() == nil {
							t.Errorf("reader %d: Generation: %v", r, err)
						}
						return
					}
					if g < last {
						t.Errorf("reader %d: generation went back from %d to %d", r, last, g)
					}
					last = g
					if _, err := s.ListCredentials(ctx); err != nil && ctx.Err() == nil {
						t.Errorf("reader %d: ListCredentials: %v", r, err)
						return
					}
				}
			})
		}

		start := generation(t, s)
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					id := fmt.Sprintf("w%d-%d", w, i)
					if err := s.CreateCredential(t.Context(), credential("c-"+id, id+"@example.com", 0)); err != nil {
						t.Errorf("CreateCredential %s: %v", id, err)
					}
					if err := s.CreateToken(t.Context(), token("t-"+id, 0)); err != nil {
						t.Errorf("CreateToken %s: %v", id, err)
					}
					if err := s.TouchTokens(t.Context(), map[string]time.Time{"t-" + id: at(time.Minute)}); err != nil {
						t.Errorf("TouchTokens %s: %v", id, err)
					}
				}
			})
		}
		wg.Wait()
		stopReaders()
		readers.Wait()

		if got := len(listCredentials(t, s)); got != writers*each {
			t.Errorf("credentials = %d, want %d", got, writers*each)
		}
		toks := listTokens(t, s)
		if len(toks) != writers*each {
			t.Errorf("tokens = %d, want %d", len(toks), writers*each)
		}
		for _, tk := range toks {
			if !tk.LastUsedAt.Equal(at(time.Minute)) {
				t.Errorf("token %s last used %v, want %v", tk.ID, tk.LastUsedAt, at(time.Minute))
			}
		}
		if got, least := generation(t, s), start+2*writers*each; got < least {
			t.Errorf("generation after %d configuration changes = %d, want >= %d", 2*writers*each, got, least)
		}
	})

	t.Run("RacingDuplicates", func(t *testing.T) {
		tests := []struct {
			name   string
			create func(ctx context.Context, s store.Store, i int) error
		}{
			{"credential id", func(ctx context.Context, s store.Store, i int) error {
				return s.CreateCredential(ctx, credential("same", fmt.Sprintf("u%d@example.com", i), 0))
			}},
			{"credential email", func(ctx context.Context, s store.Store, i int) error {
				return s.CreateCredential(ctx, credential(fmt.Sprintf("c%d", i), "Same@Example.com", 0))
			}},
			{"token hash", func(ctx context.Context, s store.Store, i int) error {
				tk := token(fmt.Sprintf("t%d", i), 0)
				copy(tk.Hash, "same hash")
				return s.CreateToken(ctx, tk)
			}},
			{"session id", func(ctx context.Context, s store.Store, i int) error {
				return s.CreateSession(ctx, store.Session{ID: "same", CSRFToken: fmt.Sprint(i), CreatedAt: base})
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := open(t)
				const callers = 8
				var (
					wg  sync.WaitGroup
					mu  sync.Mutex
					ok  int
					dup int
				)
				for i := range callers {
					wg.Go(func() {
						err := tt.create(t.Context(), s, i)
						mu.Lock()
						defer mu.Unlock()
						switch {
						case err == nil:
							ok++
						case errors.Is(err, store.ErrDuplicate):
							dup++
						default:
							t.Errorf("create %d: %v", i, err)
						}
					})
				}
				wg.Wait()
				if ok != 1 || dup != callers-1 {
					t.Errorf("successes = %d, duplicates = %d; want 1 and %d", ok, dup, callers-1)
				}
			})
		}
	})
}

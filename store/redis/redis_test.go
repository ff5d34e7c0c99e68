package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/atlassian-proxy/atlassian-proxy/internal/redistest"
	"github.com/atlassian-proxy/atlassian-proxy/store"
	"github.com/atlassian-proxy/atlassian-proxy/store/storetest"
)

var prefixes atomic.Int64

// newPrefix returns a prefix no other store of this test binary uses.
func newPrefix() string { return fmt.Sprintf("test%d:", prefixes.Add(1)) }

// openStore opens a Store on srv (its URL and password, unless o.URL is
// set) and closes it when the test ends.
func openStore(t testing.TB, srv *redistest.Server, o Options) *Store {
	t.Helper()
	if o.URL == "" {
		o.URL = srv.URL()
		if o.Password == "" {
			o.Password = srv.Password()
		}
	}
	s, err := Open(t.Context(), o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// rawClient is a client of our own on srv, to look at the keys.
func rawClient(t testing.TB, srv *redistest.Server) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), Password: srv.Password()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func allKeys(t testing.TB, c *goredis.Client) []string {
	t.Helper()
	keys, err := c.Keys(t.Context(), "*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	return keys
}

func TestConformance(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return openStore(t, srv, Options{Prefix: newPrefix()})
	})
}

// exercise makes one of each kind of write, and a few reads.
func exercise(t *testing.T, s *Store) {
	t.Helper()
	ctx := t.Context()
	now := time.Now()
	steps := []struct {
		name string
		do   func() error
	}{
		{"CreateCredential", func() error {
			return s.CreateCredential(ctx, store.Credential{ID: "c1", Email: "a@example.com", Token: []byte("x"), CreatedAt: now})
		}},
		{"CreateCredential c2", func() error {
			return s.CreateCredential(ctx, store.Credential{ID: "c2", Email: "b@example.com", Token: []byte("x"), CreatedAt: now})
		}},
		{"UpdateCredential", func() error {
			return s.UpdateCredential(ctx, store.Credential{ID: "c1", Email: "A2@example.com", UpdatedAt: now})
		}},
		{"SetCredentialState cooling", func() error {
			return s.SetCredentialState(ctx, store.CredentialState{CredentialID: "c1", State: store.StateCooling, Until: now.Add(time.Hour)})
		}},
		{"SetCredentialState invalid", func() error {
			return s.SetCredentialState(ctx, store.CredentialState{CredentialID: "c2", State: store.StateInvalid})
		}},
		{"CreateToken", func() error { return s.CreateToken(ctx, store.APIToken{ID: "t1", Hash: []byte("h1"), CreatedAt: now}) }},
		{"TouchTokens", func() error { return s.TouchTokens(ctx, map[string]time.Time{"t1": now}) }},
		{"SetAdminPassword", func() error { return s.SetAdminPassword(ctx, store.AdminPassword{Hash: "h"}) }},
		{"CreateSession", func() error { return s.CreateSession(ctx, store.Session{ID: "s1", LastSeenAt: now}) }},
		{"AddUsage", func() error {
			return s.AddUsage(ctx, []store.Usage{{Day: now.UTC().Format(store.DayLayout), CredentialID: "c1", TokenID: "t1", Model: "m", Requests: 1}})
		}},
		{"Marker", func() error { _, err := s.Marker(ctx); return err }},
		{"Loss", func() error { _, err := s.Loss(ctx); return err }},
		{"ClearLoss", func() error { _, err := s.ClearLoss(ctx); return err }},
		{"Limiter", func() error { _, _, _, _, err := s.Limiter("rpm", 10, time.Minute).Take(ctx, "t1"); return err }},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
	}
}

func TestPrefixIsolation(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	raw := rawClient(t, srv)
	// A key of somebody else's, which must survive everything below.
	if err := raw.Set(t.Context(), "other-app:key", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	a := openStore(t, srv, Options{Prefix: "deploy-a:"})
	b := openStore(t, srv, Options{Prefix: "deploy-b:"})
	exercise(t, a)

	creds, err := b.ListCredentials(t.Context())
	if err != nil || len(creds) != 0 {
		t.Errorf("store b sees credentials %+v, %v; want none", creds, err)
	}
	if g, err := b.Generation(t.Context()); err != nil || g != 0 {
		t.Errorf("store b generation = %d, %v; want 0", g, err)
	}
	if _, err := b.AdminPassword(t.Context()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("store b AdminPassword: err = %v, want ErrNotFound", err)
	}
	// The same ids and email are free in b.
	exercise(t, b)
	// DeleteAllSessions of b leaves a's sessions alone.
	if err := b.DeleteAllSessions(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetSession(t.Context(), "s1"); err != nil {
		t.Errorf("a's session after b.DeleteAllSessions: %v", err)
	}
	if n, err := b.DeleteSessionsBefore(t.Context(), time.Now().Add(time.Hour)); err != nil || n != 0 {
		t.Errorf("b.DeleteSessionsBefore = %d, %v; want 0 (a's sessions are not b's)", n, err)
	}

	for _, k := range allKeys(t, raw) {
		if !strings.HasPrefix(k, "deploy-a:") && !strings.HasPrefix(k, "deploy-b:") && k != "other-app:key" {
			t.Errorf("key %q is outside both prefixes", k)
		}
	}
	if v, err := raw.Get(t.Context(), "other-app:key").Result(); err != nil || v != "v" {
		t.Errorf("the other application's key = %q, %v; want v", v, err)
	}
}

func TestDefaultPrefix(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	s := openStore(t, srv, Options{})
	if s.Prefix() != DefaultPrefix {
		t.Errorf("Prefix() = %q, want %q", s.Prefix(), DefaultPrefix)
	}
	exercise(t, s)
	for _, k := range allKeys(t, rawClient(t, srv)) {
		if !strings.HasPrefix(k, DefaultPrefix) {
			t.Errorf("key %q lacks the default prefix", k)
		}
	}
}

// TestTTLs checks which keys expire: cooling states at their Until, usage
// after usageTTL, and nothing else.
func TestTTLs(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	raw := rawClient(t, srv)
	s := openStore(t, srv, Options{Prefix: "ttl:"})
	exercise(t, s)
	ctx := t.Context()
	for _, k := range allKeys(t, raw) {
		ttl, err := raw.PTTL(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		var lo, hi time.Duration // the expected range; 0, 0: none
		switch {
		case k == "ttl:state:c1": // cooling for an hour
			lo, hi = 59*time.Minute, time.Hour+time.Second
		case strings.HasPrefix(k, "ttl:usage:"):
			lo, hi = usageTTL-time.Minute, usageTTL
		case strings.HasPrefix(k, "ttl:rl:"):
			lo, hi = time.Minute, 2*time.Minute
		}
		if hi == 0 && ttl != -1 {
			t.Errorf("PTTL %s = %v, want none", k, ttl)
		}
		if hi != 0 && (ttl < lo || ttl > hi) {
			t.Errorf("PTTL %s = %v, want in [%v, %v]", k, ttl, lo, hi)
		}
	}
	// A ready state written over the cooldown loses its TTL.
	if err := s.SetCredentialState(ctx, store.CredentialState{CredentialID: "c1", State: store.StateReady}); err != nil {
		t.Fatal(err)
	}
	if ttl, err := raw.PTTL(ctx, "ttl:state:c1").Result(); err != nil || ttl != -1 {
		t.Errorf("PTTL of a ready state = %v, %v; want none", ttl, err)
	}
}

// TestCoolingExpiresInRedis: a cooldown disappears from Redis at its
// Until, not only from the list.
func TestCoolingExpiresInRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	raw := rawClient(t, srv)
	s := openStore(t, srv, Options{})
	ctx := t.Context()
	if err := s.CreateCredential(ctx, store.Credential{ID: "c1", Email: "a@example.com"}); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(150 * time.Millisecond)
	if err := s.SetCredentialState(ctx, store.CredentialState{CredentialID: "c1", State: store.StateCooling, Until: until}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ListCredentialStates(ctx); err != nil || len(got) != 1 {
		t.Fatalf("ListCredentialStates before Until = %+v, %v; want c1", got, err)
	}
	time.Sleep(time.Until(until) + 50*time.Millisecond)
	if got, err := s.ListCredentialStates(ctx); err != nil || len(got) != 0 {
		t.Errorf("ListCredentialStates after Until = %+v, %v; want none", got, err)
	}
	if n, err := raw.Exists(ctx, DefaultPrefix+"state:c1").Result(); err != nil || n != 0 {
		t.Errorf("EXISTS state:c1 after Until = %d, %v; want 0", n, err)
	}
	// A state set again after that works as usual.
	if err := s.SetCredentialState(ctx, store.CredentialState{CredentialID: "c1", State: store.StateInvalid}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ListCredentialStates(ctx); err != nil || len(got) != 1 || got[0].State != store.StateInvalid {
		t.Errorf("ListCredentialStates = %+v, %v; want c1 invalid", got, err)
	}
}

// TestInitAdminPasswordReplicas: replicas starting at once, each with its
// own client, store exactly one password.
func TestInitAdminPasswordReplicas(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const replicas = 10
	stores := make([]*Store, replicas)
	for i := range stores {
		stores[i] = openStore(t, srv, Options{})
	}
	start := make(chan struct{})
	var (
		wg  sync.WaitGroup
		won atomic.Int64
	)
	hashes := make([]string, replicas)
	for i, s := range stores {
		hashes[i] = fmt.Sprintf("hash-of-replica-%d", i)
		wg.Go(func() {
			<-start
			set, err := s.InitAdminPassword(t.Context(), store.AdminPassword{Hash: hashes[i], MustChange: true})
			if err != nil {
				t.Errorf("replica %d: InitAdminPassword: %v", i, err)
			}
			if set {
				won.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if won.Load() != 1 {
		t.Fatalf("InitAdminPassword winners = %d, want 1", won.Load())
	}
	p, err := stores[0].AdminPassword(t.Context())
	if err != nil || !strings.HasPrefix(p.Hash, "hash-of-replica-") || !p.MustChange {
		t.Errorf("AdminPassword = %+v, %v", p, err)
	}
	if g, err := stores[1].Generation(t.Context()); err != nil || g != 1 {
		t.Errorf("Generation = %d, %v; want 1 (one password stored)", g, err)
	}
}

// TestDuplicatesAcrossReplicas: uniqueness holds between clients, not only
// within one.
func TestDuplicatesAcrossReplicas(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := openStore(t, srv, Options{}), openStore(t, srv, Options{})
	ctx := t.Context()
	if err := a.CreateCredential(ctx, store.Credential{ID: "c1", Email: "Alice@Example.com", CloudID: "x"}); err != nil {
		t.Fatal(err)
	}
	err := b.CreateCredential(ctx, store.Credential{ID: "c2", Email: "alice@example.COM", CloudID: "x"})
	if !errors.Is(err, store.ErrDuplicate) {
		t.Errorf("CreateCredential of the same email through another client: err = %v, want ErrDuplicate", err)
	}
	// The email moves: the old one is free, the new one is taken.
	if err := b.UpdateCredential(ctx, store.Credential{ID: "c1", Email: "bob@example.com", CloudID: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateCredential(ctx, store.Credential{ID: "c2", Email: "alice@example.com", CloudID: "x"}); err != nil {
		t.Errorf("CreateCredential of the freed email: %v", err)
	}
	if err := a.CreateCredential(ctx, store.Credential{ID: "c3", Email: "BOB@example.com", CloudID: "x"}); !errors.Is(err, store.ErrDuplicate) {
		t.Errorf("CreateCredential of the moved email: err = %v, want ErrDuplicate", err)
	}
	if err := a.DeleteCredential(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateCredential(ctx, store.Credential{ID: "c3", Email: "BOB@example.com", CloudID: "x"}); err != nil {
		t.Errorf("CreateCredential of a deleted credential's email: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const secret = "pa55-SECRET-word"
	tests := []struct {
		name string
		o    Options
		want []string // in the message
		is   error    // nil: any error
	}{
		{"empty URL", Options{}, []string{"empty URL"}, nil},
		{"unparsable URL", Options{URL: "redis://:" + secret + "@[::1"}, []string{"does not parse"}, nil},
		{"unsupported scheme", Options{URL: "http://:" + secret + "@127.0.0.1:1/0"}, []string{`scheme "http"`, "xxxxx"}, nil},
		{"unix scheme", Options{URL: "unix:///tmp/redis.sock"}, []string{`scheme "unix"`}, nil},
		{"bad database", Options{URL: "redis://:" + secret + "@127.0.0.1:1/zero"}, []string{"database"}, nil},
		{"negative timeout", Options{URL: srv.URL(), OpTimeout: -time.Second}, []string{"negative OpTimeout"}, nil},
		{"nobody listening", Options{URL: "redis://:" + secret + "@" + closedAddr(t) + "/0", OpTimeout: 500 * time.Millisecond},
			[]string{"xxxxx"}, store.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.Context(), tt.o)
			if err == nil {
				s.Close()
				t.Fatal("Open = nil error, want one")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("Open: err = %v, want %v", err, tt.is)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Open: err = %q, want it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("Open: err = %q shows the password", err)
			}
		})
	}
}

// closedAddr returns the address of a loopback port nobody listens on.
func closedAddr(t *testing.T) string {
	srv := redistest.Start(t)
	addr := srv.Addr()
	srv.Stop(t)
	return addr
}

func TestPassword(t *testing.T) {
	t.Parallel()
	const secret = "pa55-SECRET-word"
	srv := redistest.StartWith(t, redistest.Config{Password: secret})
	withPass := strings.Replace(srv.URL(), "redis://", "redis://:"+secret+"@", 1)
	wrongPass := strings.Replace(srv.URL(), "redis://", "redis://:wrong-PASSWORD@", 1)
	tests := []struct {
		name string
		o    Options
		ok   bool
	}{
		{"no password", Options{URL: srv.URL()}, false},
		{"password in the URL", Options{URL: withPass}, true},
		{"password option", Options{URL: srv.URL(), Password: secret}, true},
		{"password option overrides the URL's", Options{URL: wrongPass, Password: secret}, true},
		{"wrong password", Options{URL: wrongPass}, false},
		{"wrong password option", Options{URL: withPass, Password: "wrong-PASSWORD"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.Context(), tt.o)
			if tt.ok {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				defer s.Close()
				if err := s.CreateCredential(t.Context(), store.Credential{ID: newPrefix(), Email: newPrefix()}); err != nil {
					t.Errorf("CreateCredential: %v", err)
				}
				return
			}
			if err == nil {
				s.Close()
				t.Fatal("Open = nil error, want one")
			}
			if !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("Open: err = %v, want ErrUnavailable", err)
			}
			for _, sec := range []string{secret, "wrong-PASSWORD"} {
				if strings.Contains(err.Error(), sec) {
					t.Errorf("Open: err = %q shows a password", err)
				}
			}
		})
	}
}

func TestErrorsCounter(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	s := openStore(t, srv, Options{OpTimeout: 300 * time.Millisecond})
	ctx := t.Context()
	// Answers are not failures.
	if _, err := s.GetCredential(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetCredential: err = %v", err)
	}
	if err := s.CreateSession(ctx, store.Session{ID: "s1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSession(ctx, store.Session{ID: "s1"}); !errors.Is(err, store.ErrDuplicate) {
		t.Fatalf("CreateSession: err = %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_ = s.Ping(cancelled)
	if got := s.Errors(); got != 0 {
		t.Errorf("Errors() after answers and a cancelled call = %d, want 0", got)
	}
	srv.Stop(t)
	for range 3 {
		if err := s.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Ping of a stopped server: err = %v, want ErrUnavailable", err)
		}
	}
	if got := s.Errors(); got != 3 {
		t.Errorf("Errors() after 3 failed pings = %d, want 3", got)
	}
}

func TestClosedStore(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	s, err := Open(t.Context(), Options{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	w := s.Watch(t.Context())
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Close stopped the watcher: its channel is closed (after any notice).
	for range w {
	}
	if _, ok := <-s.Watch(t.Context()); ok {
		t.Error("Watch after Close delivered a notice, want a closed channel")
	}
	if err := s.Ping(t.Context()); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Ping after Close: err = %v, want ErrUnavailable", err)
	}
}

// TestInvalidArguments: arguments refused before any command runs are
// errors of their own: not ErrUnavailable, not counted in Errors.
func TestInvalidArguments(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	s := openStore(t, srv, Options{})
	ctx := t.Context()
	if err := s.CreateCredential(ctx, store.Credential{ID: "c1", Email: "a@example.com"}); err != nil {
		t.Fatal(err)
	}
	far := time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
	calls := []struct {
		name string
		do   func() error
		want string
	}{
		{"CreateCredential empty id", func() error { return s.CreateCredential(ctx, store.Credential{Email: "b@example.com"}) }, "empty credential id"},
		{"CreateCredential far", func() error {
			return s.CreateCredential(ctx, store.Credential{ID: "c2", CreatedAt: far})
		}, "out of range"},
		{"UpdateCredential far", func() error { return s.UpdateCredential(ctx, store.Credential{ID: "c1", UpdatedAt: far}) }, "out of range"},
		{"SetCredentialState far", func() error {
			return s.SetCredentialState(ctx, store.CredentialState{CredentialID: "c1", State: store.StateCooling, Until: far})
		}, "out of range"},
		{"CreateToken empty id", func() error { return s.CreateToken(ctx, store.APIToken{Hash: []byte("h")}) }, "empty token id"},
		{"CreateToken far", func() error { return s.CreateToken(ctx, store.APIToken{ID: "t1", ExpiresAt: far}) }, "out of range"},
		{"UpdateToken far", func() error { return s.UpdateToken(ctx, store.APIToken{ID: "t1", ExpiresAt: far}) }, "out of range"},
		{"TouchTokens far", func() error { return s.TouchTokens(ctx, map[string]time.Time{"t1": far}) }, "out of range"},
		{"InitAdminPassword far", func() error {
			_, err := s.InitAdminPassword(ctx, store.AdminPassword{Hash: "h", UpdatedAt: far})
			return err
		}, "out of range"},
		{"SetAdminPassword far", func() error { return s.SetAdminPassword(ctx, store.AdminPassword{UpdatedAt: far}) }, "out of range"},
		{"CreateSession empty id", func() error { return s.CreateSession(ctx, store.Session{}) }, "empty session id"},
		{"CreateSession far", func() error { return s.CreateSession(ctx, store.Session{ID: "s1", LastSeenAt: far}) }, "out of range"},
		{"CreateSession far creation", func() error { return s.CreateSession(ctx, store.Session{ID: "s1", CreatedAt: far}) }, "out of range"},
		{"TouchSession far", func() error { return s.TouchSession(ctx, "s1", far) }, "out of range"},
		{"DeleteSessionsBefore far", func() error { _, err := s.DeleteSessionsBefore(ctx, far); return err }, "out of range"},
		{"AddUsage bad day", func() error { return s.AddUsage(ctx, []store.Usage{{Day: "2026-13-01"}}) }, "invalid day"},
		{"ListUsage bad day", func() error { _, err := s.ListUsage(ctx, "2026-01-01", "tomorrow"); return err }, "invalid day"},
	}
	for _, c := range calls {
		err := c.do()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one containing %q", c.name, err, c.want)
		}
		if errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s: err = %v wraps ErrUnavailable", c.name, err)
		}
	}
	if n := s.Errors(); n != 0 {
		t.Errorf("Errors() = %d after refused arguments, want 0", n)
	}
	if g, err := s.Generation(ctx); err != nil || g != 1 {
		t.Errorf("Generation = %d, %v; want 1 (only the first credential)", g, err)
	}
}

// TestCorruptRecords: a record Redis holds in a form this package did not
// write makes reads fail with an error naming it, not panic or invent
// values.
func TestCorruptRecords(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	raw := rawClient(t, srv)
	ctx := t.Context()
	tests := []struct {
		name    string
		prepare func(s *Store) error
		read    func(s *Store) error
	}{
		{"credential concurrency", func(s *Store) error { return raw.HSet(ctx, s.k.cred+"c1", "maxc", "many").Err() },
			func(s *Store) error { _, err := s.ListCredentials(ctx); return err }},
		{"credential time", func(s *Store) error { return raw.HSet(ctx, s.k.cred+"c1", "created", "yesterday").Err() },
			func(s *Store) error { _, err := s.GetCredential(ctx, "c1"); return err }},
		{"token models", func(s *Store) error { return raw.HSet(ctx, s.k.tok+"t1", "models", "[not json").Err() },
			func(s *Store) error { _, err := s.ListTokens(ctx); return err }},
		{"token rate limit", func(s *Store) error { return raw.HDel(ctx, s.k.tok+"t1", "rl").Err() },
			func(s *Store) error { _, err := s.ListTokens(ctx); return err }},
		{"state time", func(s *Store) error { return raw.HSet(ctx, s.k.state+"c1", "until", "soon").Err() },
			func(s *Store) error { _, err := s.ListCredentialStates(ctx); return err }},
		{"session time", func(s *Store) error { return raw.HSet(ctx, s.k.sess+"s1", "seen", "now").Err() },
			func(s *Store) error { _, err := s.GetSession(ctx, "s1"); return err }},
		{"password time", func(s *Store) error { return raw.HDel(ctx, s.k.admin, "updated").Err() },
			func(s *Store) error { _, err := s.AdminPassword(ctx); return err }},
		{"usage counter", func(s *Store) error { return raw.HSet(ctx, s.k.usage+"2026-01-02", "r0:2:t1m", "lots").Err() },
			func(s *Store) error { _, err := s.ListUsage(ctx, "2026-01-01", "2026-01-31"); return err }},
		{"usage key", func(s *Store) error { return raw.HSet(ctx, s.k.usage+"2026-01-02", "r9:x", "1").Err() },
			func(s *Store) error { _, err := s.ListUsage(ctx, "2026-01-01", "2026-01-31"); return err }},
		{"usage counter letter", func(s *Store) error { return raw.HSet(ctx, s.k.usage+"2026-01-02", "x0:2:t1m", "1").Err() },
			func(s *Store) error { _, err := s.ListUsage(ctx, "2026-01-01", "2026-01-31"); return err }},
		{"wrong type", func(s *Store) error { return raw.Set(ctx, s.k.creds, "a string", 0).Err() },
			func(s *Store) error { _, err := s.ListCredentials(ctx); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, srv, Options{Prefix: newPrefix()})
			exercise(t, s)
			if err := s.CreateToken(ctx, store.APIToken{ID: "t1", Hash: []byte("h-t1")}); err != nil && !errors.Is(err, store.ErrDuplicate) {
				t.Fatal(err)
			}
			if err := s.AddUsage(ctx, []store.Usage{{Day: "2026-01-02", TokenID: "t1", Model: "m", Requests: 1}}); err != nil {
				t.Fatal(err)
			}
			if err := tt.prepare(s); err != nil {
				t.Fatal(err)
			}
			err := tt.read(s)
			if err == nil {
				t.Fatal("read of a corrupt record = nil error, want one")
			}
			if errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrNotFound) {
				t.Errorf("err = %v, want neither ErrUnavailable nor ErrNotFound", err)
			}
		})
	}
}

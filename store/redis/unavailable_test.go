package redis

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/internal/redistest"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

type call struct {
	name string
	do   func(ctx context.Context) error
}

// everyCall lists one call of every method of the Store (and of a
// limiter), for the failure tests.
func everyCall(s *Store) []call {
	now := time.Now()
	lim := s.Limiter("rpm", 10, time.Minute)
	big := s.Limiter("big", 100000, time.Minute) // takes in batches (reserve)
	return []call{
		{"Ping", s.Ping},
		{"Generation", func(ctx context.Context) error { _, err := s.Generation(ctx); return err }},
		{"ListCredentials", func(ctx context.Context) error { _, err := s.ListCredentials(ctx); return err }},
		{"GetCredential", func(ctx context.Context) error { _, err := s.GetCredential(ctx, "c1"); return err }},
		{"CreateCredential", func(ctx context.Context) error {
			return s.CreateCredential(ctx, store.Credential{ID: "c9", Email: "z@example.com"})
		}},
		{"UpdateCredential", func(ctx context.Context) error {
			return s.UpdateCredential(ctx, store.Credential{ID: "c1", Email: "z@example.com"})
		}},
		{"DeleteCredential", func(ctx context.Context) error { return s.DeleteCredential(ctx, "c1") }},
		{"ListTokens", func(ctx context.Context) error { _, err := s.ListTokens(ctx); return err }},
		{"CreateToken", func(ctx context.Context) error {
			return s.CreateToken(ctx, store.APIToken{ID: "t9", Hash: []byte("h9")})
		}},
		{"UpdateToken", func(ctx context.Context) error { return s.UpdateToken(ctx, store.APIToken{ID: "t1", Name: "n"}) }},
		{"DeleteToken", func(ctx context.Context) error { return s.DeleteToken(ctx, "t1") }},
		{"TouchTokens", func(ctx context.Context) error { return s.TouchTokens(ctx, map[string]time.Time{"t1": now}) }},
		{"AdminPassword", func(ctx context.Context) error { _, err := s.AdminPassword(ctx); return err }},
		{"InitAdminPassword", func(ctx context.Context) error {
			_, err := s.InitAdminPassword(ctx, store.AdminPassword{Hash: "h"})
			return err
		}},
		{"SetAdminPassword", func(ctx context.Context) error { return s.SetAdminPassword(ctx, store.AdminPassword{Hash: "h"}) }},
		{"CreateSession", func(ctx context.Context) error { return s.CreateSession(ctx, store.Session{ID: "s9"}) }},
		{"GetSession", func(ctx context.Context) error { _, err := s.GetSession(ctx, "s1"); return err }},
		{"TouchSession", func(ctx context.Context) error { return s.TouchSession(ctx, "s1", now) }},
		{"DeleteSession", func(ctx context.Context) error { return s.DeleteSession(ctx, "s1") }},
		{"DeleteAllSessions", s.DeleteAllSessions},
		{"DeleteSessionsBefore", func(ctx context.Context) error { _, err := s.DeleteSessionsBefore(ctx, now); return err }},
		{"SetCredentialState", func(ctx context.Context) error {
			return s.SetCredentialState(ctx, store.CredentialState{CredentialID: "c1", State: store.StateReady})
		}},
		{"ClearCredentialState", func(ctx context.Context) error { return s.ClearCredentialState(ctx, "c1") }},
		{"ListCredentialStates", func(ctx context.Context) error { _, err := s.ListCredentialStates(ctx); return err }},
		{"AddUsage", func(ctx context.Context) error {
			return s.AddUsage(ctx, []store.Usage{{Day: "2026-01-02", TokenID: "t1", Model: "m", Requests: 1}})
		}},
		{"ListUsage", func(ctx context.Context) error { _, err := s.ListUsage(ctx, "2026-01-01", "2026-01-31"); return err }},
		{"Marker", func(ctx context.Context) error { _, err := s.Marker(ctx); return err }},
		{"Loss", func(ctx context.Context) error { _, err := s.Loss(ctx); return err }},
		{"ClearLoss", func(ctx context.Context) error { _, err := s.ClearLoss(ctx); return err }},
		{"Limiter.Take", func(ctx context.Context) error { _, _, _, _, err := lim.Take(ctx, "k"); return err }},
		{"Limiter.Get", func(ctx context.Context) error { _, _, err := lim.Get(ctx, "k"); return err }},
		{"Limiter.Set", func(ctx context.Context) error { return lim.Set(ctx, "k", 5, time.Minute) }},
		{"Limiter.Burst", func(ctx context.Context) error { return lim.Burst(ctx, "k", 5) }},
		{"Limiter.Take (batches)", func(ctx context.Context) error { _, _, _, _, err := big.Take(ctx, "k"); return err }},
		{"Limiter.Get (batches)", func(ctx context.Context) error { _, _, err := big.Get(ctx, "k"); return err }},
	}
}

// TestUnavailableStopped: with the server gone, every call fails at once
// with store.ErrUnavailable, without the password in its message, and
// works again once the server is back.
func TestUnavailableStopped(t *testing.T) {
	t.Parallel()
	const secret = "pa55-SECRET-word"
	srv := redistest.StartWith(t, redistest.Config{Password: secret})
	const opTimeout = 500 * time.Millisecond
	url := strings.Replace(srv.URL(), "redis://", "redis://default:"+secret+"@", 1)
	s := openStore(t, srv, Options{URL: url, OpTimeout: opTimeout})
	exercise(t, s) // the pool holds connections, which break
	srv.Stop(t)

	for _, c := range everyCall(s) {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			err := c.do(t.Context())
			if took := time.Since(start); took > opTimeout+500*time.Millisecond {
				t.Errorf("%s took %v with the server stopped, want at most about %v", c.name, took, opTimeout)
			}
			if !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("%s: err = %v, want ErrUnavailable", c.name, err)
			}
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("%s: err = %q shows the password", c.name, err)
			}
		})
	}

	srv.Restart(t)
	eventually(t, 5*time.Second, "Ping after the restart", func() bool { return s.Ping(t.Context()) == nil })
	if err := s.CreateCredential(t.Context(), store.Credential{ID: "c1", Email: "a@example.com"}); err != nil {
		t.Errorf("CreateCredential after the restart: %v", err)
	}
}

// TestUnavailableHung: a server that takes no commands (CLIENT PAUSE) makes
// every call fail with store.ErrUnavailable after OpTimeout, not hang.
func TestUnavailableHung(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const opTimeout = 300 * time.Millisecond
	s := openStore(t, srv, Options{OpTimeout: opTimeout})
	exercise(t, s)
	raw := rawClient(t, srv)
	// Long enough for the calls below (about opTimeout, in parallel).
	const pause = 1500 * time.Millisecond
	if err := raw.Do(t.Context(), "CLIENT", "PAUSE", pause.Milliseconds(), "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()

	calls := everyCall(s)
	errs := make([]error, len(calls))
	took := make([]time.Duration, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Go(func() {
			start := time.Now()
			errs[i] = c.do(t.Context())
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	for i, c := range calls {
		if !errors.Is(errs[i], store.ErrUnavailable) {
			t.Errorf("%s: err = %v, want ErrUnavailable", c.name, errs[i])
		}
		if took[i] < opTimeout-50*time.Millisecond || took[i] > opTimeout+time.Second {
			t.Errorf("%s took %v, want about %v", c.name, took[i], opTimeout)
		}
	}

	// The caller's own cancellation and deadline are theirs, not Redis's.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Ping(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Ping with a 50ms deadline: err = %v, want the context's DeadlineExceeded", err)
	}
	if took := time.Since(start); took > opTimeout {
		t.Errorf("Ping with a 50ms deadline took %v", took)
	}
	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := s.ListCredentials(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("ListCredentials cancelled while waiting: err = %v, want context.Canceled", err)
	}

	if time.Since(paused) > pause {
		t.Fatalf("the checks took longer than the pause (%v); they are not valid", pause)
	}
	eventually(t, 5*time.Second, "Ping after the pause", func() bool { return s.Ping(t.Context()) == nil })
}

// eventually polls cond every 20ms until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

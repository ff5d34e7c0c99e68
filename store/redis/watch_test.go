package redis

import (
	"context"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/internal/redistest"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// waitNotice fails the test unless w delivers a notice within d.
func waitNotice(t *testing.T, w <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case _, ok := <-w:
		if !ok {
			t.Fatalf("%s: the watch channel closed", what)
		}
	case <-time.After(d):
		t.Fatalf("%s: no notice within %v", what, d)
	}
}

// noNotice fails the test if w delivers a notice within d.
func noNotice(t *testing.T, w <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-w:
		t.Fatalf("%s: got a notice, want none", what)
	case <-time.After(d):
	}
}

func TestWatch(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a := openStore(t, srv, Options{})
	b := openStore(t, srv, Options{})
	other := openStore(t, srv, Options{Prefix: "another-deployment:"})
	ctx := t.Context()
	w := b.Watch(ctx)
	waitNotice(t, w, time.Second, "first subscription")

	if err := a.CreateCredential(ctx, store.Credential{ID: "c1", Email: "a@example.com"}); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateToken(ctx, store.APIToken{ID: "t1", Hash: []byte("h")}); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateSession(ctx, store.Session{ID: "s1"}); err != nil {
		t.Fatal(err)
	}
	// The set-up's notices (two configuration writes) arrive in their own
	// time: let them land, merged into the one pending, and take it, so
	// that each change below is matched with its own notice.
	time.Sleep(200 * time.Millisecond)
	select {
	case <-w:
	default:
	}
	changes := []struct {
		name   string
		do     func() error
		notice bool
	}{
		{"CreateCredential", func() error {
			return a.CreateCredential(ctx, store.Credential{ID: "c2", Email: "b@example.com"})
		}, true},
		{"UpdateCredential", func() error {
			return a.UpdateCredential(ctx, store.Credential{ID: "c2", Email: "c@example.com"})
		}, true},
		{"SetCredentialState", func() error {
			return a.SetCredentialState(ctx, store.CredentialState{CredentialID: "c1", State: store.StateCooling, Until: time.Now().Add(time.Hour)})
		}, true},
		{"SetCredentialState ready", func() error {
			return a.SetCredentialState(ctx, store.CredentialState{CredentialID: "c1", State: store.StateReady})
		}, true},
		{"ClearCredentialState", func() error { return a.ClearCredentialState(ctx, "c1") }, true},
		{"DeleteCredential", func() error { return a.DeleteCredential(ctx, "c2") }, true},
		{"CreateToken", func() error { return a.CreateToken(ctx, store.APIToken{ID: "t2", Hash: []byte("h2")}) }, true},
		{"UpdateToken", func() error { return a.UpdateToken(ctx, store.APIToken{ID: "t2", Name: "n"}) }, true},
		{"DeleteToken", func() error { return a.DeleteToken(ctx, "t2") }, true},
		{"InitAdminPassword", func() error { _, err := a.InitAdminPassword(ctx, store.AdminPassword{Hash: "h"}); return err }, true},
		{"SetAdminPassword", func() error { return a.SetAdminPassword(ctx, store.AdminPassword{Hash: "h2"}) }, true},
		// Runtime writes, failures and other prefixes are silent.
		{"TouchTokens", func() error { return a.TouchTokens(ctx, map[string]time.Time{"t1": time.Now()}) }, false},
		{"TouchSession", func() error { return a.TouchSession(ctx, "s1", time.Now()) }, false},
		{"AddUsage", func() error {
			return a.AddUsage(ctx, []store.Usage{{Day: "2026-01-02", TokenID: "t1", Model: "m", Requests: 1}})
		}, false},
		{"InitAdminPassword when set", func() error {
			_, err := a.InitAdminPassword(ctx, store.AdminPassword{Hash: "h3"})
			return err
		}, false},
		{"ClearCredentialState of none", func() error { return a.ClearCredentialState(ctx, "c1") }, false},
		{"another prefix", func() error {
			return other.CreateCredential(ctx, store.Credential{ID: "c1", Email: "a@example.com"})
		}, false},
	}
	for _, c := range changes {
		if err := c.do(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if c.notice {
			waitNotice(t, w, time.Second, c.name)
		} else {
			noNotice(t, w, 100*time.Millisecond, c.name)
		}
	}
}

func TestWatchMergesNotices(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	s := openStore(t, srv, Options{})
	w := s.Watch(t.Context())
	waitNotice(t, w, time.Second, "first subscription")
	for i := range 20 {
		if err := s.SetAdminPassword(t.Context(), store.AdminPassword{Hash: string(rune('a' + i))}); err != nil {
			t.Fatal(err)
		}
	}
	// Nobody read: the notices merged into the one pending.
	time.Sleep(200 * time.Millisecond)
	if n := len(w); n != 1 {
		t.Errorf("pending notices = %d, want 1", n)
	}
	<-w
	noNotice(t, w, 100*time.Millisecond, "after draining")
}

func TestWatchReconnects(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	s := openStore(t, srv, Options{OpTimeout: 500 * time.Millisecond})
	writer := openStore(t, srv, Options{})
	w := s.Watch(t.Context())
	waitNotice(t, w, time.Second, "first subscription")

	srv.Restart(t)
	waitNotice(t, w, 5*time.Second, "resubscription after the restart")
	// The new subscription carries changes.
	if err := writer.SetAdminPassword(t.Context(), store.AdminPassword{Hash: "h"}); err != nil {
		t.Fatal(err)
	}
	waitNotice(t, w, time.Second, "a change after the restart")
	if s.Errors() == 0 {
		t.Error("Errors() = 0 after the watcher lost its connection, want > 0")
	}

	// Down for a while: the watcher keeps trying and comes back.
	srv.Stop(t)
	time.Sleep(300 * time.Millisecond)
	srv.Restart(t)
	waitNotice(t, w, 5*time.Second, "resubscription after an outage")
}

func TestWatchStartsWhileDown(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	s := openStore(t, srv, Options{OpTimeout: 300 * time.Millisecond})
	srv.Stop(t)
	w := s.Watch(t.Context())
	noNotice(t, w, 200*time.Millisecond, "while Redis is down")
	srv.Restart(t)
	waitNotice(t, w, 5*time.Second, "subscription once Redis is up")
}

func TestWatchEndsWithContext(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	s := openStore(t, srv, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	w := s.Watch(ctx)
	waitNotice(t, w, time.Second, "first subscription")
	cancel()
	select {
	case _, ok := <-w:
		if ok {
			t.Error("a notice after cancel, want the channel closed")
		}
	case <-time.After(time.Second):
		t.Fatal("the watch channel is still open a second after cancel")
	}
	// The subscription is gone from the server.
	eventually(t, time.Second, "no subscriber left", func() bool {
		n, err := rawClient(t, srv).PubSubNumSub(t.Context(), DefaultPrefix+"events").Result()
		return err == nil && n[DefaultPrefix+"events"] == 0
	})
}

// TestWatchSilentConnection: a connection that stops answering (the server
// takes no commands) is detected by the watcher's ping, dropped, and
// replaced once the server answers again.
func TestWatchSilentConnection(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	s := openStore(t, srv, Options{OpTimeout: 300 * time.Millisecond})
	s.watchPing = 100 * time.Millisecond
	w := s.Watch(t.Context())
	waitNotice(t, w, time.Second, "first subscription")
	time.Sleep(300 * time.Millisecond) // quiet: pings answered, no reconnection
	if n := s.Errors(); n != 0 {
		t.Fatalf("Errors() = %d while the connection was quiet but alive, want 0", n)
	}
	if len(w) != 0 {
		t.Fatal("a notice while quiet, want none")
	}

	if err := rawClient(t, srv).Do(t.Context(), "CLIENT", "PAUSE", "1000", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	waitNotice(t, w, 3*time.Second, "resubscription after the pause")
	if s.Errors() == 0 {
		t.Error("Errors() = 0, want the dropped connection counted")
	}
}

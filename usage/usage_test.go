package usage_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/internal/redistest"
	"github.com/atlassian-proxy/atlassian-proxy/store"
	redisstore "github.com/atlassian-proxy/atlassian-proxy/store/redis"
	"github.com/atlassian-proxy/atlassian-proxy/store/sqlite"
	"github.com/atlassian-proxy/atlassian-proxy/usage"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestRecordAndFlush(t *testing.T) {
	st := openStore(t)
	c := &clock{t: time.Date(2026, 11, 25, 23, 59, 30, 0, time.UTC)}
	r := usage.New(st, usage.Config{Now: c.now})
	ctx := t.Context()
	r.Record(usage.Event{CredentialID: "c1", TokenID: "t1", Model: "m", InputTokens: 10, OutputTokens: 5})
	r.Record(usage.Event{CredentialID: "c1", TokenID: "t1", Model: "m", InputTokens: 1, OutputTokens: 2})
	r.Record(usage.Event{TokenID: "t1", Model: "m", Failed: true, Error: "no_credentials: none"})
	c.add(time.Minute) // the next day
	r.Record(usage.Event{CredentialID: "c2", TokenID: "t2", Model: "m", InputTokens: 7})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil { // nothing pending: no write, no error
		t.Fatal(err)
	}
	got, err := st.ListUsage(ctx, "2026-11-25", "2026-11-26")
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Usage{
		{Day: "2026-11-25", CredentialID: "", TokenID: "t1", Model: "m", Requests: 1, Failures: 1},
		{Day: "2026-11-25", CredentialID: "c1", TokenID: "t1", Model: "m", Requests: 2, InputTokens: 11, OutputTokens: 7},
		{Day: "2026-11-26", CredentialID: "c2", TokenID: "t2", Model: "m", Requests: 1, InputTokens: 7},
	}
	if len(got) != len(want) {
		t.Fatalf("rows = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	// A second flush adds to the stored rows.
	r.Record(usage.Event{CredentialID: "c2", TokenID: "t2", Model: "m", InputTokens: 3})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, err = st.ListUsage(ctx, "2026-11-26", "2026-11-26")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Requests != 2 || got[0].InputTokens != 10 {
		t.Errorf("after a second flush: %+v", got)
	}
}

func TestMinutesAndErrors(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	r := usage.New(nil, usage.Config{Now: c.now})
	r.Record(usage.Event{Model: "m", InputTokens: 3})
	c.add(2 * time.Minute)
	r.Record(usage.Event{Model: "m", Failed: true, Error: "e1"})
	r.Record(usage.Event{Model: "m"})
	m := r.Minutes(3)
	if len(m) != 3 {
		t.Fatalf("Minutes(3) has %d entries", len(m))
	}
	if m[0].Requests != 1 || m[0].InputTokens != 3 || m[1].Requests != 0 || m[2].Requests != 2 || m[2].Failures != 1 {
		t.Errorf("Minutes(3) = %+v", m)
	}
	if !m[2].Start.Equal(c.now()) || !m[0].Start.Equal(c.now().Add(-2*time.Minute)) {
		t.Errorf("minute starts: %v … %v", m[0].Start, m[2].Start)
	}
	// An hour later the ring slots of old minutes read as empty.
	c.add(time.Hour)
	for _, x := range r.Minutes(usage.Window) {
		if x.Requests != 0 {
			t.Errorf("an old minute leaked into the window: %+v", x)
		}
	}
	if n := len(r.Minutes(1000)); n != usage.Window {
		t.Errorf("Minutes(1000) has %d entries, want %d", n, usage.Window)
	}
	for i := range 25 {
		r.Record(usage.Event{Failed: true, Error: string(rune('a' + i))})
	}
	errs := r.RecentErrors(100)
	if len(errs) != 20 || errs[0].Error != "y" || errs[19].Error != "f" {
		t.Errorf("RecentErrors: %d, first %q, last %q", len(errs), errs[0].Error, errs[len(errs)-1].Error)
	}
}

// Run writes what is pending when its context ends.
func TestRunFlushesOnStop(t *testing.T) {
	st := openStore(t)
	r := usage.New(st, usage.Config{FlushInterval: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	r.Record(usage.Event{CredentialID: "c", TokenID: "t", Model: "m", InputTokens: 2})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got, err := st.ListUsage(t.Context(), "0001-01-01", "9999-12-31")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].InputTokens != 2 {
		t.Errorf("rows after Run stopped = %+v", got)
	}
}

// Rows that could not be written because the store was away are kept and
// written once it is back, added to what came meanwhile, counted once.
func TestFlushKeepsRowsWhileStoreIsAway(t *testing.T) {
	srv := redistest.Start(t)
	rs, err := redisstore.Open(t.Context(), redisstore.Options{URL: srv.URL(), OpTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	r := usage.New(rs, usage.Config{})
	r.Record(usage.Event{CredentialID: "c", TokenID: "t", Model: "m", OutputTokens: 4})
	srv.Stop(t)
	err = r.Flush(t.Context())
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Flush with Redis down: %v, want ErrUnavailable", err)
	}
	r.Record(usage.Event{CredentialID: "c", TokenID: "t", Model: "m", OutputTokens: 1})
	srv.Restart(t)
	deadline := time.Now().Add(10 * time.Second)
	for r.Flush(t.Context()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("Flush never succeeded after Redis came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, err := rs.ListUsage(t.Context(), "0001-01-01", "9999-12-31")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Requests != 2 || got[0].OutputTokens != 5 {
		t.Errorf("rows after the outage = %+v, want one row of 2 requests and 5 output tokens", got)
	}
}

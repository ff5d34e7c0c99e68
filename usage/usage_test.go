package usage_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/internal/logtest"
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
func (c *clock) set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	return openStoreAt(t, filepath.Join(t.TempDir(), "usage.db"))
}

func openStoreAt(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), path)
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

// A failed attempt counts in its minute's AttemptFailures and shows among
// the recent errors, marked; it is not a request and writes no usage row.
func TestRecordAttemptFailure(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 30, 0, time.UTC)}
	st := openStore(t)
	r := usage.New(st, usage.Config{Now: c.now})
	r.RecordAttemptFailure("cred_a", "m", "rate_limited (HTTP 429): slow down")
	r.Record(usage.Event{CredentialID: "cred_b", Model: "m"})
	m := r.Minutes(1)[0]
	if m.Requests != 1 || m.Failures != 0 || m.AttemptFailures != 1 {
		t.Errorf("minute = %+v, want 1 request, 0 failures, 1 failed attempt", m)
	}
	errs := r.RecentErrors(5)
	want := usage.ErrorEvent{At: c.now(), CredentialID: "cred_a", Model: "m", Error: "rate_limited (HTTP 429): slow down", Attempt: true}
	if len(errs) != 1 || errs[0] != want {
		t.Errorf("recent errors = %+v, want [%+v]", errs, want)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	rows, err := st.ListUsage(t.Context(), "2026-11-25", "2026-11-25")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].CredentialID != "cred_b" || rows[0].Requests != 1 || rows[0].Failures != 0 {
		t.Errorf("usage rows = %+v, want only cred_b's request", rows)
	}
}

// Failed attempts and failed requests keep their own last 20: a storm of
// attempts failing over does not push out what clients were told, and
// the two are listed together, newest first.
func TestRecentErrorsKeepBothKinds(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	r := usage.New(nil, usage.Config{Now: c.now})
	r.Record(usage.Event{Model: "m", Failed: true, Error: "request 1"})
	c.add(time.Second)
	for i := range 30 {
		r.RecordAttemptFailure("c1", "m", "attempt "+string(rune('a'+i)))
		c.add(time.Millisecond)
	}
	r.Record(usage.Event{Model: "m", Failed: true, Error: "request 2"})
	errs := r.RecentErrors(100)
	if len(errs) != 22 {
		t.Fatalf("%d recent errors, want 22 (2 requests, the last 20 attempts)", len(errs))
	}
	if errs[0].Error != "request 2" || errs[0].Attempt || errs[21].Error != "request 1" || errs[21].Attempt {
		t.Errorf("first, last = %+v, %+v; want request 2 first and request 1 last", errs[0], errs[21])
	}
	for i, e := range errs[1:21] {
		if want := "attempt " + string(rune('a'+29-i)); !e.Attempt || e.Error != want {
			t.Errorf("entry %d = %+v, want %q", i+1, e, want)
		}
	}
	for i := 1; i < len(errs); i++ {
		if errs[i].At.After(errs[i-1].At) {
			t.Errorf("entry %d (%v) is newer than entry %d (%v)", i, errs[i].At, i-1, errs[i-1].At)
		}
	}
	if got := r.RecentErrors(3); len(got) != 3 || got[0].Error != "request 2" || got[2].Error != "attempt ¼"[:0]+"attempt "+string(rune('a'+28)) {
		t.Errorf("RecentErrors(3) = %+v", got)
	}
}

// Record is on every request's path: counting a request whose row is
// already pending allocates nothing (the day is formatted once a day).
func TestRecordAllocations(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	r := usage.New(openStore(t), usage.Config{Now: c.now})
	ev := usage.Event{CredentialID: "c1", TokenID: "t1", Model: "m", InputTokens: 3, OutputTokens: 2}
	r.Record(ev)
	if n := testing.AllocsPerRun(100, func() { r.Record(ev) }); n != 0 {
		t.Errorf("Record allocates %v times per call, want 0", n)
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

// swapSink writes to the real store it holds at the time of the write.
type swapSink struct{ cur atomic.Pointer[sqlite.Store] }

func (s *swapSink) AddUsage(ctx context.Context, rows []store.Usage) error {
	return s.cur.Load().AddUsage(ctx, rows)
}

// A write that fails with an error other than store.ErrUnavailable may have
// been applied (or never will be): Flush returns the error and drops the
// rows rather than keeping them for the next flush, so that the next flush
// writes only what came after them: nothing counted twice, no batch failing
// forever.
func TestFlushDropsRowsOnOtherErrors(t *testing.T) {
	day := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		// fail makes the next write fail and returns what undoes that.
		fail    func(t *testing.T, sink *swapSink, path string, c *clock) (heal func())
		wantErr string
	}{
		{
			name: "store closed",
			fail: func(t *testing.T, sink *swapSink, path string, _ *clock) func() {
				sink.cur.Load().Close()
				return func() { sink.cur.Store(openStoreAt(t, path)) }
			},
			wantErr: "database is closed",
		},
		{
			name: "batch refused",
			fail: func(t *testing.T, _ *swapSink, _ string, c *clock) func() {
				// A day the store refuses (it takes only YYYY-MM-DD): the
				// whole batch is refused, now and at every retry.
				c.set(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC))
				return func() { c.set(day) }
			},
			wantErr: `invalid day "10000-01-01"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "usage.db")
			sink := &swapSink{}
			sink.cur.Store(openStoreAt(t, path))
			c := &clock{t: day}
			r := usage.New(sink, usage.Config{Now: c.now})
			ev := usage.Event{CredentialID: "c", TokenID: "t", Model: "m"}

			heal := tt.fail(t, sink, path, c)
			lost := ev
			lost.InputTokens = 100
			r.Record(lost)
			err := r.Flush(t.Context())
			if err == nil || errors.Is(err, store.ErrUnavailable) ||
				!strings.Contains(err.Error(), "usage: write 1 rows") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Flush = %v, want an error other than ErrUnavailable, for 1 row, with %q", err, tt.wantErr)
			}

			heal()
			later := ev
			later.InputTokens = 1
			r.Record(later)
			if err := r.Flush(t.Context()); err != nil {
				t.Fatalf("Flush after the store is back: %v (the dropped row was kept?)", err)
			}
			got, err := sink.cur.Load().ListUsage(t.Context(), "0001-01-01", "9999-12-31")
			if err != nil {
				t.Fatal(err)
			}
			want := store.Usage{Day: "2026-11-25", CredentialID: "c", TokenID: "t", Model: "m", Requests: 1, InputTokens: 1}
			if len(got) != 1 || got[0] != want {
				t.Errorf("rows = %+v, want only the later request: %+v", got, want)
			}
		})
	}
}

// Run logs a flush whose rows are dropped, once: the rows are not retried
// at the next ticks, and what comes after them is written.
func TestRunLogsDroppedRows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := openStore(t)
		c := &clock{t: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)} // a day the store refuses
		var logs logtest.Buffer
		const every = time.Second
		r := usage.New(st, usage.Config{FlushInterval: every, Now: c.now, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()

		r.Record(usage.Event{CredentialID: "c", TokenID: "t", Model: "m", InputTokens: 100})
		time.Sleep(every)
		synctest.Wait()
		warnings := func() []map[string]any {
			var w []map[string]any
			for _, rec := range logs.Records(t) {
				if rec["level"] == "WARN" && strings.HasPrefix(rec["msg"].(string), "usage: flush failed") {
					w = append(w, rec)
				}
			}
			return w
		}
		w := warnings()
		if len(w) != 1 {
			t.Fatalf("after the refused flush: %d warnings %v, want 1", len(w), w)
		}
		if m, _ := w[0]["msg"].(string); !strings.Contains(m, "dropped, not retried") {
			t.Errorf("the warning = %q, want it to say the rows were dropped", m)
		}
		if e, _ := w[0]["err"].(string); !strings.Contains(e, `usage: write 1 rows`) || !strings.Contains(e, `invalid day "10000-01-01"`) {
			t.Errorf("the warning's err = %q, want the rows and the store's reason", e)
		}

		c.set(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
		r.Record(usage.Event{CredentialID: "c", TokenID: "t", Model: "m", InputTokens: 1})
		time.Sleep(5 * every)
		synctest.Wait()
		if w := warnings(); len(w) != 1 {
			t.Errorf("after 5 more flushes: %d warnings, want still 1 (the dropped row retried?)", len(w))
		}
		got, err := st.ListUsage(t.Context(), "0001-01-01", "9999-12-31")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Requests != 1 || got[0].InputTokens != 1 {
			t.Errorf("rows = %+v, want only the later request", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// When a chunk fails in a way that may have applied it, only that chunk is
// dropped: the chunks after it were never sent and are written by the next
// flush.
func TestFlushDropsOnlyTheFailedChunk(t *testing.T) {
	st := openStore(t)
	good := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	c := &clock{t: good}
	r := usage.New(st, usage.Config{Now: c.now})
	// 200 rows of a good day, and one the store refuses, which sorts first
	// ("10000-01-01" < "2026-11-25"): the first chunk of 200 holds it and
	// 199 good rows, the second chunk the last good row.
	for i := range 200 {
		r.Record(usage.Event{CredentialID: "c", TokenID: "t", Model: fmt.Sprintf("m%03d", i), InputTokens: 1})
	}
	c.set(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC))
	r.Record(usage.Event{CredentialID: "c", TokenID: "t", Model: "bad", InputTokens: 1})
	c.set(good)

	err := r.Flush(t.Context())
	if !errors.Is(err, usage.ErrRowsDropped) || errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "usage: write 200 rows") {
		t.Fatalf("Flush = %v, want the first chunk of 200 rows dropped", err)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatalf("second Flush: %v", err)
	}
	got, err := st.ListUsage(t.Context(), "0001-01-01", "9999-12-31")
	if err != nil {
		t.Fatal(err)
	}
	want := store.Usage{Day: "2026-11-25", CredentialID: "c", TokenID: "t", Model: "m199", Requests: 1, InputTokens: 1}
	if len(got) != 1 || got[0] != want {
		t.Errorf("rows after the failed chunk = %+v, want only the row of the second chunk %+v", got, want)
	}
}

// A flush whose context is already over sends nothing and keeps every row
// for the next one (nothing was applied, so nothing is dropped).
func TestFlushCanceledKeepsRows(t *testing.T) {
	st := openStore(t)
	c := &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	r := usage.New(st, usage.Config{Now: c.now})
	r.Record(usage.Event{CredentialID: "c", TokenID: "t", Model: "m", InputTokens: 3})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := r.Flush(ctx)
	if !errors.Is(err, context.Canceled) || errors.Is(err, usage.ErrRowsDropped) {
		t.Fatalf("Flush with a canceled context = %v, want context.Canceled and no rows dropped", err)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, err := st.ListUsage(t.Context(), "0001-01-01", "9999-12-31")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].InputTokens != 3 {
		t.Errorf("rows = %+v, want the row kept and written by the next flush", got)
	}
}

package redis

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/internal/redistest"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// mustMarker calls s.Marker and fails the test on an error.
func mustMarker(t *testing.T, s *Store, what string) *LossRecord {
	t.Helper()
	rec, err := s.Marker(t.Context())
	if err != nil {
		t.Fatalf("%s: Marker: %v", what, err)
	}
	return rec
}

// TestMarkerRecordsLoss: a brand-new deployment is no loss; a Redis that
// lost its data is, for the processes that saw it before and, through the
// record, for every process started afterwards, until ClearLoss.
func TestMarkerRecordsLoss(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	raw := rawClient(t, srv)
	ctx := t.Context()
	a := openStore(t, srv, Options{})
	b := openStore(t, srv, Options{})

	// A first start: nothing to compare with, nothing recorded.
	for i, s := range []*Store{a, b, a, b} {
		if rec := mustMarker(t, s, "first start"); rec != nil {
			t.Fatalf("call %d on an empty, new Redis: %v, want no loss", i+1, rec)
		}
	}
	if keys := allKeys(t, raw); !slices.Equal(keys, []string{DefaultPrefix + "marker"}) {
		t.Errorf("keys after the first calls: %v, want only the marker", keys)
	}

	// Redis restarts empty.
	srv.Restart(t)
	eventually(t, 5*time.Second, "a reconnects", func() bool { return a.Ping(ctx) == nil })
	before := time.Now()
	rec := mustMarker(t, a, "a after the restart")
	if rec == nil {
		t.Fatal("a after the restart: no loss reported")
	}
	if rec.By != hostname() || rec.Reason != lossReason || rec.At.Before(before.Add(-time.Second)) || rec.At.After(time.Now()) {
		t.Errorf("the record: %+v, want by %q, the marker's reason, noticed just now", rec, hostname())
	}
	if s := rec.String(); !strings.Contains(s, "noticed at "+rec.At.Format(time.RFC3339)) || !strings.Contains(s, hostname()) {
		t.Errorf("String() = %q", s)
	}
	if got := mustMarker(t, b, "b after the restart"); got == nil || *got != *rec {
		t.Errorf("b after the restart: %v, want a's record unchanged (%v)", got, rec)
	}
	// A process started after the loss: its first call has nothing to
	// compare with, and still reports the loss.
	c := openStore(t, srv, Options{})
	if got := mustMarker(t, c, "a process started after the loss"); got == nil || *got != *rec {
		t.Errorf("a process started after the loss: %v, want the record %v", got, rec)
	}
	if got := mustMarker(t, a, "a again"); got == nil || *got != *rec {
		t.Errorf("a again: %v, want the record kept", got)
	}
	d := openStore(t, srv, Options{})
	if got, err := d.Loss(ctx); err != nil || got == nil || *got != *rec {
		t.Errorf("Loss() = %v, %v; want the record", got, err)
	}

	// Restored: cleared for everyone.
	cleared, err := d.ClearLoss(ctx)
	if err != nil || cleared == nil || *cleared != *rec {
		t.Fatalf("ClearLoss() = %v, %v; want the record it removed", cleared, err)
	}
	for _, s := range []*Store{a, b, c, a} {
		if got := mustMarker(t, s, "after ClearLoss"); got != nil {
			t.Errorf("after ClearLoss: %v, want no loss", got)
		}
	}
	if got, err := d.ClearLoss(ctx); err != nil || got != nil {
		t.Errorf("a second ClearLoss() = %v, %v; want nil, nil", got, err)
	}

	// A second loss (a flush): the first process to notice writes the
	// record and publishes a notice; the others find it. c, which started
	// after the first loss, notices this one by itself.
	w := d.Watch(ctx)
	waitNotice(t, w, time.Second, "subscription")
	if err := raw.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	rec = mustMarker(t, c, "c after FLUSHDB")
	if rec == nil {
		t.Fatal("c after FLUSHDB: no loss reported")
	}
	waitNotice(t, w, time.Second, "the record written")
	for _, s := range []*Store{b, a} {
		if got := mustMarker(t, s, "after FLUSHDB"); got == nil || *got != *rec {
			t.Errorf("after FLUSHDB: %v, want c's record %v", got, rec)
		}
	}
	noNotice(t, w, 200*time.Millisecond, "the record found, not written")
	if _, err := a.ClearLoss(ctx); err != nil {
		t.Fatal(err)
	}
	waitNotice(t, w, time.Second, "the record cleared")
	if _, err := a.ClearLoss(ctx); err != nil {
		t.Fatal(err)
	}
	noNotice(t, w, 200*time.Millisecond, "nothing to clear")

	// Loss only reads: it sets no marker.
	e := openStore(t, srv, Options{Prefix: newPrefix()})
	if got, err := e.Loss(ctx); err != nil || got != nil {
		t.Errorf("Loss() on an empty prefix = %v, %v", got, err)
	}
	for _, k := range allKeys(t, raw) {
		if strings.HasPrefix(k, e.Prefix()) {
			t.Errorf("Loss() wrote %s", k)
		}
	}
}

// TestLossRecordDamaged: a record with a damaged or missing field still
// means a loss; a key of the wrong type is an error (not ErrUnavailable),
// never a panic or "no loss".
func TestLossRecordDamaged(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	raw := rawClient(t, srv)
	ctx := t.Context()
	s := openStore(t, srv, Options{Prefix: newPrefix()})

	if err := raw.HSet(ctx, s.k.lost, "at", "yesterday", "by", "pod-1").Err(); err != nil {
		t.Fatal(err)
	}
	rec := mustMarker(t, s, "damaged record")
	if rec == nil || !rec.At.IsZero() || rec.By != "pod-1" || rec.Reason != "no reason recorded" {
		t.Fatalf("damaged record read as %+v", rec)
	}
	if got := rec.String(); got != "noticed at an unknown time by pod-1 (no reason recorded)" {
		t.Errorf("String() = %q", got)
	}
	if got := (&LossRecord{Reason: "r"}).String(); !strings.Contains(got, "by an unknown host") {
		t.Errorf("String() without a host = %q", got)
	}

	if err := raw.Set(ctx, s.k.lost, "a string", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"Marker":    func() error { _, err := s.Marker(ctx); return err },
		"Loss":      func() error { _, err := s.Loss(ctx); return err },
		"ClearLoss": func() error { _, err := s.ClearLoss(ctx); return err },
	} {
		err := call()
		if err == nil || errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "WRONGTYPE") {
			t.Errorf("%s with a string at the record's key: err = %v, want WRONGTYPE, not ErrUnavailable", name, err)
		}
	}
}

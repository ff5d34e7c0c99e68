package main

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/internal/logtest"
	"github.com/atlassian-proxy/atlassian-proxy/internal/redistest"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/store"
	redisstore "github.com/atlassian-proxy/atlassian-proxy/store/redis"
)

// syncedReplica is a syncer on its own connection to a real Redis, as one
// replica has: its pool, what it reported to /ready, and its log.
type syncedReplica struct {
	st      *redisstore.Store
	pool    *pool.Pool
	s       *syncer
	logs    *logtest.Buffer
	reports []bool
}

func newSyncedReplica(t *testing.T, url string, cipher *auth.Cipher) *syncedReplica {
	t.Helper()
	st, err := redisstore.Open(t.Context(), redisstore.Options{URL: url, OpTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := &syncedReplica{st: st, logs: &logtest.Buffer{}}
	logger := slog.New(slog.NewJSONHandler(r.logs, nil))
	if r.pool, err = pool.New(pool.Config{}, pool.Deps{Logger: logger}); err != nil {
		t.Fatal(err)
	}
	r.s = newSyncer(st, cipher, auth.NewTokens(st, logger), r.pool, logger)
	r.s.marker = st.Marker
	r.s.onLost = func(lost bool) { r.reports = append(r.reports, lost) }
	return r
}

// ids lists the credentials in the replica's pool.
func (r *syncedReplica) ids() []string {
	out := []string{}
	for _, c := range r.pool.Status().Credentials {
		out = append(out, c.ID)
	}
	slices.Sort(out)
	return out
}

// round runs one syncer round and fails the test on an error.
func (r *syncedReplica) round(t *testing.T, what string) {
	t.Helper()
	if err := r.s.round(t.Context()); err != nil {
		t.Fatalf("%s: round: %v", what, err)
	}
}

// The syncer and a Redis that loses its data: a brand-new deployment is
// not a loss; a replica that saw the data notices the loss, records it,
// reports it and holds its credentials while the store is empty; a replica
// started after the loss reports it from its first round; re-seeding by
// hand makes the store the reference again but the loss stays reported
// until the record is cleared; clearing it while the store is still empty
// makes the replicas take the empty store. Errors of the marker and of the
// credentials read fail the round and keep the state.
func TestSyncerStoreLost(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	raw := goredis.NewClient(&goredis.Options{Addr: srv.Addr(),
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	t.Cleanup(func() { raw.Close() })
	// The first replica connects as a user whose key permissions the test
	// narrows below, to make one read fail.
	const userPW = "syncer-user-pw"
	if err := raw.Do(ctx, "ACL", "SETUSER", "syncer", "on", ">"+userPW, "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	cipher, err := auth.NewCipher(make([]byte, auth.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	other := r0(t, srv)
	seed := func(id string) {
		t.Helper()
		sealed, err := cipher.Seal(id, []byte("atl-"+id+"-secret"))
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		if err := other.CreateCredential(ctx, store.Credential{ID: id, Email: id + "@example.com", Token: sealed,
			Enabled: true, CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	lossLogs := func(r *syncedReplica) []map[string]any {
		var out []map[string]any
		for _, rec := range r.logs.Records(t) {
			if m, _ := rec["msg"].(string); strings.HasPrefix(m, "THE STORE LOST ITS DATA") {
				out = append(out, rec)
			}
		}
		return out
	}

	// A brand-new deployment: an empty Redis, no marker, no record.
	r1 := newSyncedReplica(t, "redis://syncer:"+userPW+"@"+srv.Addr()+"/0", cipher)
	if err := r1.s.once(ctx); err != nil {
		t.Fatal(err)
	}
	if len(r1.reports) != 0 || len(lossLogs(r1)) != 0 {
		t.Fatalf("first start on an empty Redis: reports %v, log %v; want no loss", r1.reports, lossLogs(r1))
	}
	seed("a")
	r1.round(t, "after the seed")
	if got := r1.ids(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("pool after the seed: %v", got)
	}

	// An unreadable marker fails the round; the pool is kept.
	if err := raw.Set(ctx, redisstore.DefaultPrefix+"lost", "not a record", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r1.s.round(ctx); err == nil || !strings.Contains(err.Error(), "read store marker") {
		t.Errorf("round with an unreadable record: %v, want the marker's error", err)
	}
	if err := raw.Del(ctx, redisstore.DefaultPrefix+"lost").Err(); err != nil {
		t.Fatal(err)
	}
	r1.round(t, "the record readable again")
	if got := r1.ids(); !slices.Equal(got, []string{"a"}) || len(r1.reports) != 0 {
		t.Fatalf("after an unreadable marker: pool %v, reports %v", got, r1.reports)
	}

	// Redis restarts empty (the ACL user with it: set it again).
	srv.Restart(t)
	if err := raw.Do(ctx, "ACL", "SETUSER", "syncer", "on", ">"+userPW, "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "replica 1 reconnects", func() bool { return r1.s.round(ctx) == nil })
	for i := range 2 {
		r1.round(t, "the store lost")
		if got := r1.ids(); !slices.Equal(got, []string{"a"}) {
			t.Errorf("round %d with the store lost: pool %v, want a held", i+1, got)
		}
	}
	if !slices.Equal(r1.reports, []bool{true}) {
		t.Errorf("replica 1 reports %v, want the loss once", r1.reports)
	}
	if l := lossLogs(r1); len(l) != 1 || l[0]["level"] != "ERROR" || !strings.Contains(l[0]["msg"].(string), "the 1 credentials") ||
		!strings.Contains(l[0]["loss"].(string), "noticed at") {
		t.Errorf("replica 1's loss log: %v", l)
	}

	// Reading the credentials fails while holding: the round fails, the
	// pool is kept.
	if err := raw.Do(ctx, "ACL", "SETUSER", "syncer", "resetkeys", "~"+redisstore.DefaultPrefix+"[^c]*").Err(); err != nil {
		t.Fatal(err)
	}
	if err := r1.s.round(ctx); err == nil || !strings.Contains(err.Error(), "list credentials") {
		t.Errorf("round with the credentials unreadable: %v, want the list's error", err)
	}
	if err := raw.Do(ctx, "ACL", "SETUSER", "syncer", "resetkeys", "~*").Err(); err != nil {
		t.Fatal(err)
	}
	if got := r1.ids(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("after a failed read: pool %v, want a held", got)
	}

	// A replica started after the loss (a restart, a roll, the
	// autoscaler) reports it from its first round.
	r2 := newSyncedReplica(t, srv.URL(), cipher)
	if err := r2.s.once(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r2.reports, []bool{true}) || len(r2.ids()) != 0 {
		t.Errorf("a replica started after the loss: reports %v, pool %v; want the loss, nothing held", r2.reports, r2.ids())
	}
	if l := lossLogs(r2); len(l) != 1 || !strings.Contains(l[0]["msg"].(string), "holds no credentials") {
		t.Errorf("replica 2's loss log: %v", l)
	}

	// Re-seeded by hand: the store is the reference again, the loss is
	// still reported.
	seed("b")
	for _, r := range []*syncedReplica{r1, r2} {
		r.round(t, "re-seeded by hand")
		if got := r.ids(); !slices.Equal(got, []string{"b"}) || !slices.Equal(r.reports, []bool{true}) {
			t.Errorf("re-seeded by hand: pool %v, reports %v; want b, the loss still reported", got, r.reports)
		}
	}
	if n := len(r1.logs.Messages(t, "the store holds credentials again (re-seeded): reloading from it")); n != 1 {
		t.Errorf("replica 1 logged the re-seed %d times, want 1", n)
	}

	// Cleared: no loss any more.
	if rec, err := other.ClearLoss(ctx); err != nil || rec == nil {
		t.Fatalf("ClearLoss: %v, %v", rec, err)
	}
	for _, r := range []*syncedReplica{r1, r2} {
		r.round(t, "cleared")
		if !slices.Equal(r.reports, []bool{true, false}) {
			t.Errorf("after the clear: reports %v, want lost then found", r.reports)
		}
		if len(r.logs.Messages(t, "the store's data-loss record was cleared (import or operator): the store is the reference again")) != 1 {
			t.Error("the clear was not logged")
		}
	}

	// A second loss, cleared by the operator without re-seeding: the
	// replicas take the empty store.
	if err := raw.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	r1.round(t, "second loss")
	if got := r1.ids(); !slices.Equal(got, []string{"b"}) || !slices.Equal(r1.reports, []bool{true, false, true}) {
		t.Fatalf("second loss: pool %v, reports %v", got, r1.reports)
	}
	if _, err := other.ClearLoss(ctx); err != nil {
		t.Fatal(err)
	}
	r1.round(t, "cleared, empty")
	if got := r1.ids(); len(got) != 0 || !slices.Equal(r1.reports, []bool{true, false, true, false}) {
		t.Errorf("cleared without a re-seed: pool %v, reports %v; want the empty store taken", got, r1.reports)
	}
}

// r0 opens a store connection of the test's own (as the CLI has).
func r0(t *testing.T, srv *redistest.Server) *redisstore.Store {
	t.Helper()
	st, err := redisstore.Open(t.Context(), redisstore.Options{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

package main

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"path/filepath"
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

// emails lists the emails of the credentials in the replica's pool.
func (r *syncedReplica) emails() []string {
	out := []string{}
	for _, c := range r.pool.Status().Credentials {
		out = append(out, c.Email)
	}
	slices.Sort(out)
	return out
}

// knows tells whether the replica's token cache verifies the API token.
func (r *syncedReplica) knows(token string) bool {
	_, err := r.s.tokens.Verify(token)
	return err == nil
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
// reports it and holds its credentials and tokens until the record is
// cleared, whatever the store holds meanwhile (a `credential add` by hand
// must not drop the tokens it holds); a replica started after the loss
// reports it from its first round and follows the store; the round after
// `import --clear-loss`, or after an import, reloads from the store (a
// failed reload keeps the state and is retried); clearing the record while
// the store is still empty makes the replicas take the empty store. An
// unreadable marker fails the round and keeps the state. The CLI is the
// real binary.
func TestSyncerStoreLost(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	raw := goredis.NewClient(&goredis.Options{Addr: srv.Addr(),
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	t.Cleanup(func() { raw.Close() })
	key := randomKey(t)
	rawKey, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		t.Fatal(err)
	}
	cipher, err := auth.NewCipher(rawKey)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"REDIS_URL": srv.URL(), "SECRET_KEY": key}
	run := func(stdin string, args ...string) string {
		t.Helper()
		out, errOut, code := cli(t, env, stdin, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", strings.Join(args[:min(2, len(args))], " "), code, errOut)
		}
		return errOut + strings.TrimSpace(out)
	}
	addCredential := func(name string) {
		t.Helper()
		run("atl-"+name+"-secret\n", "credential", "add", "--email", name+"@example.com", "--token", "-")
	}
	createToken := func(name string) string {
		t.Helper()
		out, errOut, code := cli(t, env, "", "token", "create", "--name", name)
		if code != 0 {
			t.Fatalf("token create: exit %d: %s", code, errOut)
		}
		return strings.TrimSpace(out)
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
	const clearedLog = "the store's data-loss record was cleared (import or operator): the store is the reference again"
	// state checks a replica's pool, the tokens it must and must not know,
	// and what it reported.
	state := func(r *syncedReplica, what string, emails []string, known, unknown []string, reports ...bool) {
		t.Helper()
		if got := r.emails(); !slices.Equal(got, emails) {
			t.Errorf("%s: pool %v, want %v", what, got, emails)
		}
		for i, tok := range known {
			if !r.knows(tok) {
				t.Errorf("%s: known token %d refused", what, i)
			}
		}
		for i, tok := range unknown {
			if r.knows(tok) {
				t.Errorf("%s: token %d still verifies, want it gone", what, i)
			}
		}
		if !slices.Equal(r.reports, reports) {
			t.Errorf("%s: reports %v, want %v", what, r.reports, reports)
		}
	}

	// A brand-new deployment: an empty Redis, no marker, no record.
	r1 := newSyncedReplica(t, srv.URL(), cipher)
	if err := r1.s.once(ctx); err != nil {
		t.Fatal(err)
	}
	if len(r1.reports) != 0 || len(lossLogs(r1)) != 0 {
		t.Fatalf("first start on an empty Redis: reports %v, log %v; want no loss", r1.reports, lossLogs(r1))
	}
	addCredential("a")
	t1 := createToken("t1")
	r1.round(t, "after the seed")
	state(r1, "after the seed", []string{"a@example.com"}, []string{t1}, nil)
	backup := filepath.Join(t.TempDir(), "backup.json")
	run("", "export", backup)

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
	state(r1, "after an unreadable marker", []string{"a@example.com"}, []string{t1}, nil)

	// Redis restarts empty: replica 1 holds its credential and token.
	srv.Restart(t)
	eventually(t, 5*time.Second, "replica 1 reconnects", func() bool { return r1.s.round(ctx) == nil })
	for i := range 2 {
		r1.round(t, "the store lost")
		state(r1, fmt.Sprintf("round %d with the store lost", i+1), []string{"a@example.com"}, []string{t1}, nil, true)
	}
	if l := lossLogs(r1); len(l) != 1 || l[0]["level"] != "ERROR" ||
		!strings.Contains(l[0]["msg"].(string), "the 1 credentials and the 1 tokens held in memory") ||
		!strings.Contains(l[0]["loss"].(string), "noticed at") {
		t.Errorf("replica 1's loss log: %v", l)
	}

	// A replica started after the loss (a restart, a roll, the
	// autoscaler) reports it from its first round and holds nothing. It
	// connects as a user whose key permissions the test narrows below.
	const userPW = "syncer-user-pw"
	if err := raw.Do(ctx, "ACL", "SETUSER", "syncer", "on", ">"+userPW, "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	r2 := newSyncedReplica(t, "redis://syncer:"+userPW+"@"+srv.Addr()+"/0", cipher)
	if err := r2.s.once(ctx); err != nil {
		t.Fatal(err)
	}
	state(r2, "a replica started after the loss", []string{}, nil, []string{t1}, true)
	if l := lossLogs(r2); len(l) != 1 || !strings.Contains(l[0]["msg"].(string), "holds no credentials or tokens") {
		t.Errorf("replica 2's loss log: %v", l)
	}

	// Re-seeded by hand, a credential first: replica 1 keeps what it holds
	// (its token above all), replica 2 follows the store; the loss stays
	// reported.
	addCredential("b")
	for i := range 2 {
		r1.round(t, "credential added by hand")
		r2.round(t, "credential added by hand")
		what := fmt.Sprintf("round %d after a credential added by hand", i+1)
		state(r1, what+", replica 1", []string{"a@example.com"}, []string{t1}, nil, true)
		state(r2, what+", replica 2", []string{"b@example.com"}, nil, nil, true)
	}
	t2 := createToken("t2")
	r1.round(t, "token created by hand")
	r2.round(t, "token created by hand")
	state(r1, "a token created by hand, replica 1", []string{"a@example.com"}, []string{t1}, []string{t2}, true)
	state(r2, "a token created by hand, replica 2", []string{"b@example.com"}, []string{t2}, nil, true)
	if n := len(r1.logs.Messages(t, "the store was written to during its data loss (re-seeded by hand?); this replica keeps "+
		"serving what it holds in memory until the loss record is cleared: run `atlassian-proxy import "+
		"--clear-loss` once the store is complete (an import clears it by itself)")); n != 1 {
		t.Errorf("replica 1 logged the writes during the hold %d times, want 1", n)
	}

	// `import --clear-loss`: the next round reloads from the store.
	if out := run("", "import", "--clear-loss"); !strings.Contains(out, "cleared the record of the store's data loss") {
		t.Errorf("import --clear-loss: %s", out)
	}
	r1.round(t, "cleared")
	r2.round(t, "cleared")
	state(r1, "the round after import --clear-loss, replica 1", []string{"b@example.com"}, []string{t2}, []string{t1}, true, false)
	state(r2, "the round after import --clear-loss, replica 2", []string{"b@example.com"}, []string{t2}, []string{t1}, true, false)
	for _, r := range []*syncedReplica{r1, r2} {
		if len(r.logs.Messages(t, clearedLog)) != 1 {
			t.Error("the clear was not logged")
		}
	}

	// A second loss (both replicas hold now, replica 2 too), a credential
	// added by hand, then an import: the round after it reloads. Replica 2
	// cannot read the tokens then: its round fails, keeps its state, and
	// the next one reloads.
	if err := raw.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	r1.round(t, "second loss")
	r2.round(t, "second loss")
	addCredential("c")
	r1.round(t, "second loss, credential added by hand")
	r2.round(t, "second loss, credential added by hand")
	state(r1, "second loss, replica 1", []string{"b@example.com"}, []string{t2}, []string{t1}, true, false, true)
	state(r2, "second loss, replica 2", []string{"b@example.com"}, []string{t2}, []string{t1}, true, false, true)
	if err := raw.Do(ctx, "ACL", "SETUSER", "syncer", "resetkeys", "~"+redisstore.DefaultPrefix+"[^t]*").Err(); err != nil {
		t.Fatal(err)
	}
	if out := run("", "import", backup); !strings.Contains(out, "cleared the record of the store's data loss") {
		t.Errorf("import: %s", out)
	}
	r1.round(t, "imported")
	state(r1, "the round after the import, replica 1", []string{"a@example.com", "c@example.com"}, []string{t1}, []string{t2},
		true, false, true, false)
	if err := r2.s.round(ctx); err == nil || !strings.Contains(err.Error(), "reload tokens") {
		t.Errorf("round with the tokens unreadable: %v, want the tokens' error", err)
	}
	state(r2, "a failed reload after the import", []string{"b@example.com"}, []string{t2}, []string{t1}, true, false, true, false)
	if err := raw.Do(ctx, "ACL", "SETUSER", "syncer", "resetkeys", "~*").Err(); err != nil {
		t.Fatal(err)
	}
	r2.round(t, "the tokens readable again")
	state(r2, "the round after the failed one", []string{"a@example.com", "c@example.com"}, []string{t1}, []string{t2},
		true, false, true, false)

	// A third loss, cleared by the operator without re-seeding: the
	// replicas take the empty store.
	if err := raw.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	r1.round(t, "third loss")
	state(r1, "third loss", []string{"a@example.com", "c@example.com"}, []string{t1}, nil, true, false, true, false, true)
	run("", "import", "--clear-loss")
	r1.round(t, "cleared, empty")
	state(r1, "cleared without a re-seed", []string{}, nil, []string{t1}, true, false, true, false, true, false)
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

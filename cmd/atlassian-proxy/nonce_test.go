package main

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/atlassian-proxy/atlassian-proxy/internal/redistest"
)

// formNonceInput is the one-time nonce field of the API tokens page's
// create form.
var formNonceInput = regexp.MustCompile(`name="form_nonce" value="([^"]+)"`)

// tokenFormNonce GETs the API tokens page from a.base and returns its create
// form's nonce.
func tokenFormNonce(t *testing.T, a *admin) string {
	t.Helper()
	status, body := a.do("GET", "/admin/tokens", nil)
	m := formNonceInput.FindSubmatch(body)
	if status != http.StatusOK || m == nil {
		t.Fatalf("GET /admin/tokens on %s: %d, no form nonce", a.base, status)
	}
	return string(m[1])
}

// postTokenForm sends the create form (name, nonce and the session's CSRF
// token) to base, as a browser does, and returns the status and the page.
func postTokenForm(a *admin, base, name, nonce string) (int, string, error) {
	vals := url.Values{"name": {name}, "form_nonce": {nonce}, "csrf_token": {a.csrf}}
	req, err := http.NewRequest("POST", base+"/admin/tokens", strings.NewReader(vals.Encode()))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestTokenFormNonceSharedByReplicas: two app instances on one real Redis.
// The token form's nonce is spent in Redis itself (no per-process
// fallback): a form sent to one instance is refused by the other, also
// when both get it at once; while Redis refuses writes (a failover's
// read-only replica) the form answers 503 from the nonce store and makes
// nothing, and once Redis is back the same form makes its one token; with
// Redis stopped the form answers 503 and shows no token.
func TestTokenFormNonceSharedByReplicas(t *testing.T) {
	rs := redistest.Start(t)
	env := map[string]string{"REDIS_URL": rs.URL(), "SECRET_KEY": randomKey(t)}
	s1 := startStack(t, nil, env)
	s2 := startStack(t, nil, env)
	if s1.app.redis == nil || s2.app.redis == nil {
		t.Fatal("the stacks do not run on Redis")
	}
	ctx := context.Background()
	tokens := func() int {
		t.Helper()
		ts, err := s1.app.store.ListTokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(ts)
	}
	adm, _ := login(t, s1.proxyURL, "in-process-stack-password") // the session is valid on both
	send := func(base, name, nonce string) (int, string) {
		t.Helper()
		status, body, err := postTokenForm(adm, base, name, nonce)
		if err != nil {
			t.Fatalf("POST /admin/tokens on %s: %v", base, err)
		}
		return status, body
	}
	want := tokens() // each stack made its own "stack" token

	// Sent to instance 1, then again to instance 2: one token.
	nonce := tokenFormNonce(t, adm)
	if status, body := send(s1.proxyURL, "first", nonce); status != http.StatusCreated || !strings.Contains(body, "New API token") {
		t.Fatalf("first sending on instance 1: %d, want 201 with the new token", status)
	}
	want++
	status, body := send(s2.proxyURL, "first", nonce)
	if status != http.StatusConflict || !strings.Contains(body, "This form was sent already") || strings.Contains(body, "New API token") {
		t.Errorf("the same form on instance 2: %d, want 409 \"This form was sent already\" and no token", status)
	}
	if n := tokens(); n != want {
		t.Fatalf("%d tokens after the form was sent to both instances, want %d", n, want)
	}

	// The same form sent to both at once: one is made, the others refused.
	nonce = tokenFormNonce(t, adm)
	var created, refused, other atomic.Int64
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			status, _, err := postTokenForm(adm, []string{s1.proxyURL, s2.proxyURL}[i%2], "race", nonce)
			switch {
			case err != nil:
				t.Error(err)
			case status == http.StatusCreated:
				created.Add(1)
			case status == http.StatusConflict:
				refused.Add(1)
			default:
				other.Add(1)
			}
		})
	}
	wg.Wait()
	want++
	if created.Load() != 1 || refused.Load() != 5 || other.Load() != 0 {
		t.Errorf("6 concurrent sendings over 2 instances: %d created, %d refused, %d other; want 1, 5, 0",
			created.Load(), refused.Load(), other.Load())
	}
	if n := tokens(); n != want {
		t.Fatalf("%d tokens after the concurrent sendings, want %d", n, want)
	}

	// The used nonces are in Redis under the nonce store's own name.
	ctl := goredis.NewClient(&goredis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { ctl.Close() })
	if keys, err := ctl.Keys(ctx, "*rl:"+formNonceLimiter+":token-create:*").Result(); err != nil || len(keys) != 2 {
		t.Errorf("nonce keys in Redis: %d (%v), want 2", len(keys), err)
	}
	if keys, err := ctl.Keys(ctx, "*login:*nonce*").Result(); err != nil || len(keys) != 0 {
		t.Errorf("nonce keys under login: %q (%v), want none", keys, err)
	}

	// Redis answers reads but refuses writes, as a replica does during a
	// failover: the session still works, the nonce store cannot answer, so
	// the form fails closed (the nonce store's 503, not the token store's)
	// and makes nothing. Once Redis takes writes again, the same form makes
	// its token (the nonce was not spent), and a resend is refused.
	nonce = tokenFormNonce(t, adm)
	if err := ctl.ReplicaOf(ctx, "127.0.0.1", strconv.Itoa(freePort(t))).Err(); err != nil {
		t.Fatalf("REPLICAOF: %v", err)
	}
	for _, base := range []string{s2.proxyURL, s1.proxyURL} {
		status, body := send(base, "after-failover", nonce)
		if status != http.StatusServiceUnavailable || !strings.Contains(body, "Creating tokens is unavailable right now") {
			t.Errorf("form while Redis refuses writes: %d, want 503 \"Creating tokens is unavailable right now\"", status)
		}
	}
	if n := tokens(); n != want {
		t.Fatalf("%d tokens after sendings while Redis refused writes, want %d", n, want)
	}
	if err := ctl.ReplicaOf(ctx, "NO", "ONE").Err(); err != nil {
		t.Fatalf("REPLICAOF NO ONE: %v", err)
	}
	if status, _ := send(s1.proxyURL, "after-failover", nonce); status != http.StatusCreated {
		t.Errorf("the form once Redis takes writes again: %d, want 201", status)
	}
	want++
	if status, _ := send(s2.proxyURL, "after-failover", nonce); status != http.StatusConflict {
		t.Errorf("the form resent to instance 2 after the recovery: %d, want 409", status)
	}
	if n := tokens(); n != want {
		t.Fatalf("%d tokens after the recovery, want %d", n, want)
	}

	// Redis stopped: the form answers 503 and shows no token (here the
	// session lookup fails first; the part above is the nonce store's own).
	nonce = tokenFormNonce(t, adm)
	rs.Stop(t)
	for _, base := range []string{s1.proxyURL, s2.proxyURL} {
		status, body := send(base, "redis-down", nonce)
		if status != http.StatusServiceUnavailable || strings.Contains(body, "New API token") || strings.Contains(body, "sk-ap-") {
			t.Errorf("form with Redis stopped on %s: %d, want 503 and no token", base, status)
		}
	}
}

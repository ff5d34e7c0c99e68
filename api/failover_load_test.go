package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/dispatch"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/schematest"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// The load and capacity tests drive many concurrent clients through the
// proxy and check that every request succeeds (waiting in the queue when
// every credential is at its limit), that the fake gateway never saw a
// credential above its concurrency limit, and how the queue and an empty
// pool fail.

// loadClient is an HTTP client for many concurrent requests to the proxy.
func loadClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{MaxIdleConns: 2048, MaxIdleConnsPerHost: 2048, IdleConnTimeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// loadResult is one request of a load test.
type loadResult struct {
	stream bool
	status int
	body   []byte
	err    error
}

// ok reports whether r is a complete, successful answer, and why not.
func (r loadResult) ok() (bool, string) {
	switch {
	case r.err != nil:
		return false, r.err.Error()
	case r.status != http.StatusOK:
		return false, fmt.Sprintf("status %d: %s", r.status, r.body)
	case r.stream && (!strings.HasSuffix(string(r.body), "data: [DONE]\n\n") || strings.Contains(string(r.body), `data: {"error"`)):
		return false, fmt.Sprintf("incomplete stream: %s", r.body)
	case !r.stream && !strings.Contains(string(r.body), fake.DefaultText):
		return false, fmt.Sprintf("no answer in %s", r.body)
	}
	return true, ""
}

// post sends one chat request; it is safe to call from many goroutines.
func (e *env) post(ctx context.Context, hc *http.Client, stream bool) loadResult {
	body := chatBody("")
	if stream {
		body = chatBody(`"stream":true`)
	}
	r := loadResult{stream: stream}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Authorization", "Bearer "+e.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close()
	r.status = resp.StatusCode
	r.body, r.err = io.ReadAll(resp.Body)
	return r
}

// checkResults asserts that every result is a complete answer, and checks
// a sample of the bodies against OpenAI's schemas.
func checkResults(t *testing.T, rs []loadResult) {
	t.Helper()
	bad := 0
	for _, r := range rs {
		if ok, why := r.ok(); !ok {
			if bad < 5 {
				t.Errorf("a request failed: %s", why)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d requests failed", bad, len(rs))
	}
	for i := 0; i < len(rs); i += max(1, len(rs)/20) {
		if rs[i].stream {
			checkCompleteStream(t, &http.Response{StatusCode: rs[i].status}, rs[i].body)
		} else {
			schematest.Validate(t, schematest.ChatCompletion, rs[i].body)
		}
	}
}

// specOf is the pool's view of a fake credential.
func specOf(c fake.Credential, enabled bool, limit int) pool.Spec {
	return pool.Spec{Credential: pool.Credential{ID: c.ID, Email: c.Email, Token: c.Token}, Enabled: enabled, MaxConcurrency: limit}
}

// checkLimits asserts that the fake never saw a credential above its limit.
func checkLimits(t *testing.T, e *env, limits map[string]int) {
	t.Helper()
	peaks := e.gw.MaxInFlight()
	for id, limit := range limits {
		if got := peaks[id]; got > limit {
			t.Errorf("%s: the upstream saw %d concurrent requests, want at most its limit %d", id, got, limit)
		}
	}
}

// checkIdle asserts that the pool has nothing in flight and no failure.
func checkIdle(t *testing.T, e *env) {
	t.Helper()
	eventually(t, 2*time.Second, "every lease is done", func() bool { return e.pool.Status().Totals.InFlight == 0 })
	for _, c := range e.pool.Status().Credentials {
		if c.Failures != 0 || c.LastError != "" {
			t.Errorf("%s: %d failures (%q), want none", c.ID, c.Failures, c.LastError)
		}
	}
}

// TestConcurrencyLimitsUnderLoad: 1,000 concurrent requests over 20
// credentials with a limit of 4 (one with its own limit of 2) all succeed,
// waiting in the queue, and no credential ever has more requests upstream
// than its limit.
func TestConcurrencyLimitsUnderLoad(t *testing.T) {
	const n, nCreds, custom = 1000, 20, "c07"
	var creds []fake.Credential
	for i := range nCreds {
		creds = append(creds, testCred(fmt.Sprintf("c%02d", i+1), fake.Behavior{}))
	}
	e := newEnv(t, envOptions{creds: creds, maxConc: 4, fakeOpts: fake.Options{Latency: 200 * time.Millisecond, KeepRequests: 100}})
	limits := map[string]int{}
	var specs []pool.Spec
	for _, c := range creds {
		limits[c.ID] = 4
		if c.ID == custom {
			limits[c.ID] = 2
		}
		specs = append(specs, specOf(c, true, limits[c.ID]))
	}
	e.pool.Sync(specs, nil)
	// Admissions asked after Sync see the new limit (the change is ahead of
	// them in the actor's mailbox); Status shows it once the actor applied it.
	eventually(t, time.Second, custom+"'s limit is 2", func() bool { return e.credStatus(custom).Limit == 2 })

	base := e.pool.Status().Totals.Requests // the env's start-up probe counts as one
	hc := loadClient(t)
	rs := make([]loadResult, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			rs[i] = e.post(t.Context(), hc, i%4 == 0)
		})
	}
	close(start)
	wg.Wait()

	checkResults(t, rs)
	checkLimits(t, e, limits)
	total, reached := 0, 0
	peaks := e.gw.MaxInFlight()
	for id, limit := range limits {
		st := e.gw.Stats(id)
		total += st.Requests
		if st.Requests == 0 {
			t.Errorf("%s served nothing", id)
		}
		if peaks[id] == limit {
			reached++
		}
	}
	if total != n {
		t.Errorf("the upstream answered %d chat requests, want %d: one each, no retry", total, n)
	}
	t.Logf("peak upstream concurrency per credential: %v", peaks)
	if reached < nCreds/2 {
		t.Errorf("only %d of %d credentials ever reached their limit: the load did not test the limits (peaks %v)", reached, nCreds, peaks)
	}
	checkIdle(t, e)
	if tot := e.pool.Status().Totals; tot.Requests-base != n || tot.Ready != nCreds {
		t.Errorf("totals = %+v, want %d more requests over %d ready credentials", tot, n, nCreds)
	}
}

// TestBurstQueuesOverTwoCredentials: a burst of 40 requests over 2
// credentials with limit 4 all succeed.
func TestBurstQueuesOverTwoCredentials(t *testing.T) {
	const n, latency = 40, 50 * time.Millisecond
	e := newEnv(t, envOptions{
		creds:    []fake.Credential{testCred("c1", fake.Behavior{}), testCred("c2", fake.Behavior{})},
		maxConc:  4,
		fakeOpts: fake.Options{Latency: latency},
	})
	hc := loadClient(t)
	rs := make([]loadResult, n)
	var wg sync.WaitGroup
	began := time.Now()
	for i := range n {
		wg.Go(func() { rs[i] = e.post(t.Context(), hc, i%2 == 0) })
	}
	wg.Wait()
	took := time.Since(began)
	checkResults(t, rs)
	checkLimits(t, e, map[string]int{"c1": 4, "c2": 4})
	peaks := e.gw.MaxInFlight()
	if peaks["c1"] != 4 || peaks["c2"] != 4 {
		t.Errorf("peak concurrency = %v, want both credentials used up to their limit of 4", peaks)
	}
	if got := e.gw.Stats("c1").Requests + e.gw.Stats("c2").Requests; got != n {
		t.Errorf("the upstream answered %d chat requests, want %d", got, n)
	}
	if minimum := n / 8 * latency; took < minimum {
		t.Errorf("the burst took %s, want at least %s (%d requests, 8 slots): it did not queue", took, minimum, n)
	}
	checkIdle(t, e)
}

// TestCredentialsChangeUnderLoad: with over 200 requests running all the
// time (streams slowed by the fake), credentials are added, removed,
// disabled and re-enabled through pool.Sync. No request fails, the new
// credentials start serving, the removed and disabled ones finish what they
// had in flight and get nothing more.
func TestCredentialsChangeUnderLoad(t *testing.T) {
	const workers = 220
	slow := fake.Behavior{EventDelay: 15 * time.Millisecond}
	var all []fake.Credential
	for i := range 10 {
		all = append(all, testCred(fmt.Sprintf("c%d", i+1), slow))
	}
	e := newEnv(t, envOptions{creds: all[:5], maxConc: 4, fakeOpts: fake.Options{Latency: 20 * time.Millisecond}})
	limits := map[string]int{}
	for _, c := range all {
		limits[c.ID] = 4
	}
	resync := func(enabled map[string]bool, creds []fake.Credential) {
		var specs []pool.Spec
		for _, c := range creds {
			on, ok := enabled[c.ID]
			specs = append(specs, specOf(c, on || !ok, 4))
		}
		e.pool.Sync(specs, nil)
	}

	hc := loadClient(t)
	stop := make(chan struct{})
	var (
		mu      sync.Mutex
		rs      []loadResult
		running atomic.Int64
		wg      sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				running.Add(1)
				r := e.post(t.Context(), hc, (w+i)%3 != 0)
				running.Add(-1)
				mu.Lock()
				rs = append(rs, r)
				mu.Unlock()
			}
		})
	}
	defer func() { // on an early failure too
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	served := func(id string) int { return e.gw.Stats(id).Requests }

	eventually(t, 10*time.Second, "the first five credentials are saturated", func() bool {
		return e.pool.Status().Totals.InFlight == 20 && running.Load() > 200
	})

	// Add five credentials: they start serving.
	for _, c := range all[5:] {
		e.gw.AddCredential(c)
	}
	resync(nil, all)
	for _, c := range all[5:] {
		eventually(t, 5*time.Second, c.ID+" serves", func() bool { return served(c.ID) > 0 })
	}
	if got := running.Load(); got < 200 {
		t.Fatalf("%d requests running, want over 200 while the credentials change", got)
	}

	// Remove c1 and c2 and disable c3 while they have requests in flight.
	eventually(t, 5*time.Second, "c1, c2 and c3 have requests in flight", func() bool {
		return e.gw.Stats("c1").InFlight > 0 && e.gw.Stats("c2").InFlight > 0 && e.gw.Stats("c3").InFlight > 0
	})
	resync(map[string]bool{"c3": false}, all[2:])
	st := e.pool.Status()
	if len(st.Credentials) != 8 {
		t.Errorf("the pool lists %d credentials after removing 2 of 10, want 8", len(st.Credentials))
	}
	for _, c := range st.Credentials {
		if c.ID == "c1" || c.ID == "c2" {
			t.Errorf("removed credential %s is still listed", c.ID)
		}
	}
	// Sync hands a kept credential's change to its actor's mailbox (ahead
	// of any later admission) without waiting: Status shows it a moment later.
	eventually(t, time.Second, "c3 is disabled", func() bool { return e.credStatus("c3").State == pool.StateDisabled })
	for _, id := range []string{"c1", "c2", "c3"} {
		eventually(t, 5*time.Second, id+"'s requests in flight finish", func() bool { return e.gw.Stats(id).InFlight == 0 })
	}
	time.Sleep(50 * time.Millisecond) // a lease granted just before the change reaches the fake
	before := map[string]int{"c1": served("c1"), "c2": served("c2"), "c3": served("c3")}
	time.Sleep(300 * time.Millisecond)
	for id, n := range before {
		if got := served(id); got != n {
			t.Errorf("%s got %d more requests after it was removed or disabled", id, got-n)
		}
	}
	if c3 := e.credStatus("c3"); c3.InFlight != 0 || c3.State != pool.StateDisabled {
		t.Errorf("c3 = %s with %d in flight, want disabled and drained", c3.State, c3.InFlight)
	}

	// Re-enable c3: it serves again.
	resync(nil, all[2:])
	eventually(t, 5*time.Second, "c3 serves again", func() bool { return served("c3") > before["c3"] })

	// Churn: credentials come and go, three at a time, while requests keep
	// arriving and waiting for a slot. Each one added is picked at once and
	// removed while it serves.
	//
	// Many rounds: under -race this phase once caught pool.Sync reading a new
	// actor's state after starting its goroutine (a race an admission from a
	// fresh request exposes, not one from a woken waiter).
	kept := all[2:]
	for i := range 40 {
		specs := slices.Clone(kept)
		var added []fake.Credential
		for j := range 3 {
			c := testCred(fmt.Sprintf("churn%d-%d", i, j), slow)
			e.gw.AddCredential(c)
			limits[c.ID] = 4
			added = append(added, c)
		}
		resync(nil, append(specs, added...))
		eventually(t, 5*time.Second, fmt.Sprintf("churn round %d serves", i), func() bool {
			for _, c := range added {
				if e.gw.Stats(c.ID).Requests > 0 {
					return true
				}
			}
			return false
		})
		resync(nil, kept)
	}
	// A removed credential added again gets a new actor and serves.
	n1 := served("c1")
	resync(nil, append(slices.Clone(kept), all[0]))
	eventually(t, 5*time.Second, "c1 serves again after being added back", func() bool { return served("c1") > n1 })
	if got := running.Load(); got < 200 {
		t.Errorf("%d requests running at the end, want over 200 throughout", got)
	}

	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(rs) <= workers {
		t.Errorf("%d requests completed, want more than the %d of the first wave", len(rs), workers)
	}
	checkResults(t, rs)
	for _, id := range []string{"c1", "c2"} {
		for _, r := range e.gw.RequestsFor(id) {
			if r.Status != http.StatusOK {
				t.Errorf("a request on removed credential %s ended with status %d, want 200", id, r.Status)
			}
		}
	}
	checkLimits(t, e, limits)
	checkIdle(t, e)
}

// TestQueueLimits: when every credential is at its limit, a request waits in
// the queue; a full queue or a wait past QueueTimeout is a 503 with
// Retry-After, and a waiting request gets served when a slot frees up.
func TestQueueLimits(t *testing.T) {
	// hold sends a request that hangs upstream until ctx ends.
	hold := func(e *env, ctx context.Context) <-chan int {
		out := make(chan int, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/v1/chat/completions", strings.NewReader(chatBody("")))
			req.Header.Set("Authorization", "Bearer "+e.token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				out <- 0
				return
			}
			resp.Body.Close()
			out <- resp.StatusCode
		}()
		return out
	}
	twoHanging := func(t *testing.T, disp dispatch.Config) (*env, context.CancelFunc, []<-chan int) {
		e := newEnv(t, envOptions{
			creds:   []fake.Credential{testCred("c1", fake.Behavior{Fault: fake.Hang}), testCred("c2", fake.Behavior{Fault: fake.Hang})},
			maxConc: 1,
			disp:    disp,
		})
		ctx, cancel := context.WithCancel(t.Context())
		held := []<-chan int{hold(e, ctx), hold(e, ctx)}
		eventually(t, 5*time.Second, "both slots are taken", func() bool {
			return e.gw.Stats("c1").InFlight == 1 && e.gw.Stats("c2").InFlight == 1
		})
		return e, cancel, held
	}

	t.Run("queue full", func(t *testing.T) {
		e, cancel, held := twoHanging(t, dispatch.Config{QueueMax: 3, QueueTimeout: 10 * time.Second, BusyRetryAfter: 3 * time.Second})
		defer cancel()
		for range 3 {
			held = append(held, hold(e, t.Context()))
		}
		time.Sleep(150 * time.Millisecond) // the three take the queue's places
		start := time.Now()
		resp, body := e.chat(chatBody(""))
		checkError(t, resp, body, wantError{503, "server_error", "queue_full", "", "3 requests are already waiting"})
		if got := resp.Header.Get("Retry-After"); got != "3" {
			t.Errorf("Retry-After = %q, want 3 (BusyRetryAfter)", got)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("a full queue answered after %s, want at once", d)
		}
		// Freeing the two slots serves the waiting three.
		e.gw.SetBehavior("c1", fake.Behavior{})
		e.gw.SetBehavior("c2", fake.Behavior{})
		cancel()
		for i, h := range held {
			got := <-h
			switch {
			case i < 2 && got != 0:
				t.Errorf("held request %d: status %d, want canceled", i, got)
			case i >= 2 && got != http.StatusOK:
				t.Errorf("queued request %d: status %d, want 200 once a slot freed", i-2, got)
			}
		}
		if n := len(chatRequests(e)); n != 5 {
			t.Errorf("upstream requests = %d, want 5 (2 held, 3 queued, none for the refused one)", n)
		}
		for _, id := range []string{"c1", "c2"} {
			if st := e.credStatus(id); st.Failures != 0 || st.State != pool.StateReady {
				t.Errorf("%s = %+v, want ready with no failure", id, st)
			}
		}
	})
	t.Run("queue timeout", func(t *testing.T) {
		const timeout = 200 * time.Millisecond
		e, cancel, held := twoHanging(t, dispatch.Config{QueueTimeout: timeout})
		defer cancel()
		start := time.Now()
		resp, body := e.chat(chatBody(`"stream":true`))
		took := time.Since(start)
		checkError(t, resp, body, wantError{503, "server_error", "queue_timeout", "", "busy"})
		if got := retryAfterHeader(t, resp); got != 5 {
			t.Errorf("Retry-After = %d, want 5 (the default BusyRetryAfter)", got)
		}
		if took < timeout || took > timeout+time.Second {
			t.Errorf("the queue timeout came after %s, want about %s", took, timeout)
		}
		if n := len(chatRequests(e)); n != 2 {
			t.Errorf("upstream requests = %d, want only the 2 held", n)
		}
		cancel()
		for _, h := range held {
			<-h
		}
	})
	t.Run("a request that failed over waits for a slot", func(t *testing.T) {
		e := newEnv(t, envOptions{
			creds:   []fake.Credential{testCred("c1", fake.Behavior{Fault: fake.Hang}), testCred("c2", fake.Behavior{Fault: fake.Hang})},
			maxConc: 1,
			disp:    dispatch.Config{QueueTimeout: 10 * time.Second},
		})
		hctx, hcancel := context.WithCancel(t.Context())
		defer hcancel()
		holder := hold(e, hctx)
		var busyID, freeID string
		eventually(t, 5*time.Second, "one credential is held", func() bool {
			busyID, freeID = "c1", "c2"
			if e.gw.Stats("c2").InFlight == 1 {
				busyID, freeID = "c2", "c1"
			}
			return e.gw.Stats(busyID).InFlight == 1
		})
		// The held request keeps hanging; from now on busyID answers and
		// freeID is rate limited.
		e.gw.SetBehavior(busyID, fake.Behavior{})
		e.gw.SetBehavior(freeID, fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterSeconds: 30})

		before := len(chatRequests(e))
		got := make(chan int, 1)
		go func() {
			r := e.post(t.Context(), e.srv.Client(), false)
			if r.status == http.StatusOK {
				schematest.Validate(t, schematest.ChatCompletion, r.body)
			}
			got <- r.status
		}()
		eventually(t, 5*time.Second, "the request failed over from "+freeID, func() bool {
			return len(e.gw.RequestsFor(freeID)) > 0 && e.credStatus(freeID).State == pool.StateCooling
		})
		time.Sleep(100 * time.Millisecond) // it waits in the queue for busyID
		select {
		case s := <-got:
			t.Fatalf("the request ended with %d while %s was busy, want it to wait", s, busyID)
		default:
		}
		hcancel()
		<-holder
		if s := <-got; s != http.StatusOK {
			t.Fatalf("status = %d, want 200 once %s freed up", s, busyID)
		}
		reqs := chatRequests(e)[before:]
		if ids := credIDs(reqs); len(ids) != 2 || ids[0] != freeID || ids[1] != busyID {
			t.Errorf("upstream requests %q, want %s's 429 then %s", ids, freeID, busyID)
		}
	})
	t.Run("canceled while queued", func(t *testing.T) {
		e, cancel, held := twoHanging(t, dispatch.Config{QueueTimeout: 10 * time.Second})
		defer cancel()
		qctx, qcancel := context.WithCancel(t.Context())
		queued := hold(e, qctx)
		time.Sleep(100 * time.Millisecond)
		qcancel()
		if got := <-queued; got != 0 {
			t.Errorf("canceled queued request: status %d", got)
		}
		// Its place is gone: freeing a slot serves a new request at once.
		e.gw.SetBehavior("c1", fake.Behavior{})
		e.gw.SetBehavior("c2", fake.Behavior{})
		cancel()
		for _, h := range held {
			<-h
		}
		resp, body := e.chat(chatBody(""))
		checkCompletion(t, resp, body)
		if n := len(chatRequests(e)); n != 3 {
			t.Errorf("upstream requests = %d, want 3: the canceled waiter never reached the upstream", n)
		}
	})
}

// TestNoEnabledCredentials: with every credential disabled the client gets
// 503 no_credentials without reaching the upstream; re-enabling serves again.
func TestNoEnabledCredentials(t *testing.T) {
	creds := []fake.Credential{testCred("c1", fake.Behavior{}), testCred("c2", fake.Behavior{})}
	e := newEnv(t, envOptions{creds: creds})
	set := func(enabled bool) {
		var specs []pool.Spec
		for _, c := range creds {
			specs = append(specs, specOf(c, enabled, 0))
		}
		e.pool.Sync(specs, nil)
		want := pool.StateDisabled
		if enabled {
			want = pool.StateReady
		}
		eventually(t, time.Second, "the credentials are "+want, func() bool {
			return e.credStatus("c1").State == want && e.credStatus("c2").State == want
		})
	}
	set(false)
	resp, body, reqs, _ := e.exchange(chatBody(""))
	checkError(t, resp, body, wantError{503, "server_error", "no_credentials", "", "no credentials are configured or enabled"})
	if len(reqs) != 0 {
		t.Errorf("upstream requests %q, want none", credIDs(reqs))
	}
	set(true)
	resp, body, _, _ = e.exchange(chatBody(""))
	checkCompletion(t, resp, body)
}

package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/atlassian-proxy/atlassian-proxy/dispatch"
	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/schematest"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// The failover tests run the pool's rules (issue 3, "Behaviour") through
// the whole HTTP stack: a loopback proxy in front of the fake gateway. Each
// checks what the client got (status, OpenAI body shape, headers) and what
// the fake gateway saw (which credential, how often, when).

// documentedBackoff is the request's documented first back-off after a 5xx
// (0.5 s). Tests that check a failover does not wait configure it, so that
// a wrong wait would show.
const documentedBackoff = 500 * time.Millisecond

// chatRequests returns the chat requests the fake gateway received, in
// arrival order (credits checks left out).
func chatRequests(e *env) []fake.Request {
	return slices.DeleteFunc(e.gw.Requests(), func(r fake.Request) bool { return r.Path != gateway.PathUnifiedChat })
}

// exchange sends one chat request and returns the response, its body, the
// upstream chat requests it caused and how long it took. No other request
// may be running.
func (e *env) exchange(body string) (*http.Response, []byte, []fake.Request, time.Duration) {
	e.t.Helper()
	before := len(chatRequests(e))
	start := time.Now()
	resp, b := e.chat(body)
	took := time.Since(start)
	return resp, b, chatRequests(e)[before:], took
}

// credIDs lists the credentials of upstream requests.
func credIDs(reqs []fake.Request) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = r.CredentialID
	}
	return out
}

// checkCompletion asserts a 200 chat.completion with the fake's answer.
func checkCompletion(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s), want 200", resp.StatusCode, body)
	}
	schematest.Validate(t, schematest.ChatCompletion, body)
	if !strings.Contains(string(body), fake.DefaultText) {
		t.Errorf("body %s does not carry the answer %q", body, fake.DefaultText)
	}
}

// checkCompleteStream asserts a 200 event stream with the whole answer and
// [DONE] last.
func checkCompleteStream(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s), want 200", resp.StatusCode, body)
	}
	s := summarize(t, body)
	if !s.doneLast || s.errorEvent != "" || s.text != fake.DefaultText {
		t.Errorf("stream: [DONE] last %v, error event %q, text %q; want a complete stream of %q:\n%s",
			s.doneLast, s.errorEvent, s.text, fake.DefaultText, body)
	}
}

// retryAfterHeader parses a Retry-After header in whole seconds.
func retryAfterHeader(t *testing.T, resp *http.Response) int {
	t.Helper()
	v := resp.Header.Get("Retry-After")
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("Retry-After = %q, want a positive number of seconds", v)
	}
	return n
}

// within reports whether got is want ± tol.
func within(got, want, tol time.Duration) bool {
	return got >= want-tol && got <= want+tol
}

// TestRateLimitedCredentialFailsOverAndRecovers: a 429 moves the request to
// another credential at once (no back-off), the credential is left alone
// for its cooldown — the Retry-After header, else retryAfterSeconds + 1 s
// for a minute limit — and serves again after it.
func TestRateLimitedCredentialFailsOverAndRecovers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		b        fake.Behavior
		cooldown time.Duration
	}{
		{"retryAfterSeconds in the body", fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterSeconds: 1}, 2 * time.Second},
		{"Retry-After header", fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterSeconds: 30, RetryAfterHeader: "1"}, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{
				creds: []fake.Credential{testCred("c1", fake.Behavior{}), testCred("c2", fake.Behavior{}), testCred("c3", fake.Behavior{})},
				disp:  dispatch.Config{BackoffBase: documentedBackoff, BackoffMax: documentedBackoff},
			})
			e.gw.Push("c1", 1, tt.b)

			// Round robin over idle credentials reaches c1 within three requests.
			var hit []fake.Request
			for i := 0; i < 3 && hit == nil; i++ {
				resp, body, reqs, took := e.exchange(chatBody(""))
				checkCompletion(t, resp, body)
				if len(reqs) == 0 {
					t.Fatalf("request %d reached no credential", i)
				}
				if reqs[0].CredentialID != "c1" {
					if len(reqs) != 1 {
						t.Errorf("request %d: upstream requests %q, want one", i, credIDs(reqs))
					}
					continue
				}
				hit = reqs
				if len(reqs) != 2 || reqs[1].CredentialID == "c1" || reqs[0].Status != http.StatusTooManyRequests || reqs[1].Status != http.StatusOK {
					t.Fatalf("upstream requests %q with statuses %d, %d; want c1's 429 then another credential's 200",
						credIDs(reqs), reqs[0].Status, reqs[len(reqs)-1].Status)
				}
				if gap := reqs[1].Time.Sub(reqs[0].Time); gap >= documentedBackoff/2 {
					t.Errorf("the failover after the 429 took %s, want well under the %s back-off: a 429 moves on at once", gap, documentedBackoff)
				}
				if took >= documentedBackoff/2 {
					t.Errorf("the request took %s, want well under the %s back-off", took, documentedBackoff)
				}
			}
			if hit == nil {
				t.Fatalf("c1 got no request in three: upstream saw %q", credIDs(chatRequests(e)))
			}
			t429 := hit[0].Time

			st := e.credStatus("c1")
			if st.State != pool.StateCooling || st.Reason != "rate_limited" {
				t.Fatalf("c1 = %s (%s), want cooling (rate_limited)", st.State, st.Reason)
			}
			if got := st.CooldownUntil.Sub(t429); !within(got, tt.cooldown, 300*time.Millisecond) {
				t.Errorf("c1 cools for %s after its 429, want %s", got, tt.cooldown)
			}

			// During the cooldown every request, streamed or not, goes elsewhere.
			for i := range 6 {
				if i%2 == 1 {
					resp, body, reqs, _ := e.exchange(chatBody(`"stream":true`))
					checkCompleteStream(t, resp, body)
					if len(reqs) != 1 || reqs[0].CredentialID == "c1" {
						t.Errorf("stream %d during the cooldown: upstream requests %q, want one on c2 or c3", i, credIDs(reqs))
					}
					continue
				}
				resp, body, reqs, _ := e.exchange(chatBody(""))
				checkCompletion(t, resp, body)
				if len(reqs) != 1 || reqs[0].CredentialID == "c1" {
					t.Errorf("request %d during the cooldown: upstream requests %q, want one on c2 or c3", i, credIDs(reqs))
				}
			}
			if time.Now().After(st.CooldownUntil) {
				t.Fatalf("the requests during the cooldown took longer than the cooldown: the check proves nothing")
			}
			if n := len(e.gw.RequestsFor("c1")); n != 1 {
				t.Errorf("c1 received %d requests, want only the 429 during its cooldown", n)
			}

			// After it, c1 serves again. (Status calls a cooldown past its end
			// ready at once; the pick index follows when c1's actor timer
			// fires, a few milliseconds later at most.)
			eventually(t, tt.cooldown+2*time.Second, "c1 is ready again", func() bool { return e.credStatus("c1").State == pool.StateReady })
			served := false
			for i := 0; !served && time.Since(st.CooldownUntil) < time.Second; i++ {
				resp, body, reqs, _ := e.exchange(chatBody(""))
				checkCompletion(t, resp, body)
				if len(reqs) != 1 {
					t.Errorf("request %d after the cooldown: upstream requests %q, want one", i, credIDs(reqs))
				}
				served = slices.Contains(credIDs(reqs), "c1")
				time.Sleep(2 * time.Millisecond)
			}
			if !served {
				t.Errorf("c1 served nothing in the second after its cooldown ended")
			}
			for _, r := range e.gw.RequestsFor("c1")[1:] {
				if r.Time.Before(st.CooldownUntil) {
					t.Errorf("c1 got a request at %s, before its cooldown ended at %s", r.Time, st.CooldownUntil)
				}
			}
			if st := e.credStatus("c1"); st.State != pool.StateReady || st.ConsecutiveFailures != 0 {
				t.Errorf("c1 after serving = %+v, want ready", st)
			}
		})
	}
}

// TestDailyLimitKeepsCredentialOut: DAILY_LIMIT_EXCEEDED cools the credential
// for the whole period given (no +1 s), and it stays out while the others serve.
func TestDailyLimitKeepsCredentialOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{
		creds: []fake.Credential{
			testCred("c1", fake.Behavior{Fault: fake.RateLimitDaily, RetryAfterSeconds: 3600}),
			testCred("c2", fake.Behavior{}), testCred("c3", fake.Behavior{}),
		},
		disp: dispatch.Config{BackoffBase: documentedBackoff, BackoffMax: documentedBackoff},
	})
	for i := 0; i < 3 && len(e.gw.RequestsFor("c1")) == 0; i++ {
		resp, body, reqs, took := e.exchange(chatBody(""))
		checkCompletion(t, resp, body)
		if len(reqs) == 2 && took >= documentedBackoff/2 {
			t.Errorf("the failover after the daily limit took %s, want no back-off", took)
		}
	}
	hits := e.gw.RequestsFor("c1")
	if len(hits) != 1 || hits[0].Status != http.StatusTooManyRequests {
		t.Fatalf("c1 requests = %d, want one 429", len(hits))
	}
	st := e.credStatus("c1")
	if st.State != pool.StateCooling || st.Reason != "quota_exhausted" {
		t.Fatalf("c1 = %s (%s), want cooling (quota_exhausted)", st.State, st.Reason)
	}
	if got := st.CooldownUntil.Sub(hits[0].Time); !within(got, time.Hour, time.Second) {
		t.Errorf("c1 cools for %s, want the whole period given (1 h)", got)
	}

	// Still out two seconds later, while the others serve every request.
	end := time.Now().Add(2 * time.Second)
	n := 0
	for time.Now().Before(end) {
		resp, body, reqs, _ := e.exchange(chatBody(""))
		checkCompletion(t, resp, body)
		if len(reqs) != 1 || reqs[0].CredentialID == "c1" {
			t.Fatalf("request %d: upstream requests %q, want one on c2 or c3", n, credIDs(reqs))
		}
		n++
		time.Sleep(50 * time.Millisecond)
	}
	if got := len(e.gw.RequestsFor("c1")); got != 1 {
		t.Errorf("c1 received %d requests, want none after its daily limit", got-1)
	}
	if st := e.credStatus("c1"); st.State != pool.StateCooling || st.Reason != "quota_exhausted" {
		t.Errorf("c1 after 2 s = %s (%s), want still cooling (quota_exhausted)", st.State, st.Reason)
	}
	if len(e.gw.RequestsFor("c2")) == 0 || len(e.gw.RequestsFor("c3")) == 0 {
		t.Errorf("c2 and c3 served %d and %d requests, want both to serve", len(e.gw.RequestsFor("c2")), len(e.gw.RequestsFor("c3")))
	}
}

// TestRateLimitWithoutRetryTimeCoolsTenSeconds: a 429 that names no retry
// time cools the credential for 10 s.
func TestRateLimitWithoutRetryTimeCoolsTenSeconds(t *testing.T) {
	e := newEnv(t, envOptions{creds: []fake.Credential{
		testCred("c1", fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterSeconds: -1}),
		testCred("c2", fake.Behavior{}),
	}})
	for i := 0; i < 2 && len(e.gw.RequestsFor("c1")) == 0; i++ {
		resp, body, _, _ := e.exchange(chatBody(""))
		checkCompletion(t, resp, body)
	}
	hits := e.gw.RequestsFor("c1")
	if len(hits) != 1 {
		t.Fatalf("c1 requests = %d, want 1", len(hits))
	}
	st := e.credStatus("c1")
	if got := st.CooldownUntil.Sub(hits[0].Time); st.State != pool.StateCooling || !within(got, 10*time.Second, 300*time.Millisecond) {
		t.Errorf("c1 = %s for %s, want cooling for 10 s", st.State, got)
	}
}

// TestUnauthorizedCredentialBecomesInvalid: a 401 takes the credential out
// of rotation for good (no checker here), at once, and the request succeeds
// on another.
func TestUnauthorizedCredentialBecomesInvalid(t *testing.T) {
	e := newEnv(t, envOptions{
		creds: []fake.Credential{
			testCred("c1", fake.Behavior{Fault: fake.Unauthorized}),
			testCred("c2", fake.Behavior{}), testCred("c3", fake.Behavior{}),
		},
		disp: dispatch.Config{BackoffBase: documentedBackoff, BackoffMax: documentedBackoff},
	})
	for i := range 8 {
		body := chatBody("")
		if i%2 == 1 {
			body = chatBody(`"stream":true`)
		}
		resp, b, reqs, took := e.exchange(body)
		if i%2 == 1 {
			checkCompleteStream(t, resp, b)
		} else {
			checkCompletion(t, resp, b)
		}
		if len(reqs) == 2 {
			if reqs[0].CredentialID != "c1" || reqs[0].Status != http.StatusUnauthorized || reqs[1].Status != http.StatusOK {
				t.Errorf("request %d: upstream requests %q, want c1's 401 then a 200", i, credIDs(reqs))
			}
			if took >= documentedBackoff/2 {
				t.Errorf("request %d: the failover after a 401 took %s, want no back-off", i, took)
			}
		}
	}
	if n := len(e.gw.RequestsFor("c1")); n != 1 {
		t.Errorf("c1 received %d chat requests, want 1: an invalid credential gets no more", n)
	}
	st := e.credStatus("c1")
	if st.State != pool.StateInvalid || st.Reason != "unauthorized" || st.Failures != 1 || st.InFlight != 0 {
		t.Errorf("c1 = %+v, want invalid (unauthorized) after one failure", st)
	}
	if st.LastError == "" || strings.Contains(st.LastError, "atl-") || strings.Contains(st.LastError, "secret") {
		t.Errorf("c1 last error = %q, want a safe description", st.LastError)
	}
	if tot := e.pool.Status().Totals; tot.Invalid != 1 || tot.Ready != 2 {
		t.Errorf("totals = %+v, want 1 invalid and 2 ready", tot)
	}
	// Invalid is not a cooldown: it does not end by itself.
	time.Sleep(100 * time.Millisecond)
	if st := e.credStatus("c1"); st.State != pool.StateInvalid {
		t.Errorf("c1 = %s later, want still invalid", st.State)
	}
}

// TestAllCredentialsFailing5xx: every credential answering 500, 502, 503 or
// 529 costs a request at most MaxAttempts upstream attempts on different
// credentials, with the request's growing back-off between them; the client
// gets a 502 in OpenAI's shape. While all are cooling, a request gets 503
// with Retry-After without reaching the upstream.
func TestAllCredentialsFailing5xx(t *testing.T) {
	t.Parallel()
	faults := []fake.Fault{fake.InternalError, fake.BadGateway, fake.Unavailable, fake.Overloaded, fake.InternalError, fake.Overloaded}
	var creds []fake.Credential
	for i, f := range faults {
		creds = append(creds, testCred(fmt.Sprintf("c%d", i+1), fake.Behavior{Fault: f}))
	}
	const base, maxWait = 20 * time.Millisecond, 80 * time.Millisecond
	e := newEnv(t, envOptions{
		creds:   creds,
		disp:    dispatch.Config{BackoffBase: base, BackoffMax: maxWait}, // MaxAttempts: the default 5
		poolCfg: pool.Config{BackoffBase: 3 * time.Second, BackoffMax: 3 * time.Second},
	})

	resp, body, reqs, _ := e.exchange(chatBody(""))
	checkError(t, resp, body, wantError{502, "server_error", "upstream_error", "", "5 attempts"})
	if resp.Header.Get("Retry-After") != "" {
		t.Errorf("Retry-After = %q on a 502, want none", resp.Header.Get("Retry-After"))
	}
	ids := credIDs(reqs)
	if len(reqs) != 5 {
		t.Fatalf("upstream attempts = %d (%q), want MaxAttempts = 5", len(reqs), ids)
	}
	if u := slices.Compact(slices.Sorted(slices.Values(ids))); len(u) != 5 {
		t.Errorf("attempts went to %q, want 5 different credentials", ids)
	}
	for i := 1; i < len(reqs); i++ {
		want := min(base<<(i-1), maxWait) // 20, 40, 80, 80 ms
		if gap := reqs[i].Time.Sub(reqs[i-1].Time); gap < want {
			t.Errorf("attempt %d came %s after attempt %d, want at least the %s back-off", i+1, gap, i, want)
		}
	}
	for _, r := range reqs {
		if r.Status < 500 {
			t.Errorf("attempt on %s answered %d, want a 5xx", r.CredentialID, r.Status)
		}
	}

	// The one credential left is tried once; then nothing can serve.
	resp, body, reqs, _ = e.exchange(chatBody(""))
	checkError(t, resp, body, wantError{502, "server_error", "upstream_error", "", "1 attempt"})
	if len(reqs) != 1 || slices.Contains(ids, reqs[0].CredentialID) {
		t.Errorf("second request: upstream requests %q, want one on the credential not tried yet", credIDs(reqs))
	}

	st := e.pool.Status()
	if st.Totals.Cooling != len(faults) {
		t.Fatalf("totals = %+v, want all %d cooling", st.Totals, len(faults))
	}
	earliest := st.Credentials[0].CooldownUntil
	for _, c := range st.Credentials {
		if c.Reason != "server_error" || c.Failures != 1 {
			t.Errorf("%s = %s (%s), %d failures; want cooling (server_error) after 1 failure", c.ID, c.State, c.Reason, c.Failures)
		}
		if c.CooldownUntil.Before(earliest) {
			earliest = c.CooldownUntil
		}
	}
	resp, body, reqs, _ = e.exchange(chatBody(`"stream":true`))
	checkError(t, resp, body, wantError{503, "server_error", "credentials_cooling", "", "all 6 credentials are cooling down"})
	want := int(math.Ceil(time.Until(earliest).Seconds()))
	if got := retryAfterHeader(t, resp); got < want-1 || got > want+1 {
		t.Errorf("Retry-After = %d, want %d ± 1 (the earliest cooldown end)", got, want)
	}
	if len(reqs) != 0 {
		t.Errorf("a request while all cool reached the upstream: %q", credIDs(reqs))
	}
}

// TestClientCancelDuringBackoff: a client that leaves while its request
// waits out the back-off after a 5xx stops the request: no further
// credential is tried.
func TestClientCancelDuringBackoff(t *testing.T) {
	t.Parallel()
	const backoff = 400 * time.Millisecond
	e := newEnv(t, envOptions{
		creds: []fake.Credential{testCred("c1", fake.Behavior{Fault: fake.InternalError}), testCred("c2", fake.Behavior{Fault: fake.InternalError})},
		disp:  dispatch.Config{BackoffBase: backoff, BackoffMax: backoff},
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan loadResult, 1)
	go func() { done <- e.post(ctx, e.srv.Client(), false) }()
	eventually(t, 2*time.Second, "the first attempt failed", func() bool {
		reqs := chatRequests(e)
		return len(reqs) == 1 && reqs[0].Status == http.StatusInternalServerError
	})
	cancel()
	if r := <-done; r.err == nil {
		t.Errorf("the canceled request got status %d", r.status)
	}
	time.Sleep(backoff + 200*time.Millisecond)
	if reqs := chatRequests(e); len(reqs) != 1 {
		t.Errorf("upstream requests %q, want 1: the request went on after its client left", credIDs(reqs))
	}
	eventually(t, time.Second, "no lease is left", func() bool { return e.pool.Status().Totals.InFlight == 0 })
}

// TestMaxAttemptsIsConfigurable: MaxAttempts bounds the upstream attempts.
func TestMaxAttemptsIsConfigurable(t *testing.T) {
	var creds []fake.Credential
	for i := range 5 {
		creds = append(creds, testCred(fmt.Sprintf("c%d", i+1), fake.Behavior{Fault: fake.BadGateway}))
	}
	e := newEnv(t, envOptions{creds: creds, disp: dispatch.Config{MaxAttempts: 2}})
	resp, body, reqs, _ := e.exchange(chatBody(""))
	checkError(t, resp, body, wantError{502, "server_error", "upstream_error", "", "2 attempts"})
	if len(reqs) != 2 || reqs[0].CredentialID == reqs[1].CredentialID {
		t.Errorf("upstream requests %q, want 2 on different credentials", credIDs(reqs))
	}
}

// TestForbiddenRule: a 403 moves the request on at once, but when a second
// credential answers 403 to the same request, the 403 goes to the client:
// the request is never cycled through the whole pool.
func TestForbiddenRule(t *testing.T) {
	t.Run("all answer 403", func(t *testing.T) {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
				e := newEnv(t, envOptions{creds: []fake.Credential{
					testCred("c1", fake.Behavior{Fault: fake.Forbidden}),
					testCred("c2", fake.Behavior{Fault: fake.Forbidden}),
					testCred("c3", fake.Behavior{Fault: fake.Forbidden}),
				}})
				body := chatBody("")
				if stream {
					body = chatBody(`"stream":true`)
				}
				resp, b, reqs, _ := e.exchange(body)
				checkError(t, resp, b, wantError{403, "permission_error", "upstream_forbidden", "", "Forbidden: the request was refused"})
				if len(reqs) != 2 || reqs[0].CredentialID == reqs[1].CredentialID {
					t.Fatalf("upstream requests %q, want exactly 2 on 2 different credentials", credIDs(reqs))
				}
				for _, r := range reqs {
					if r.Status != http.StatusForbidden {
						t.Errorf("%s answered %d, want 403", r.CredentialID, r.Status)
					}
				}
				if n := e.gw.Stats("c1").Requests + e.gw.Stats("c2").Requests + e.gw.Stats("c3").Requests; n != 2 {
					t.Errorf("the fake counted %d chat requests, want 2", n)
				}
			})
		}
	})
	t.Run("403 then 5xx then 403", func(t *testing.T) {
		e := newEnv(t, envOptions{creds: []fake.Credential{
			testCred("c1", fake.Behavior{Fault: fake.Forbidden}),
			testCred("c2", fake.Behavior{Fault: fake.InternalError}),
			testCred("c3", fake.Behavior{Fault: fake.Forbidden}),
		}})
		resp, b, reqs, _ := e.exchange(chatBody(""))
		checkError(t, resp, b, wantError{403, "permission_error", "upstream_forbidden", "", ""})
		forbidden := 0
		for _, r := range reqs {
			if r.Status == http.StatusForbidden {
				forbidden++
			}
		}
		if forbidden != 2 || len(reqs) > 3 || reqs[len(reqs)-1].Status != http.StatusForbidden {
			t.Errorf("upstream requests %q, want it to stop at the second 403", credIDs(reqs))
		}
	})
	t.Run("one answers 403", func(t *testing.T) {
		e := newEnv(t, envOptions{
			creds: []fake.Credential{
				testCred("c1", fake.Behavior{Fault: fake.Forbidden}),
				testCred("c2", fake.Behavior{}), testCred("c3", fake.Behavior{}),
			},
			disp: dispatch.Config{BackoffBase: documentedBackoff, BackoffMax: documentedBackoff},
		})
		for i := range 6 {
			resp, b, reqs, took := e.exchange(chatBody(""))
			checkCompletion(t, resp, b)
			if len(reqs) == 2 {
				if reqs[0].CredentialID != "c1" || reqs[0].Status != http.StatusForbidden || reqs[1].Status != http.StatusOK {
					t.Errorf("request %d: upstream requests %q, want c1's 403 then a 200", i, credIDs(reqs))
				}
				if took >= documentedBackoff/2 {
					t.Errorf("request %d: the failover after a 403 took %s, want no back-off", i, took)
				}
			}
		}
		if n := len(e.gw.RequestsFor("c1")); n != 1 {
			t.Errorf("c1 received %d requests, want 1: it cools down after its 403", n)
		}
		if st := e.credStatus("c1"); st.State != pool.StateCooling || st.Reason != "forbidden" {
			t.Errorf("c1 = %s (%s), want cooling (forbidden)", st.State, st.Reason)
		}
	})
}

// TestAllRateLimited: when every credential is rate limited the client gets
// 429 with a Retry-After of the earliest cooldown end and a message that
// counts the credentials; later requests get the same without reaching the
// upstream.
func TestAllRateLimited(t *testing.T) {
	tests := []struct {
		name     string
		creds    []fake.Credential
		tried    int
		earliest int // seconds
		msg      string
	}{
		{
			name: "four credentials",
			creds: []fake.Credential{
				testCred("c1", fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterSeconds: 40}),  // 41 s
				testCred("c2", fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterHeader: "20"}), // 20 s
				testCred("c3", fake.Behavior{Fault: fake.RateLimitDaily, RetryAfterSeconds: 7200}), // 2 h
				testCred("c4", fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterSeconds: 58}),  // 59 s
			},
			tried: 4, earliest: 20, msg: "all 4 credentials are rate limited; earliest retry in 20 s",
		},
		{
			name: "one invalid among them",
			creds: []fake.Credential{
				testCred("c1", fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterSeconds: 12}), // 13 s
				testCred("c2", fake.Behavior{Fault: fake.Unauthorized}),
				testCred("c3", fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterSeconds: 30}), // 31 s
			},
			tried: 3, earliest: 13, msg: "all 2 credentials are rate limited; earliest retry in 13 s (1 more is invalid)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{creds: tt.creds})
			resp, body, reqs, _ := e.exchange(chatBody(""))
			checkError(t, resp, body, wantError{429, "rate_limit_error", "rate_limit_exceeded", "", tt.msg})
			if got := retryAfterHeader(t, resp); got < tt.earliest-1 || got > tt.earliest+1 {
				t.Errorf("Retry-After = %d, want %d ± 1", got, tt.earliest)
			}
			if u := slices.Compact(slices.Sorted(slices.Values(credIDs(reqs)))); len(reqs) != tt.tried || len(u) != tt.tried {
				t.Errorf("upstream requests %q, want one on each of the %d credentials", credIDs(reqs), tt.tried)
			}

			resp, body, reqs, _ = e.exchange(chatBody(`"stream":true`))
			checkError(t, resp, body, wantError{429, "rate_limit_error", "rate_limit_exceeded", "", "rate limited"})
			if got := retryAfterHeader(t, resp); got < tt.earliest-1 || got > tt.earliest+1 {
				t.Errorf("second request: Retry-After = %d, want %d ± 1", got, tt.earliest)
			}
			if len(reqs) != 0 {
				t.Errorf("second request reached the upstream: %q", credIDs(reqs))
			}

			// The official client sees a rate-limit error.
			_, err := e.client(e.token).Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
				Model: testModel, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
			})
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests || apiErr.Code != "rate_limit_exceeded" {
				t.Errorf("official client error = %v, want a 429 rate_limit_exceeded", err)
			}
		})
	}
}

package api

import (
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-limiter"

	"github.com/atlassian-proxy/atlassian-proxy/internal/logtest"
	"github.com/atlassian-proxy/atlassian-proxy/openaierr"
	"github.com/atlassian-proxy/atlassian-proxy/ratelimit"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

func withRate(n int) func(*store.APIToken) {
	return func(r *store.APIToken) { r.RateLimit = n }
}

// chatWith posts a small chat request with token.
func (e *env) chatWith(token string) (*http.Response, []byte) {
	e.t.Helper()
	return e.do(request{method: http.MethodPost, path: "/v1/chat/completions", token: token, contentType: "-", body: chatBody(`"max_tokens":5`)})
}

func TestTokenRateLimit(t *testing.T) {
	e := newEnv(t, envOptions{})
	limited := e.addToken("three a minute", withRate(3))
	for i := range 3 {
		resp, body := e.chatWith(limited)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status = %d (%s), want 200", i+1, resp.StatusCode, body)
		}
		if got, want := resp.Header.Get("X-Ratelimit-Remaining-Requests"), strconv.Itoa(2-i); got != want {
			t.Errorf("request %d: X-Ratelimit-Remaining-Requests = %q, want %q", i+1, got, want)
		}
		if got := resp.Header.Get("X-Ratelimit-Limit-Requests"); got != "3" {
			t.Errorf("request %d: X-Ratelimit-Limit-Requests = %q, want 3", i+1, got)
		}
	}
	resp, body := e.chatWith(limited)
	checkError(t, resp, body, wantError{http.StatusTooManyRequests, openaierr.TypeRequests, "rate_limit_exceeded", "", "Limit 3"})
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 60 {
		t.Errorf("Retry-After = %q, want whole seconds in [1, 60]", resp.Header.Get("Retry-After"))
	}
	if got := len(e.gw.Requests()); got != 3 {
		t.Errorf("upstream requests = %d, want 3: the limited request must not reach the upstream", got)
	}
	// Every route with the token counts and is refused.
	resp, body = e.do(request{method: http.MethodGet, path: "/v1/models", token: limited})
	checkError(t, resp, body, wantError{http.StatusTooManyRequests, openaierr.TypeRequests, "rate_limit_exceeded", "", "RPM"})
}

func TestUnlimitedTokenIsNeverLimited(t *testing.T) {
	e := newEnv(t, envOptions{})
	for i := range 30 {
		resp, body := e.do(request{method: http.MethodGet, path: "/v1/models", token: e.token})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status = %d (%s), want 200", i+1, resp.StatusCode, body)
		}
		if h := resp.Header.Get("X-Ratelimit-Limit-Requests"); h != "" {
			t.Fatalf("request %d: X-Ratelimit-Limit-Requests = %q on an unlimited token", i+1, h)
		}
	}
}

func TestTokenRateLimitsAreIndependent(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := e.addToken("a", withRate(2))
	b := e.addToken("b", withRate(2)) // the same rate: the same limiter store, another key
	c := e.addToken("c", withRate(5)) // another rate: another store
	models := func(token string) int {
		resp, _ := e.do(request{method: http.MethodGet, path: "/v1/models", token: token})
		return resp.StatusCode
	}
	for range 2 {
		if got := models(a); got != http.StatusOK {
			t.Fatalf("a: status = %d, want 200", got)
		}
	}
	if got := models(a); got != http.StatusTooManyRequests {
		t.Fatalf("a after 2: status = %d, want 429", got)
	}
	for i := range 2 {
		if got := models(b); got != http.StatusOK {
			t.Errorf("b request %d while a is limited: status = %d, want 200", i+1, got)
		}
	}
	if got := models(b); got != http.StatusTooManyRequests {
		t.Errorf("b after 2: status = %d, want 429", got)
	}
	for i := range 5 {
		if got := models(c); got != http.StatusOK {
			t.Errorf("c request %d: status = %d, want 200", i+1, got)
		}
	}
	if got := models(c); got != http.StatusTooManyRequests {
		t.Errorf("c after 5: status = %d, want 429", got)
	}
	if got := models(e.token); got != http.StatusOK {
		t.Errorf("the unlimited token: status = %d, want 200", got)
	}
}

// TestCloseStopsRateLimiters: Close stops the limiters (and is safe to
// call twice); a request after it is served, not limited.
func TestCloseStopsRateLimiters(t *testing.T) {
	e := newEnv(t, envOptions{})
	one := e.addToken("one a minute", withRate(1))
	if resp, body := e.chatWith(one); resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s), want 200", resp.StatusCode, body)
	}
	for i := range 2 {
		if err := e.api.Close(); err != nil {
			t.Fatalf("Close %d: %v", i+1, err)
		}
	}
	if resp, body := e.chatWith(one); resp.StatusCode != http.StatusOK {
		t.Errorf("after Close: status = %d (%s), want 200 (no limiter left)", resp.StatusCode, body)
	}
}

// TestTokenRateLimitStores: the stores of Deps.Limiters are used (one per
// rate, made once); a maker that fails lets the request through and says
// so in the log, as a limiter that cannot answer does.
func TestTokenRateLimitStores(t *testing.T) {
	var made []int
	e := newEnv(t, envOptions{limiters: func(perMinute int) (limiter.Store, error) {
		made = append(made, perMinute) // under tokenLimits.mu
		return ratelimit.Memory(uint64(perMinute), time.Minute)
	}})
	two := e.addToken("two a minute", withRate(2))
	for i := range 2 {
		if resp, body := e.chatWith(two); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status = %d (%s), want 200", i+1, resp.StatusCode, body)
		}
	}
	if resp, _ := e.chatWith(two); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("after 2: status = %d, want 429", resp.StatusCode)
	}
	if !slices.Equal(made, []int{2}) {
		t.Errorf("stores made for rates %v, want one for 2", made)
	}

	var logs logtest.Buffer
	f := newEnv(t, envOptions{
		logHandler: slog.NewJSONHandler(&logs, nil),
		limiters: func(int) (limiter.Store, error) {
			return nil, errors.New("no limiter here")
		},
	})
	one := f.addToken("one a minute", withRate(1))
	for i := range 2 {
		if resp, body := f.chatWith(one); resp.StatusCode != http.StatusOK {
			t.Errorf("request %d with no limiter store: status = %d (%s), want 200", i+1, resp.StatusCode, body)
		}
	}
	if !strings.Contains(logs.String(), "token rate limit not checked") || !strings.Contains(logs.String(), "no limiter here") {
		t.Errorf("no warning about the unchecked limit in the log:\n%s", logs.String())
	}
}

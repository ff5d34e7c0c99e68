package adminui

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

func TestCheckCredentialAPI(t *testing.T) {
	t.Parallel()
	client, gw := fakeChecker(t,
		fake.Credential{Email: "ok@example.com", Token: atlassianToken, CloudID: "0b1c2d3e-0000-4000-8000-000000000001"},
		fake.Credential{Email: "daily@example.com", Token: atlassianToken, Default: fake.Behavior{Fault: fake.RateLimitDaily}},
		fake.Credential{Email: "blocked@example.com", Token: atlassianToken, Default: fake.Behavior{Fault: fake.UserBlocked}},
	)
	e := newEnv(t, envOptions{checker: client})
	c := e.loggedIn(testPassword)

	good := []struct {
		name    string
		body    map[string]any
		ok      bool
		status  string
		outcome string
		retry   int64
	}{
		{"accepted", map[string]any{"email": "ok@example.com", "token": atlassianToken}, true, "OK", "", 0},
		{"accepted with cloud id", map[string]any{"email": "ok@example.com", "token": atlassianToken, "cloud_id": "0B1C2D3E-0000-4000-8000-000000000001"}, true, "OK", "", 0},
		{"out of daily credits", map[string]any{"email": "daily@example.com", "token": atlassianToken}, true, "RATE_LIMITED", "", 3600},
		{"unknown token", map[string]any{"email": "ok@example.com", "token": atlassianToken + "x"}, false, "", "unauthorized", 0},
		{"blocked", map[string]any{"email": "blocked@example.com", "token": atlassianToken}, false, "", "forbidden", 0},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			res := c.do("POST", "/api/credentials/check", tc.body, nil)
			if res.status != http.StatusOK {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			var got CheckResult
			res.decode(t, &got)
			if got.OK != tc.ok || got.Status != tc.status || got.Outcome != tc.outcome || got.RetryAfterSeconds != tc.retry || got.Message == "" {
				t.Errorf("result = %+v, want ok=%v status=%q outcome=%q retry=%d", got, tc.ok, tc.status, tc.outcome, tc.retry)
			}
			if tc.ok && (got.Balance == nil || got.Balance.MonthlyTotal != 2000) {
				t.Errorf("balance = %+v, want the fake's 2000 monthly credits", got.Balance)
			}
			if strings.Contains(string(res.body), atlassianToken[4:len(atlassianToken)-4]) {
				t.Error("the answer shows the token")
			}
		})
	}
	// The check sent exactly the credential given, Basic auth included.
	last, ok := gw.LastRequest()
	if !ok || last.Email != "blocked@example.com" || last.Path != "/rovodev/v3/credits/check" {
		t.Errorf("last upstream request = %+v", last)
	}

	bad := []struct {
		name   string
		body   any
		hdr    map[string]string
		status int
		code   string
		param  string
	}{
		{"no email", map[string]any{"token": atlassianToken}, nil, 400, "invalid_value", "email"},
		{"bad email", map[string]any{"email": "x", "token": atlassianToken}, nil, 400, "invalid_value", "email"},
		{"no token", map[string]any{"email": "ok@example.com"}, nil, 400, "invalid_value", "token"},
		{"bad cloud id", map[string]any{"email": "ok@example.com", "token": atlassianToken, "cloud_id": "x"}, nil, 400, "invalid_value", "cloud_id"},
		{"label is not checked", map[string]any{"email": "ok@example.com", "token": atlassianToken, "label": "x"}, nil, 400, "unknown_field", "label"},
		{"wrong type", `{"email":1}`, nil, 400, "invalid_type", "email"},
		{"not JSON", `email=x`, map[string]string{"Content-Type": formType}, 415, "unsupported_media_type", ""},
	}
	before := len(gw.Requests())
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, c.do("POST", "/api/credentials/check", tc.body, tc.hdr), tc.status, tc.code, tc.param)
		})
	}
	if n := len(gw.Requests()) - before; n != 0 {
		t.Errorf("bad input reached the upstream %d times", n)
	}

	t.Run("unreachable", func(t *testing.T) {
		client, gw := fakeChecker(t)
		gw.HTTP.Close()
		e := newEnv(t, envOptions{checker: client})
		res := e.loggedIn(testPassword).do("POST", "/api/credentials/check", map[string]any{"email": "ok@example.com", "token": atlassianToken}, nil)
		var got CheckResult
		res.decode(t, &got)
		if res.status != 200 || got.OK || got.Outcome != "transport_error" {
			t.Errorf("answer = %d %+v, want 200 transport_error", res.status, got)
		}
		if strings.Contains(string(res.body), "127.0.0.1") {
			t.Errorf("the answer leaks the transport error: %s", res.body)
		}
	})
	t.Run("no checker", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		res := e.loggedIn(testPassword).do("POST", "/api/credentials/check", map[string]any{"email": "ok@example.com", "token": atlassianToken}, nil)
		wantError(t, res, 503, "checker_unavailable", "")
	})
}

func TestCheckVerdicts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status string
		ok     bool
		want   string
	}{
		{"OK", true, "accepted"},
		{"RATE_LIMITED", true, "rate limited"},
		{"UNKNOWN", false, "status UNKNOWN"},
		{"<script>", false, "status unknown"},
		{"", false, "status unknown"},
	} {
		got := accepted(&gateway.Credits{Status: tc.status})
		if got.OK != tc.ok || !strings.Contains(got.Message, tc.want) {
			t.Errorf("%q: %+v, want ok=%v and %q", tc.status, got, tc.ok, tc.want)
		}
	}
	expired, cancel := context.WithTimeout(context.Background(), -time.Second)
	defer cancel()
	for _, tc := range []struct {
		ctx     context.Context
		err     error
		outcome string
		want    string
		retry   int64
	}{
		{context.Background(), &gateway.Error{Status: 401, Kind: pool.OutcomeUnauthorized}, "unauthorized", "401", 0},
		{context.Background(), &gateway.Error{Status: 403, Kind: pool.OutcomeForbidden}, "forbidden", "lack access", 0},
		{context.Background(), &gateway.Error{Status: 403, Kind: pool.OutcomeForbidden, Code: gateway.CodeUserBlocked}, "forbidden", "blocked", 0},
		{context.Background(), &gateway.Error{Status: 429, Kind: pool.OutcomeRateLimited, Retry: 7 * time.Second}, "rate_limited", "rate limiting", 7},
		{context.Background(), &gateway.Error{Status: 429, Kind: pool.OutcomeQuotaExhausted, Retry: time.Hour}, "quota_exhausted", "no credits", 3600},
		{context.Background(), &gateway.Error{Status: 502, Kind: pool.OutcomeServerError}, "server_error", "server error", 0},
		{context.Background(), &gateway.Error{Kind: pool.OutcomeStreamBroken}, "server_error", "server error", 0},
		{context.Background(), &gateway.Error{Status: 400, Kind: pool.OutcomeClientError}, "client_error", "refused the check", 0},
		{context.Background(), &gateway.Error{Kind: pool.OutcomeTimeout}, "timeout", "in time", 0},
		{context.Background(), &gateway.Error{Kind: pool.OutcomeTransport, Err: errors.New("dial tcp 10.0.0.1:443: refused")}, "transport_error", "could not be reached", 0},
		{context.Background(), &gateway.Error{Kind: pool.OutcomeCanceled}, "unknown", "The check failed.", 0},
		{expired, context.DeadlineExceeded, "timeout", "in time", 0},
		{context.Background(), errors.New("something else"), "transport_error", "could not be reached", 0},
	} {
		got := refusal(tc.ctx, tc.err)
		if got.OK || got.Outcome != tc.outcome || !strings.Contains(got.Message, tc.want) || got.RetryAfterSeconds != tc.retry {
			t.Errorf("%v: %+v, want outcome %s, %q, retry %d", tc.err, got, tc.outcome, tc.want, tc.retry)
		}
		if strings.Contains(got.Message, "10.0.0.1") {
			t.Errorf("the verdict shows the error's detail: %q", got.Message)
		}
	}
}

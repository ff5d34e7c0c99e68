package main

import (
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// TestCreditChecker: the background re-check of a credential keeps a
// rate-limited or blocked one out of rotation and lets a good one back.
func TestCreditChecker(t *testing.T) {
	cases := []struct {
		name      string
		behavior  fake.Behavior
		want      pool.Outcome
		wantRetry time.Duration
	}{
		{"ok", fake.Behavior{}, pool.OutcomeSuccess, 0},
		{"rate limited", fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterSeconds: 42}, pool.OutcomeRateLimited, 42 * time.Second},
		{"unauthorized", fake.Behavior{Fault: fake.Unauthorized}, pool.OutcomeUnauthorized, 0},
		{"blocked", fake.Behavior{Fault: fake.UserBlocked}, pool.OutcomeForbidden, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			gw := fake.Start(t, fake.Options{Credentials: []fake.Credential{{Email: "a@example.com", Token: "tok", Default: c.behavior}}})
			client, err := gateway.NewClient(gateway.Config{BaseURL: gw.URL}, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := creditChecker{client}.Check(t.Context(), pool.Credential{ID: "a", Email: "a@example.com", Token: "tok"})
			if got != c.want {
				t.Errorf("outcome = %v (err %v), want %v", got, err, c.want)
			}
			if retry := pool.RetryAfterOf(err); retry != c.wantRetry {
				t.Errorf("retry after = %v, want %v", retry, c.wantRetry)
			}
		})
	}
}

package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/usage"
)

// attemptNotes is a UsageRecorder that keeps the failed attempts' texts.
type attemptNotes struct {
	UsageRecorder
	msgs []string
}

func (n *attemptNotes) RecordAttemptFailure(_, _, msg string) { n.msgs = append(n.msgs, msg) }

// The text kept for a failed attempt, for each kind of error an attempt
// can end with: a gateway error with and without an HTTP status, an error
// the gateway did not classify, and the ones that are not the upstream's
// trouble (not kept). A long upstream message is clipped.
func TestAttemptFailedText(t *testing.T) {
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	long := strings.Repeat("x", 400)
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want string // "": not kept
	}{
		{"with a status", t.Context(), &gateway.Error{Status: 503, Kind: pool.OutcomeServerError, Message: "busy"},
			"server_error (HTTP 503): busy"},
		{"no response", t.Context(), &gateway.Error{Kind: pool.OutcomeTimeout, Message: "no answer", Err: context.DeadlineExceeded},
			"timeout: no answer"},
		{"wrapped and long", t.Context(), fmt.Errorf("upstream: %w", &gateway.Error{Status: 429, Kind: pool.OutcomeRateLimited, Message: long}),
			clip("rate_limited (HTTP 429): "+long, 300)},
		{"not classified", t.Context(), errors.New("connection reset"), "transport_error: the upstream could not be reached"},
		{"client error", t.Context(), &gateway.Error{Status: 400, Kind: pool.OutcomeClientError, Message: "bad"}, ""},
		{"client gone", canceled, errors.New("connection reset"), ""},
		{"no error", t.Context(), nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &attemptNotes{UsageRecorder: usage.New(nil, usage.Config{})}
			a := &API{usage: n}
			a.attemptFailed(tt.ctx, pool.Credential{ID: "c1"}, "m", tt.err)
			switch {
			case tt.want == "" && len(n.msgs) != 0:
				t.Errorf("kept %q, want nothing", n.msgs)
			case tt.want != "" && (len(n.msgs) != 1 || n.msgs[0] != tt.want):
				t.Errorf("kept %q, want %q", n.msgs, tt.want)
			}
		})
	}
}

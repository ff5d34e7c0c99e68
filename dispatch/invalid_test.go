package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// creditsChecker re-checks credentials through the real gateway client's
// credits/check, mapped onto outcomes as the program's checker maps an
// upstream refusal (401, 403 USER_BLOCKED).
type creditsChecker struct{ c *gateway.Client }

func (k creditsChecker) Check(ctx context.Context, cred pool.Credential) (pool.Outcome, error) {
	if _, err := k.c.CheckCredits(ctx, cred); err != nil {
		var ge *gateway.Error
		if errors.As(err, &ge) {
			return ge.Outcome(), err
		}
		return pool.OutcomeTransport, err
	}
	return pool.OutcomeSuccess, nil
}

// TestAllInvalid, over real HTTP to the fake gateway: once every enabled
// credential is invalid — two after a 401, one after a 403 whose credits
// check said USER_BLOCKED — a request gets CredentialsInvalid at once,
// without a Retry-After and without calling the upstream; once one of
// them cools down instead, the answer is AllCooling with a Retry-After again.
func TestAllInvalid(t *testing.T) {
	gw := fake.Start(t, fake.Options{Credentials: []fake.Credential{
		{ID: "c00", Email: "c00@example.com", Token: "atl-c00-secret", Default: fake.Behavior{Fault: fake.Unauthorized}},
		{ID: "c01", Email: "c01@example.com", Token: "atl-c01-secret", Default: fake.Behavior{Fault: fake.UserBlocked}},
		{ID: "c02", Email: "c02@example.com", Token: "atl-c02-secret", Default: fake.Behavior{Fault: fake.Unauthorized}},
	}})
	client, err := gateway.NewClient(gateway.Config{BaseURL: gw.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	creds := specs(3, 4)
	for i := range creds {
		creds[i].Credential.Token = "atl-" + creds[i].ID + "-secret"
	}
	e := newPoolEnv(t, creds, pool.Deps{Checker: creditsChecker{client}}, Config{}, Deps{})
	m, ok := gateway.DefaultCatalog().Lookup("claude-sonnet-4")
	if !ok {
		t.Fatal("claude-sonnet-4 is not in the catalog")
	}
	req := &gateway.ChatRequest{Model: "claude-sonnet-4",
		Messages: []gateway.Message{{Role: "user", Content: json.RawMessage(`"Hello"`)}}}
	call := func(ctx context.Context, cred pool.Credential) error {
		_, err := client.Complete(ctx, cred, m, req)
		return err
	}
	chats := func() int {
		return len(slices.DeleteFunc(gw.Requests(), func(r fake.Request) bool { return r.Path != gateway.PathUnifiedChat }))
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("after 5 s: %s", what)
			}
		}
	}
	waitFor("the pool runs", func() bool {
		l, err := e.p.Acquire(nil, 1)
		l.Done(pool.OutcomeCanceled, pool.Usage{})
		return !errors.Is(err, pool.ErrBusy)
	})

	// The first request meets every refusal (its answer depends on the
	// order: a 403 last is the client's answer); the USER_BLOCKED check
	// then makes c01 invalid.
	if _, err := e.d.Do(t.Context(), call); err == nil {
		t.Fatal("first request: got success, want a failure")
	}
	if got := chats(); got != 3 {
		t.Fatalf("first request: %d chat requests upstream, want 3", got)
	}
	waitFor("every credential invalid", func() bool { return e.p.Availability().Invalid == 3 })
	if st := e.status(t, "c01"); st.Reason != pool.OutcomeForbidden.String() {
		t.Errorf("c01: got reason %q, want forbidden (USER_BLOCKED)", st.Reason)
	}

	_, err = e.d.Do(t.Context(), call)
	var de *Error
	if !errors.As(err, &de) || de.Kind != CredentialsInvalid {
		t.Fatalf("got %v, want CredentialsInvalid", err)
	}
	want := "all 3 credentials are invalid (the upstream refused their tokens); an administrator must re-enable or replace them"
	if de.Message != want || de.RetryAfter != 0 {
		t.Errorf("got %q with Retry-After %v, want %q without one", de.Message, de.RetryAfter, want)
	}
	if resultOf(err) != "credentials_invalid" {
		t.Errorf("result label: got %s, want credentials_invalid", resultOf(err))
	}
	if got := chats(); got != 3 {
		t.Errorf("a request with every credential invalid reached the upstream: %d chat requests, want still 3", got)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("the error holds a token: %v", err)
	}

	// c02 is reset and now fails with a 5xx: it cools down, the others stay
	// invalid, and the answer is about the cooling one.
	gw.SetBehavior("c02", fake.Behavior{Fault: fake.Unavailable})
	if err := e.p.Reset("c02"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.Do(t.Context(), call); resultOf(err) != "upstream_failed" {
		t.Fatalf("on c02's 5xx: got %v, want UpstreamFailed", err)
	}
	_, err = e.d.Do(t.Context(), call)
	if !errors.As(err, &de) || de.Kind != AllCooling || de.RetryAfter <= 0 ||
		!strings.HasSuffix(de.Message, "(2 more are invalid)") {
		t.Errorf("got %v (Retry-After %v), want AllCooling with a Retry-After, counting 2 invalid", err, de.RetryAfter)
	}
}

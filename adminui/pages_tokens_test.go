package adminui

import (
	"crypto/sha256"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

var newTokenInput = regexp.MustCompile(`<input id="new-token"[^>]*value="([^"]+)"`)

func TestTokensPageCreate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.pageLoggedIn(testPassword)
	wantPage(t, c.do("GET", "/tokens", nil, nil), http.StatusOK, "No API tokens yet")

	tomorrow := time.Now().UTC().AddDate(0, 0, 1).Format(dayLayout)
	res := c.postTokenForm(url.Values{"name": {"ci <bot>"}, "expires_at": {tomorrow},
		"allowed_models": {"claude-sonnet-4, gpt-5\nclaude-sonnet-4"}, "rate_limit": {"60"}})
	body := wantPage(t, res, http.StatusCreated, `New API token “ci <bot>”`, "Copy it now: it will not be shown again.")
	m := newTokenInput.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("the new token is not shown:\n%s", body)
	}
	plain := m[1]
	if !strings.HasPrefix(plain, auth.TokenPrefix) || !strings.Contains(body, `data-copy="new-token"`) {
		t.Errorf("token %.10s… or its copy button missing", plain)
	}
	for _, f := range tokenFields {
		if v, _ := inputValue(body, f); v != "" {
			t.Errorf("the create form still holds %s=%q after success", f, v)
		}
	}
	ts, err := e.st.ListTokens(t.Context())
	if err != nil || len(ts) != 1 {
		t.Fatalf("tokens = %v, %v", ts, err)
	}
	tok := ts[0]
	sum := sha256.Sum256([]byte(plain))
	wantExpiry, _ := time.Parse(dayLayout, tomorrow)
	if string(tok.Hash) != string(sum[:]) || tok.Name != "ci <bot>" || tok.RateLimit != 60 ||
		!slices.Equal(tok.AllowedModels, []string{"claude-sonnet-4", "gpt-5"}) || !tok.ExpiresAt.Equal(wantExpiry.AddDate(0, 0, 1)) {
		t.Errorf("stored token = %+v", tok)
	}
	if e.changed.Load() != 1 {
		t.Errorf("Changed ran %d times, want 1", e.changed.Load())
	}

	// Shown once: the list never shows it again.
	list := wantPage(t, c.do("GET", "/tokens", nil, nil), http.StatusOK, tok.Prefix+"…", "claude-sonnet-4, gpt-5")
	if strings.Contains(list, plain) || strings.Contains(list, plain[len(tok.Prefix):]) {
		t.Error("the list shows the token")
	}
	if strings.Contains(list, "ci <bot>") {
		t.Error("the name is not escaped")
	}

	bad := []struct {
		name  string
		vals  url.Values
		field string
		text  string
	}{
		{"empty name", url.Values{"name": {"  "}}, "name", "Name is required"},
		{"long name", url.Values{"name": {strings.Repeat("n", 101)}}, "name", "Name must be at most 100 characters"},
		{"bad expiry", url.Values{"name": {"x"}, "expires_at": {"next week"}}, "expires_at", "Enter a date as YYYY-MM-DD"},
		{"past expiry", url.Values{"name": {"x"}, "expires_at": {"2020-01-01"}}, "expires_at", "Expires_at must be in the future"},
		{"rate limit not a number", url.Values{"name": {"x"}, "rate_limit": {"ten"}}, "rate_limit", "Enter a whole number of requests per minute"},
		{"negative rate limit", url.Values{"name": {"x"}, "rate_limit": {"-1"}}, "rate_limit", "Rate_limit must be between 0"},
		{"huge rate limit", url.Values{"name": {"x"}, "rate_limit": {"1000001"}}, "rate_limit", "Rate_limit must be between 0"},
		{"too many models", url.Values{"name": {"x"}, "allowed_models": {strings.Repeat("m,", 101)}}, "allowed_models", "At most 100 allowed models"},
		{"control character in a model", url.Values{"name": {"x"}, "allowed_models": {"a\x01b"}}, "allowed_models", "Allowed model names must not contain spaces"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			body := wantPage(t, c.postTokenForm(tc.vals), http.StatusBadRequest, tc.text)
			if !regexpMatch(`name="`+tc.field+`"[^>]*aria-invalid="true"`, body) {
				t.Errorf("field %s is not marked invalid", tc.field)
			}
			for _, f := range tokenFields {
				if v := tc.vals.Get(f); v != "" && !strings.ContainsRune(v, '\x01') {
					wantValue(t, body, f, v)
				}
			}
			if newTokenInput.MatchString(body) {
				t.Error("a refused create shows a token")
			}
		})
	}
	t.Run("every bad field at once", func(t *testing.T) {
		wantPage(t, c.postTokenForm(url.Values{"name": {""}, "expires_at": {"x"}, "rate_limit": {"y"}}), http.StatusBadRequest,
			"Name is required", "Enter a date as YYYY-MM-DD", "Enter a whole number")
	})
	if ts, _ := e.st.ListTokens(t.Context()); len(ts) != 1 {
		t.Errorf("%d tokens stored, want 1: a refused create saved something", len(ts))
	}
}

func TestTokensPageUsageLimitRevoke(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	api := e.loggedIn(testPassword)
	res := api.do("POST", "/api/tokens", map[string]any{"name": "busy"}, nil)
	var created tokenCreated
	res.decode(t, &created)
	today := time.Now().UTC().Format(dayLayout)
	if err := e.st.AddUsage(t.Context(), []store.Usage{
		{Day: today, CredentialID: "c1", TokenID: created.ID, Model: "m1", Requests: 1200, InputTokens: 5000, OutputTokens: 700},
		{Day: today, CredentialID: "c2", TokenID: created.ID, Model: "m2", Requests: 34, InputTokens: 1, OutputTokens: 2},
		{Day: "2001-01-01", TokenID: created.ID, Model: "m1", Requests: 99999},
	}); err != nil {
		t.Fatal(err)
	}
	c := e.pageLoggedIn(testPassword)
	row := func() string {
		t.Helper()
		body := wantPage(t, c.do("GET", "/tokens", nil, nil), http.StatusOK)
		i := strings.Index(body, `data-token="busy"`)
		if i < 0 {
			t.Fatalf("no row:\n%s", body)
		}
		return body[i : i+strings.Index(body[i:], "</tr>")]
	}
	if r := row(); !strings.Contains(r, "1,234 req") || !strings.Contains(r, "5,703 tokens") {
		t.Errorf("today's usage not shown: %s", r)
	}

	wantRedirect(t, c.post("/tokens/"+created.ID+"/limit", url.Values{"rate_limit": {"30"}}), flash("/tokens", "limit"))
	if ts, _ := e.st.ListTokens(t.Context()); ts[0].RateLimit != 30 {
		t.Errorf("rate limit = %d, want 30", ts[0].RateLimit)
	}
	if v, _ := inputValue(row(), "rate_limit"); v != "30" {
		t.Errorf("row shows rate limit %q", v)
	}
	for _, bad := range []string{"x", "-5", "99999999"} {
		body := wantPage(t, c.post("/tokens/"+created.ID+"/limit", url.Values{"rate_limit": {bad}}), http.StatusBadRequest)
		i := strings.Index(body, `data-token="busy"`)
		r := body[i : i+strings.Index(body[i:], "</tr>")]
		if v, _ := inputValue(r, "rate_limit"); v != bad || !strings.Contains(r, `class="field-error"`) {
			t.Errorf("%q: the row does not keep the value with an error: %s", bad, r)
		}
	}
	wantRedirect(t, c.post("/tokens/"+created.ID+"/limit", url.Values{"rate_limit": {""}}), flash("/tokens", "limit"))
	if ts, _ := e.st.ListTokens(t.Context()); ts[0].RateLimit != 0 {
		t.Errorf("a blank rate limit = %d, want 0 (unlimited)", ts[0].RateLimit)
	}
	wantPage(t, c.post("/tokens/tok_nope/limit", url.Values{"rate_limit": {"3"}}), http.StatusNotFound)

	body := wantPage(t, c.post("/tokens/"+created.ID+"/revoke", nil), http.StatusOK, "Revoke the API token busy")
	if !strings.Contains(body, `name="confirmed" value="1"`) {
		t.Errorf("no confirming form: %s", body)
	}
	if ts, _ := e.st.ListTokens(t.Context()); len(ts) != 1 {
		t.Fatal("revoked before confirmation")
	}
	wantRedirect(t, c.post("/tokens/"+created.ID+"/revoke", url.Values{"confirmed": {"1"}}), flash("/tokens", "revoked"))
	if ts, _ := e.st.ListTokens(t.Context()); len(ts) != 0 {
		t.Error("not revoked")
	}
	wantPage(t, c.post("/tokens/"+created.ID+"/revoke", nil), http.StatusNotFound)
	wantPage(t, c.post("/tokens/"+created.ID+"/revoke", url.Values{"confirmed": {"1"}}), http.StatusNotFound)

	t.Run("usage unavailable", func(t *testing.T) {
		var u *unavailableStore
		e := newEnv(t, envOptions{wrapStore: func(s store.Store) store.Store { u = &unavailableStore{Store: s}; return u }})
		c := e.pageLoggedIn(testPassword)
		e.loggedIn(testPassword).do("POST", "/api/tokens", map[string]any{"name": "t"}, nil)
		u.usageDown.Store(true)
		body := wantPage(t, c.do("GET", "/tokens", nil, nil), http.StatusOK, "t")
		if !strings.Contains(body, `<td class="num small nowrap">–</td>`) {
			t.Errorf("unavailable usage is not shown as unknown: %s", body)
		}
	})
}

package adminui

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

func TestUsageAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.loggedIn(testPassword)
	cred := c.addCredential("usage@example.com", atlassianToken)
	c.do("PATCH", "/api/credentials/"+cred.ID, map[string]any{"label": "Team U"}, nil)
	res := c.do("POST", "/api/tokens", map[string]any{"name": "ci"}, nil)
	var tok tokenCreated
	res.decode(t, &tok)

	today := time.Now().UTC()
	day := func(back int) string { return today.AddDate(0, 0, -back).Format(dayLayout) }
	if err := e.st.AddUsage(t.Context(), []store.Usage{
		{Day: day(0), CredentialID: cred.ID, TokenID: tok.ID, Model: "m1", Requests: 10, Failures: 1, InputTokens: 100, OutputTokens: 50},
		{Day: day(0), CredentialID: "", TokenID: tok.ID, Model: "m2", Requests: 2, Failures: 2},
		{Day: day(2), CredentialID: cred.ID, TokenID: "tok_gone", Model: "m1", Requests: 5, InputTokens: 10, OutputTokens: 5},
		{Day: day(7), CredentialID: cred.ID, TokenID: tok.ID, Model: "m1", Requests: 1000}, // outside the default week
	}); err != nil {
		t.Fatal(err)
	}

	res = c.do("GET", "/api/usage", nil, nil)
	if res.status != http.StatusOK {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	var rep UsageReport
	res.decode(t, &rep)
	if rep.Object != "usage" || rep.From != day(6) || rep.To != day(0) || len(rep.ByDay) != 7 {
		t.Fatalf("range = %s..%s with %d days, want the 7 days ending today", rep.From, rep.To, len(rep.ByDay))
	}
	if want := (UsageCounts{Requests: 17, Failures: 3, InputTokens: 110, OutputTokens: 55}); rep.Totals != want {
		t.Errorf("totals = %+v, want %+v", rep.Totals, want)
	}
	wantGroups := func(name string, got []UsageByID, want []UsageByID) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s = %+v, want %+v", name, got, want)
			return
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s[%d] = %+v, want %+v", name, i, got[i], want[i])
			}
		}
	}
	wantGroups("by_credential", rep.ByCredential, []UsageByID{
		{ID: "", UsageCounts: UsageCounts{Requests: 2, Failures: 2}},
		{ID: cred.ID, Name: "Team U", UsageCounts: UsageCounts{Requests: 15, Failures: 1, InputTokens: 110, OutputTokens: 55}},
	})
	wantGroups("by_token", rep.ByToken, []UsageByID{
		{ID: tok.ID, Name: "ci", UsageCounts: UsageCounts{Requests: 12, Failures: 3, InputTokens: 100, OutputTokens: 50}},
		{ID: "tok_gone", UsageCounts: UsageCounts{Requests: 5, InputTokens: 10, OutputTokens: 5}},
	})
	wantGroups("by_model", rep.ByModel, []UsageByID{
		{ID: "m1", UsageCounts: UsageCounts{Requests: 15, Failures: 1, InputTokens: 110, OutputTokens: 55}},
		{ID: "m2", UsageCounts: UsageCounts{Requests: 2, Failures: 2}},
	})
	for i, d := range rep.ByDay {
		var want UsageCounts
		switch d.Day {
		case day(0):
			want = UsageCounts{Requests: 12, Failures: 3, InputTokens: 100, OutputTokens: 50}
		case day(2):
			want = UsageCounts{Requests: 5, InputTokens: 10, OutputTokens: 5}
		}
		if d.Day != day(6-i) || d.UsageCounts != want {
			t.Errorf("by_day[%d] = %+v, want %s with %+v", i, d, day(6-i), want)
		}
	}

	ranges := []struct {
		name     string
		query    string
		from, to string
		requests int64
	}{
		{"one day", "from=" + day(2) + "&to=" + day(2), day(2), day(2), 5},
		{"from only", "from=" + day(7), day(7), day(0), 1017},
		{"to only", "to=" + day(1), day(7), day(1), 1005},
		{"366 days", "from=2024-01-01&to=2024-12-31", "2024-01-01", "2024-12-31", 0},
	}
	for _, tc := range ranges {
		t.Run(tc.name, func(t *testing.T) {
			res := c.do("GET", "/api/usage?"+tc.query, nil, nil)
			var rep UsageReport
			res.decode(t, &rep)
			if res.status != 200 || rep.From != tc.from || rep.To != tc.to || rep.Totals.Requests != tc.requests {
				t.Errorf("%d %s..%s %d requests, want %s..%s %d", res.status, rep.From, rep.To, rep.Totals.Requests, tc.from, tc.to, tc.requests)
			}
		})
	}

	bad := []struct {
		name, query, param string
	}{
		{"bad from", "from=yesterday", "from"},
		{"bad to", "to=2024-13-01", "to"},
		{"not padded", "from=2024-1-1", "from"},
		{"a time", "from=2024-01-01T00:00:00Z", "from"},
		{"reversed", "from=2024-02-01&to=2024-01-01", "from"},
		{"367 days", "from=2024-01-01&to=2025-01-01", "from"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, c.do("GET", "/api/usage?"+tc.query, nil, nil), 400, "invalid_value", tc.param)
		})
	}
	t.Run("store unavailable", func(t *testing.T) {
		var u *unavailableStore
		e := newEnv(t, envOptions{wrapStore: func(s store.Store) store.Store { u = &unavailableStore{Store: s}; return u }})
		c := e.loggedIn(testPassword)
		u.usageDown.Store(true)
		wantError(t, c.do("GET", "/api/usage", nil, nil), 503, "store_unavailable", "")
	})
}

func TestParseUsageRange(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 3, 1, 23, 59, 0, 0, time.FixedZone("east", 5*3600)) // 18:59 UTC
	from, to, err := parseUsageRange(url.Values{}, now)
	if err != nil || from != "2030-02-23" || to != "2030-03-01" {
		t.Errorf("default = %s..%s, %v", from, to, err)
	}
}

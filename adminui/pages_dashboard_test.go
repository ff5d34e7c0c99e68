package adminui

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/store"
	"github.com/atlassian-proxy/atlassian-proxy/usage"
)

func TestDashboard(t *testing.T) {
	t.Parallel()
	now := time.Now()
	rec := usage.New(nil, usage.Config{Now: func() time.Time { return now }}) // one minute, whatever the wall clock does
	e := newEnv(t, envOptions{activity: rec})
	api := e.loggedIn(testPassword)
	ready := api.addCredential("ready@example.com", atlassianToken)
	cooling := api.addCredential("cooling@example.com", atlassianToken)
	invalid := api.addCredential("invalid@example.com", atlassianToken)
	disabled := api.addCredential("disabled@example.com", atlassianToken)
	api.do("PATCH", "/api/credentials/"+ready.ID, map[string]any{"label": "Team <A>"}, nil)
	api.do("PATCH", "/api/credentials/"+disabled.ID, map[string]any{"enabled": false}, nil)
	for _, s := range []store.CredentialState{
		{CredentialID: cooling.ID, State: store.StateCooling, Reason: "rate_limited", Until: now.Add(time.Hour), UpdatedAt: now},
		{CredentialID: invalid.ID, State: store.StateInvalid, Reason: "unauthorized", UpdatedAt: now},
	} {
		if err := e.st.SetCredentialState(t.Context(), s); err != nil {
			t.Fatal(err)
		}
	}
	e.resync()
	for i := range 40 {
		ev := usage.Event{CredentialID: ready.ID, TokenID: "tok_1", Model: "claude-sonnet-4", InputTokens: 10, OutputTokens: 5}
		if i%10 == 0 {
			ev.Failed, ev.Error = true, fmt.Sprintf("server_error: <b>upstream</b> answered 502 (%d)", i)
		}
		rec.Record(ev)
	}
	// Three failed attempts that failover absorbed (the requests above
	// were served by another credential): counted apart, and marked as
	// attempts among the recent errors.
	for i := range 3 {
		rec.RecordAttemptFailure(cooling.ID, "claude-sonnet-4", fmt.Sprintf("rate_limited: <i>429</i> attempt %d", i))
	}
	today := now.UTC().Format(dayLayout)
	if err := e.st.AddUsage(t.Context(), []store.Usage{
		{Day: today, CredentialID: ready.ID, TokenID: "tok_1", Model: "m", Requests: 7, InputTokens: 100000, OutputTokens: 23456},
		{Day: today, CredentialID: cooling.ID, TokenID: "tok_2", Model: "m", Requests: 3, InputTokens: 1, OutputTokens: 1},
		{Day: "2001-01-01", TokenID: "tok_1", Model: "m", Requests: 1, InputTokens: 999999},
	}); err != nil {
		t.Fatal(err)
	}

	c := e.pageLoggedIn(testPassword)
	res := c.do("GET", "/", nil, nil)
	body := wantPage(t, res, http.StatusOK, "Requests per minute", "123,458", "10 requests")
	for stat, want := range map[string]string{"ready": "1", "cooling": "1", "invalid": "1", "disabled": "1", "hour-requests": "40",
		"tokens-today": "123,458", "hour-attempt-failures": "3"} {
		if !strings.Contains(body, `data-stat="`+stat+`">`+want+`<`) {
			t.Errorf("stat %s is not %s", stat, want)
		}
	}
	if !strings.Contains(body, "10.0%") {
		t.Error("error rate 10.0% not shown")
	}
	// The chart: 60 minutes, the current one with 40 requests of which 4 failed.
	if n := strings.Count(body, `<g class="minute">`); n != 60 {
		t.Errorf("chart has %d minutes, want 60", n)
	}
	if !strings.Contains(body, "Upstream errors absorbed by failover, last hour") {
		t.Error("the absorbed upstream errors have no label")
	}
	if !regexp.MustCompile(`<title>\d\d:\d\d UTC: 40 requests, 4 failed, 600 tokens, 3 failed upstream attempts</title>`).MatchString(body) {
		t.Error("the current minute's bar has no tooltip with its counts")
	}
	if !strings.Contains(body, `<rect class="fail"`) || !strings.Contains(body, `<rect class="req"`) {
		t.Error("no request or failure bars")
	}
	for _, want := range []string{"cooling@example.com", "invalid@example.com", "rate_limited", "unauthorized", "data-countdown="} {
		if !strings.Contains(body, want) {
			t.Errorf("needs-attention lacks %q", want)
		}
	}
	if strings.Contains(body, "disabled@example.com") {
		t.Error("a disabled credential is listed as needing attention")
	}
	// Recent errors: newest first, escaped, the credential by its label.
	if !strings.Contains(body, "server_error: &lt;b&gt;upstream&lt;/b&gt; answered 502 (30)") || strings.Contains(body, "<b>upstream</b>") {
		t.Error("recent errors missing or not escaped")
	}
	if i30, i0 := strings.Index(body, "(30)"), strings.Index(body, "(0)"); i30 < 0 || i0 < 0 || i30 > i0 {
		t.Error("recent errors are not newest first")
	}
	if !strings.Contains(body, "Team &lt;A&gt;") {
		t.Error("the error's credential is not named by its label")
	}
	// Each recent error says what it was: a failed attempt after which the
	// request moved on, or a failed request.
	rows := regexp.MustCompile(`(?s)<tr( data-attempt)?><td class="small nowrap">.*?</tr>`).FindAllStringSubmatch(body, -1)
	attempts, requests := 0, 0
	for _, row := range rows {
		isAttempt := row[1] != ""
		switch {
		case isAttempt && strings.Contains(row[0], "rate_limited: &lt;i&gt;429&lt;/i&gt; attempt") &&
			strings.Contains(row[0], "attempt failed, request moved on") && strings.Contains(row[0], "cooling@example.com"):
			attempts++
		case !isAttempt && strings.Contains(row[0], "answered 502") && strings.Contains(row[0], ">request failed<"):
			requests++
		default:
			t.Errorf("recent error row not marked as what it is: %s", row[0])
		}
	}
	if attempts != 3 || requests != 4 {
		t.Errorf("recent errors: %d attempts and %d requests marked, want 3 and 4", attempts, requests)
	}
	if i := strings.Index(body, "attempt 2"); i < 0 || i > strings.Index(body, "(30)") {
		t.Error("the latest failed attempt is not listed first")
	}
	if !strings.Contains(body, `data-refresh="/admin/fragments/dashboard"`) {
		t.Error("the live part does not refresh")
	}

	t.Run("fragment", func(t *testing.T) {
		res := c.do("GET", "/fragments/dashboard", nil, nil)
		frag := wantPage(t, res, http.StatusOK, "Requests per minute")
		if strings.Contains(frag, "<html") || strings.Contains(frag, "<nav") || strings.Contains(frag, "csrf_token") {
			t.Errorf("the fragment is more than the live part: %.200s", frag)
		}
		assertSecurityHeaders(t, res, false)
		rec.Record(usage.Event{CredentialID: ready.ID, Model: "m"})
		rec.RecordAttemptFailure(invalid.ID, "m", "unauthorized: refused")
		frag = string(c.do("GET", "/fragments/dashboard", nil, nil).body)
		if !strings.Contains(frag, `data-stat="hour-requests">41<`) {
			t.Error("the fragment does not show new traffic")
		}
		if !strings.Contains(frag, `data-stat="hour-attempt-failures">4<`) || !strings.Contains(frag, "unauthorized: refused") {
			t.Error("the fragment does not show the new failed attempt")
		}
	})
	t.Run("without pool, activity and usage", func(t *testing.T) {
		var u *unavailableStore
		e := newEnv(t, envOptions{noPool: true, wrapStore: func(s store.Store) store.Store { u = &unavailableStore{Store: s}; return u }})
		c := e.pageLoggedIn(testPassword)
		u.usageDown.Store(true)
		body := wantPage(t, c.do("GET", "/", nil, nil), http.StatusOK, "The credential pool is not running", "No traffic data", "usage unavailable")
		if strings.Contains(body, "<svg") {
			t.Error("a chart without data")
		}
		if !strings.Contains(body, `data-stat="hour-attempt-failures">–<`) {
			t.Error("without activity the absorbed errors are not shown as unknown")
		}
	})
	t.Run("quiet", func(t *testing.T) {
		e := newEnv(t, envOptions{activity: usage.New(nil, usage.Config{})})
		c := e.pageLoggedIn(testPassword)
		body := wantPage(t, c.do("GET", "/", nil, nil), http.StatusOK, "Nothing: every enabled credential is ready.", "None recently.", "–")
		if !strings.Contains(body, `data-stat="hour-attempt-failures">0<`) {
			t.Error("a quiet hour does not show 0 absorbed errors")
		}
	})
}

func TestNewChart(t *testing.T) {
	t.Parallel()
	start := time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)
	mins := make([]usage.Minute, 60)
	for i := range mins {
		mins[i].Start = start.Add(time.Duration(i) * time.Minute)
	}
	mins[59] = usage.Minute{Start: mins[59].Start, Requests: 30, Failures: 10, InputTokens: 5, OutputTokens: 7, AttemptFailures: 2}
	mins[0].Requests = 15
	c := newChart(mins)
	if c.Max != 40 || c.Half != 20 {
		t.Errorf("scale = %d/%d, want 40/20", c.Max, c.Half)
	}
	last := c.Bars[59]
	if got, want := last.H, (chartBottom-chartTop)*30/40; got != want {
		t.Errorf("bar height = %v, want %v", got, want)
	}
	if last.Y+last.H != chartBottom || last.FY+last.FH != chartBottom || last.FH*3 != last.H {
		t.Errorf("bar geometry = %+v", last)
	}
	if last.X+last.W > chartRight || c.Bars[0].X < chartLeft {
		t.Errorf("bars outside the plot: first %+v, last %+v", c.Bars[0], last)
	}
	if last.Title != "03:59 UTC: 30 requests, 10 failed, 12 tokens, 2 failed upstream attempts" {
		t.Errorf("title = %q", last.Title)
	}
	if c.Bars[1].H != 0 {
		t.Errorf("an empty minute has a bar: %+v", c.Bars[1])
	}
	if !strings.Contains(c.Summary, "45 in total, 10 failed, at most 30") {
		t.Errorf("summary = %q", c.Summary)
	}
	for _, tc := range []struct{ in, want int64 }{{0, 2}, {1, 2}, {2, 2}, {3, 4}, {5, 10}, {11, 20}, {21, 40}, {41, 100}, {1001, 2000}} {
		if got := niceCeil(tc.in); got != tc.want {
			t.Errorf("niceCeil(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestPageHelpers(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct{ got, want string }{
		{groupDigits(0), "0"}, {groupDigits(999), "999"}, {groupDigits(1000), "1,000"}, {groupDigits(-1234567), "-1,234,567"},
		{percent(1, 3), "33.3%"}, {percent(0, 0), "–"},
		{ago(now, time.Time{}), "never"}, {ago(now, now.Add(-42*time.Second)), "42 s ago"},
		{ago(now, now.Add(-3*time.Minute-5*time.Second)), "3 min 5 s ago"}, {ago(now, now.Add(-12*time.Minute)), "12 min ago"},
		{ago(now, now.Add(-5*time.Hour)), "5 h ago"}, {ago(now, now.Add(-72*time.Hour)), "3 days ago"}, {ago(now, now.Add(time.Hour)), "0 s ago"},
		{until(now, now.Add(90*time.Second)), "in 1 min 30 s"}, {until(now, now.Add(-time.Second)), "now"},
		{formatUTC(time.Time{}), "–"}, {formatUTC(now.In(time.FixedZone("X", 3600))), "2030-01-01 12:00 UTC"},
		{capitalize("email is required"), "Email is required"}, {capitalize(""), ""}, {capitalize("été"), "Été"},
	}
	for i, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("case %d: got %q, want %q", i, tc.got, tc.want)
		}
	}
	if _, err := num(1.5); err == nil {
		t.Error("num accepted a float")
	}
}

// The pool package's state names are the badge classes the CSS colours.
func TestStateBadgesStyled(t *testing.T) {
	t.Parallel()
	css, err := webFS.ReadFile("web/static/admin.css")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{pool.StateReady, pool.StateCooling, pool.StateInvalid, pool.StateDisabled, "unknown"} {
		if !strings.Contains(string(css), ".badge."+s) {
			t.Errorf("admin.css has no style for the %s badge", s)
		}
	}
}

package main

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/atlassian-proxy/atlassian-proxy/adminui"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/usage"
)

// TestAdminUIInBrowser walks the admin pages in a real headless Chromium
// against the real binary and the fake gateway: log in with the generated
// password, be sent to change it (a mismatch first), check and add a
// credential, see it ready on the dashboard, bulk-add and disable others,
// create an API token and read it once, serve chat completions with it
// while the dashboard refreshes itself, revoke the token (confirm dialog)
// and see the next call refused, log out. It saves screenshots of the
// dashboard and the credentials page (UPDATE_SCREENSHOTS=1 also writes
// them to docs/screenshots).
func TestAdminUIInBrowser(t *testing.T) {
	const (
		uiToken   = "ATATT3xFfGF0-ui-credential-token-0123456789=ABCD"
		busyToken = "ATATT3xFfGF0-busy-credential-token-0123456789=EFGH"
		newPass   = "a long and memorable passphrase"
	)
	gw := fake.Start(t, fake.Options{Credentials: []fake.Credential{
		{ID: "ui", Email: "ui@example.com", Token: uiToken},
		{ID: "busy", Email: "busy@example.com", Token: busyToken,
			Default: fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterSeconds: 600}},
		// revoked@example.com is added with a token the gateway does not
		// know: it turns invalid once tried.
		{ID: "revoked", Email: "revoked@example.com", Token: "a-token-the-proxy-never-has-0123456789"},
	}})
	p := startProxy(t, map[string]string{"UPSTREAM_URL": gw.URL})
	generated := p.generatedPassword(t)
	b := newBrowser(t, 60*time.Second)
	start := time.Now()
	admin := p.URL + "/admin"

	// Every page leads to the login page; the generated password leads to
	// the password page, and so does every other page until it is changed.
	b.do("open the dashboard", chromedp.Navigate(admin+"/"), chromedp.WaitVisible(chromedp.ID("password")))
	if got := b.path(); got != "/admin/login" {
		t.Fatalf("without a session: at %s, want /admin/login", got)
	}
	b.do("log in", chromedp.SendKeys(chromedp.ID("password"), generated), chromedp.Submit(chromedp.ID("password")),
		chromedp.WaitVisible(chromedp.ID("confirm")))
	if got := b.text(".notice.warn"); !strings.Contains(got, "generated password") {
		t.Errorf("password page notice = %q", got)
	}
	b.do("try the credentials page", chromedp.Navigate(admin+"/credentials"), chromedp.WaitVisible(chromedp.ID("confirm")))
	if got := b.path(); got != "/admin/password" {
		t.Errorf("before the password change, /admin/credentials led to %s", got)
	}
	b.do("mistype the confirmation",
		chromedp.SendKeys(chromedp.ID("current"), generated), chromedp.SendKeys(chromedp.ID("new"), newPass),
		chromedp.SendKeys(chromedp.ID("confirm"), newPass+"!"), chromedp.Submit(chromedp.ID("confirm")),
		chromedp.WaitVisible(chromedp.CSS(".field-error")))
	if got := b.text(".field-error"); got != "The two new passwords differ." {
		t.Errorf("inline error = %q", got)
	}
	if b.value("#current") != "" || b.value("#new") != "" {
		t.Error("a password field was filled back in")
	}
	b.do("change the password",
		chromedp.SendKeys(chromedp.ID("current"), generated), chromedp.SendKeys(chromedp.ID("new"), newPass),
		chromedp.SendKeys(chromedp.ID("confirm"), newPass), chromedp.Submit(chromedp.ID("confirm")),
		chromedp.WaitVisible(chromedp.ID("live")))
	if got := b.text(".notice.ok"); !strings.Contains(got, "Password changed") {
		t.Errorf("after the change: notice %q", got)
	}

	// Check the credential with the upstream (the script keeps the typed
	// token), then add it.
	b.do("fill the add form", chromedp.Navigate(admin+"/credentials"), chromedp.WaitVisible(chromedp.ID("add-form")),
		chromedp.SendKeys(chromedp.ID("email"), "ui@example.com"), chromedp.SendKeys(chromedp.ID("token"), uiToken),
		chromedp.SendKeys(chromedp.ID("label"), "Team A"),
		chromedp.Click(chromedp.CSS(`button[value="check"]`)),
		chromedp.WaitVisible(chromedp.CSS("#check-result .check")))
	if got := b.text("#check-result"); !strings.Contains(got, "Atlassian accepted this credential.") || !strings.Contains(got, "2,000 of 2,000") {
		t.Errorf("check verdict = %q", got)
	}
	if b.value("#token") != uiToken {
		t.Error("the check cleared the typed token (the script should keep it)")
	}
	b.do("add it", chromedp.Click(chromedp.CSS(`button[value="add"]`)), chromedp.WaitVisible(chromedp.CSS(".notice.ok")))
	row := `tr[data-credential="ui@example.com"]`
	if got := b.text(row + " .badge"); got != "Ready" { // capitalised by the CSS
		t.Errorf("state badge = %q, want Ready", got)
	}
	if h := b.html(); strings.Contains(h, uiToken) || !strings.Contains(h, adminui.MaskToken(uiToken)) {
		t.Error("the list does not show the token masked")
	}
	b.do("see it on the dashboard", chromedp.Navigate(admin+"/"), chromedp.WaitVisible(chromedp.ID("live")))
	if got := b.text(`[data-stat="ready"]`); got != "1" {
		t.Errorf("dashboard: %s ready, want 1", got)
	}

	// Bulk add: one new, one duplicate, one invalid line; then disable one.
	b.do("bulk add", chromedp.Navigate(admin+"/credentials"), chromedp.WaitVisible(chromedp.ID("lines")),
		chromedp.SendKeys(chromedp.ID("lines"), "busy@example.com:"+busyToken+"\nui@example.com:"+uiToken+"\nnot-an-email:x\n"+
			"spare@example.com:"+uiToken+"-spare\nrevoked@example.com:"+uiToken+"-revoked"),
		chromedp.Submit(chromedp.ID("lines")), chromedp.WaitVisible(chromedp.ID("bulk-report")))
	report := b.text("#bulk-report")
	for _, want := range []string{"busy@example.com\tAdded", "ui@example.com\tDuplicate", "–\tInvalid", "spare@example.com\tAdded",
		"revoked@example.com\tAdded"} { // badges capitalised by the CSS
		if !strings.Contains(report, want) {
			t.Errorf("bulk report lacks %q:\n%s", want, report)
		}
	}
	b.do("disable one", chromedp.Click(chromedp.CSS(`tr[data-credential="spare@example.com"] button`)),
		chromedp.WaitVisible(chromedp.CSS(".notice.ok")))
	if got := b.text(`tr[data-credential="spare@example.com"] .badge`); got != "Disabled" {
		t.Errorf("after disabling: badge %q", got)
	}

	// An API token, shown once.
	b.do("create a token", chromedp.Navigate(admin+"/tokens"), chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), "e2e"), chromedp.SendKeys(chromedp.ID("rate_limit"), "600"),
		chromedp.Submit(chromedp.ID("name")), chromedp.WaitVisible(chromedp.ID("new-token")),
		chromedp.WaitVisible(chromedp.CSS(`button[data-copy="new-token"]`)))
	token := b.value("#new-token")
	if !strings.HasPrefix(token, "sk-ap-") || !strings.Contains(b.text("#new-token-panel"), "it will not be shown again") {
		t.Fatalf("new token %.8s… or its warning missing", token)
	}
	b.do("reload the tokens page", chromedp.Navigate(admin+"/tokens"), chromedp.WaitVisible(chromedp.ID("tokens")))
	if h := b.html(); strings.Contains(h, token) || strings.Contains(h, token[10:]) {
		t.Error("the token is shown again")
	}

	// Traffic with the token while the dashboard is open: its live part
	// refreshes by itself.
	b.do("open the dashboard", chromedp.Navigate(admin+"/"), chromedp.WaitVisible(chromedp.ID("live")))
	client := openai.NewClient(option.WithBaseURL(p.URL+"/v1/"), option.WithAPIKey(token), option.WithMaxRetries(0))
	params := openai.ChatCompletionNewParams{Model: "claude-sonnet-4", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")}}
	for i := range 4 {
		res, err := client.Chat.Completions.New(t.Context(), params)
		if err != nil {
			t.Fatalf("chat %d with the new token: %v", i, err)
		}
		if len(res.Choices) != 1 || res.Choices[0].Message.Content == "" {
			t.Fatalf("chat %d: %+v", i, res)
		}
	}
	// One request the upstream refuses (whichever credential serves it):
	// a failure for the chart and the recent errors.
	for _, id := range []string{"ui", "busy", "revoked"} {
		gw.Push(id, 1, fake.Behavior{Fault: fake.BadRequest, Message: "the prompt is too long for this demo"})
	}
	if _, err := client.Chat.Completions.New(t.Context(), params); err == nil {
		t.Fatal("a request the upstream refuses succeeded")
	}
	b.waitFor("the dashboard shows the requests without a reload",
		`Number(document.querySelector('[data-stat="hour-requests"]').textContent) >= 5 && `+
			`document.querySelector('[data-stat="tokens-today"]').textContent !== "0"`, 15*time.Second)
	if !strings.Contains(b.text("#updated"), "updated") {
		t.Errorf("the live stamp = %q", b.text("#updated"))
	}
	b.screenshot("dashboard")
	b.do("open the credentials", chromedp.Navigate(admin+"/credentials"), chromedp.WaitVisible(chromedp.ID("credentials")))
	if got := b.text(`tr[data-credential="busy@example.com"] .badge`); got != "Cooling" {
		t.Logf("busy@example.com is %s (it cools only once the dispatcher picked it)", got)
	}
	b.screenshot("credentials")

	// Revoke the token (the script asks in a dialog): the next call is refused.
	b.acceptDialogs()
	b.do("revoke", chromedp.Navigate(admin+"/tokens"), chromedp.WaitVisible(chromedp.ID("tokens")),
		chromedp.Click(chromedp.CSS(`tr[data-token="e2e"] button.danger`)), chromedp.WaitVisible(chromedp.CSS(".notice.ok")))
	if got := b.text(".notice.ok"); got != "API token revoked." {
		t.Errorf("after revoking: %q", got)
	}
	_, err := client.Chat.Completions.New(t.Context(), params)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized {
		t.Errorf("chat with the revoked token: %v, want 401", err)
	}

	b.do("log out", chromedp.Click(chromedp.CSS(".logout button")), chromedp.WaitVisible(chromedp.ID("password")))
	if got := b.text(".notice.ok"); got != "You are logged out." {
		t.Errorf("after logout: %q", got)
	}
	b.do("the dashboard again", chromedp.Navigate(admin+"/"), chromedp.WaitVisible(chromedp.ID("password")))
	if got := b.path(); got != "/admin/login" {
		t.Errorf("after logout the dashboard led to %s", got)
	}
	if out := p.Stdout.String() + p.Stderr.String(); strings.Contains(out, uiToken) || strings.Contains(out, token) || strings.Contains(out, newPass) {
		t.Error("a secret reached the proxy's output")
	}
	b.checkConsole()
	t.Logf("browser walk took %s", time.Since(start).Round(time.Millisecond))
}

// stackAdminPassword is the ADMIN_PASSWORD of startStack.
const stackAdminPassword = "in-process-stack-password"

// login logs the browser in to the admin pages at admin (…/admin) and
// waits for the dashboard.
func (b *browser) login(admin, password string) {
	b.t.Helper()
	b.do("log in", chromedp.Navigate(admin+"/login"), chromedp.WaitVisible(chromedp.ID("password")),
		chromedp.SendKeys(chromedp.ID("password"), password), chromedp.Submit(chromedp.ID("password")),
		chromedp.WaitVisible(chromedp.ID("live")))
}

// TestDashboardRefreshKeepsFocus: the dashboard's live part is brought up
// to date in place, so a keyboard user's focus on a card link survives the
// refresh every 5 s; the refresh also brings the upstream errors that
// failover absorbed (failed attempts), marked apart from failed requests.
func TestDashboardRefreshKeepsFocus(t *testing.T) {
	s := startDashboardStack(t)
	b := newBrowser(t, 60*time.Second)
	admin := s.proxyURL + "/admin"
	b.login(admin, stackAdminPassword)
	if got := b.text(`[data-stat="hour-attempt-failures"]`); got != "0" {
		t.Errorf("absorbed upstream errors before any traffic = %q, want 0", got)
	}

	// Focus the "Cooling" card link as the keyboard does, and mark the
	// element itself (a script property, which no refresh sets).
	b.do("focus a card link", chromedp.Focus(chromedp.CSS("a.card.tone-cooling")))
	if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.activeElement.focusMark = true`)); err != nil {
		t.Fatal(err)
	}
	// Traffic, and failed attempts as the API records them.
	for range 3 {
		if code := s.chat(t); code != http.StatusOK {
			t.Fatalf("chat: status %d", code)
		}
	}
	s.app.usage.RecordAttemptFailure("cred-x", "claude-sonnet-4", "rate_limited: the upstream answered 429")
	s.app.usage.RecordAttemptFailure("cred-x", "claude-sonnet-4", "rate_limited: the upstream answered 429")
	s.app.usage.Record(usage.Event{Model: "claude-sonnet-4", Failed: true, Error: "server_error: the upstream answered 502"})
	b.waitFor("the live part refreshes with the new traffic",
		`Number(document.querySelector('[data-stat="hour-requests"]').textContent) >= 4 && `+
			`Number(document.querySelector('[data-stat="hour-attempt-failures"]').textContent) >= 2`, 15*time.Second)
	focus, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](
		`(document.activeElement.focusMark === true ? 'same ' : 'other ') + document.activeElement.className`))
	if err != nil {
		t.Fatal(err)
	}
	if focus != "same card tone-cooling" {
		t.Errorf("after the refresh the focus is on %q, want the same Cooling card link", focus)
	}
	errs := b.text("#live")
	if !strings.Contains(errs, "attempt failed, request moved on") || !strings.Contains(errs, "request failed") {
		t.Errorf("the recent errors do not tell attempts from requests:\n%s", errs)
	}
	// A second refresh: the focus is still there, and the page did not
	// grow copies of its parts.
	stamp := b.text("#updated")
	b.waitFor("another refresh", `document.getElementById('updated').textContent !== `+strconv.Quote(stamp), 15*time.Second)
	if n, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.querySelectorAll('#live section.cards').length`)); err != nil || n != 2 {
		t.Errorf("after refreshes #live has %d card rows (%v), want 2", n, err)
	}
	if got, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.activeElement.focusMark === true`)); err != nil || !got {
		t.Errorf("the focus left the card link at the second refresh (%v)", err)
	}
	b.checkConsole()
}

// TestFormsInBrowser: an invalid form puts the cursor in its first invalid
// field, which the browser reports invalid and described by its error;
// and without JavaScript the new token's page shows no dead Copy button.
func TestFormsInBrowser(t *testing.T) {
	s := startDashboardStack(t)
	admin := s.proxyURL + "/admin"
	b := newBrowser(t, 60*time.Second)
	b.login(admin, stackAdminPassword)

	b.do("send a bad credential", chromedp.Navigate(admin+"/credentials"), chromedp.WaitVisible(chromedp.ID("add-form")),
		chromedp.SendKeys(chromedp.ID("email"), "ok@example.com"), chromedp.SendKeys(chromedp.ID("cloud_id"), "not-a-uuid"),
		chromedp.Click(chromedp.CSS(`button[value="add"]`)), chromedp.WaitVisible(chromedp.ID("token-error")))
	got, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`[document.activeElement.id, document.activeElement.getAttribute('aria-invalid'),
		document.activeElement.getAttribute('aria-describedby'), document.getElementById(document.activeElement.getAttribute('aria-describedby')).textContent,
		document.querySelectorAll('[aria-invalid="true"]').length].join('|')`))
	if err != nil {
		t.Fatal(err)
	}
	if got != "token|true|token-error|Token is required|2" {
		t.Errorf("after a bad form: focus, invalid, description, message, invalid fields = %q", got)
	}
	if b.value("#email") != "ok@example.com" || b.value("#cloud_id") != "not-a-uuid" {
		t.Error("what was typed is not kept")
	}

	// Without JavaScript: the copy button, hidden until the script shows
	// it, stays hidden though .btn sets a display.
	if _, err := chromedp.Call(b.ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatal(err)
	}
	b.do("create a token without JavaScript", chromedp.Navigate(admin+"/tokens"), chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), "no-js"), chromedp.Click(chromedp.CSS(`#create button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.ID("new-token")))
	if token := b.value("#new-token"); !strings.HasPrefix(token, "sk-ap-") {
		t.Fatalf("no new token without JavaScript: %.6q", token)
	}
	style, err := chromedp.Run(b.ctx, chromedp.ComputedStyle(chromedp.CSS(`button[data-copy="new-token"]`)))
	if err != nil {
		t.Fatal(err)
	}
	display := ""
	for _, p := range style {
		if p.Name == "display" {
			display = p.Value
		}
	}
	if display != "none" {
		t.Errorf("without JavaScript the Copy button has display %q, want none", display)
	}
	if script, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.querySelector('button[data-copy]').hidden`)); err != nil || !script {
		t.Errorf("the page's script ran although scripts are off (hidden = %v, %v)", script, err)
	}
	b.checkConsole()
}

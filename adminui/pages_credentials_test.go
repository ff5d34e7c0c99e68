package adminui

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// fakeChecker is a real gateway client talking to a fake gateway that
// knows the given credentials.
func fakeChecker(t *testing.T, creds ...fake.Credential) (*gateway.Client, *fake.Server) {
	t.Helper()
	gw := fake.Start(t, fake.Options{Credentials: creds})
	c, err := gateway.NewClient(gateway.Config{BaseURL: gw.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, gw
}

// noSecret fails when the page shows any part of the Atlassian token but
// its masked form.
func noSecret(t *testing.T, body string, tokens ...string) {
	t.Helper()
	for _, tok := range tokens {
		if strings.Contains(body, tok) || strings.Contains(body, tok[4:len(tok)-4]) {
			t.Errorf("the page shows the Atlassian token %.6s…", tok)
		}
	}
}

func TestCredentialsPageAdd(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.pageLoggedIn(testPassword)

	wantPage(t, c.do("GET", "/credentials", nil, nil), http.StatusOK, "No credentials yet")

	res := c.post("/credentials", url.Values{"action": {"add"}, "email": {" alice@example.com "}, "token": {atlassianToken},
		"label": {"team A"}, "cloud_id": {"0B1C2D3E-0000-4000-8000-000000000001"}})
	wantRedirect(t, res, flash("/credentials", "added"))
	if n := e.changed.Load(); n != 1 {
		t.Errorf("Changed ran %d times, want 1", n)
	}
	body := wantPage(t, c.do("GET", "/credentials?done=added", nil, nil), http.StatusOK,
		"Credential added.", "team A", "alice@example.com", MaskToken(atlassianToken), "0b1c2d3e-0000-4000-8000-000000000001")
	if !regexpMatch(`<span class="badge ready">ready</span>`, body) {
		t.Errorf("the new credential is not shown ready:\n%s", body)
	}
	noSecret(t, body, atlassianToken)

	bad := []struct {
		name   string
		vals   url.Values
		status int
		field  string
		text   string
	}{
		{"empty email", url.Values{"email": {""}, "token": {atlassianToken}}, 400, "email", "Email is required"},
		{"malformed email", url.Values{"email": {"bob at example"}, "token": {atlassianToken}}, 400, "email", "Email is not a valid address"},
		{"email with a name", url.Values{"email": {"Bob <bob@example.com>"}, "token": {atlassianToken}}, 400, "email", "Email is not a valid address"},
		{"empty token", url.Values{"email": {"bob@example.com"}, "token": {" "}}, 400, "token", "Token is required"},
		{"token with a space", url.Values{"email": {"bob@example.com"}, "token": {"ATATT abc"}}, 400, "token", "Token must not contain spaces"},
		{"bad cloud id", url.Values{"email": {"bob@example.com"}, "token": {atlassianToken}, "cloud_id": {"not-a-uuid"}}, 400, "cloud_id", "Cloud id must be a UUID"},
		{"long label", url.Values{"email": {"bob@example.com"}, "token": {atlassianToken}, "label": {strings.Repeat("é", 101)}}, 400, "label", "Label must be at most 100 characters"},
		{"duplicate", url.Values{"email": {"ALICE@example.com"}, "token": {atlassianToken + "2"}, "cloud_id": {"0b1c2d3e-0000-4000-8000-000000000001"}}, 409, "email", "A credential with this email and cloud id already exists"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			tc.vals.Set("action", "add")
			if tc.vals.Get("label") == "" {
				tc.vals.Set("label", "kept <label>")
			}
			body := wantPage(t, c.post("/credentials", tc.vals), tc.status, tc.text)
			if !regexpMatch(`name="`+tc.field+`"[^>]*aria-invalid="true"`, body) {
				t.Errorf("field %s is not marked invalid", tc.field)
			}
			wantValue(t, body, "email", strings.TrimSpace(tc.vals.Get("email")))
			wantValue(t, body, "cloud_id", tc.vals.Get("cloud_id"))
			wantValue(t, body, "label", tc.vals.Get("label"))
			if v, _ := inputValue(body, "token"); v != "" {
				t.Errorf("the token field was filled back in: %q", v)
			}
			if tok := tc.vals.Get("token"); len(tok) > 8 && strings.Contains(body, tok) {
				t.Error("the typed token is in the page")
			}
			if strings.Contains(body, "kept <label>") {
				t.Error("the label is not escaped")
			}
		})
	}
	if cs, _ := e.st.ListCredentials(t.Context()); len(cs) != 1 {
		t.Errorf("%d credentials stored, want 1: a refused add saved something", len(cs))
	}
	if n := e.changed.Load(); n != 1 {
		t.Errorf("Changed ran %d times, want 1 (refusals change nothing)", n)
	}

	t.Run("store unavailable", func(t *testing.T) {
		var u *unavailableStore
		e := newEnv(t, envOptions{wrapStore: func(s store.Store) store.Store { u = &unavailableStore{Store: s}; return u }})
		c := e.pageLoggedIn(testPassword)
		u.down.Store(true)
		u2 := c.do("GET", "/credentials", nil, nil)
		body := wantPage(t, u2, http.StatusServiceUnavailable, "Store unavailable")
		if strings.Contains(body, "sqlite") || strings.Contains(body, "refused") {
			t.Errorf("the page leaks detail: %s", body)
		}
	})
}

func TestCredentialsPageCheck(t *testing.T) {
	t.Parallel()
	const blockedToken = atlassianToken + "B"
	client, gw := fakeChecker(t,
		fake.Credential{Email: "ok@example.com", Token: atlassianToken},
		fake.Credential{Email: "limited@example.com", Token: atlassianToken, Default: fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterSeconds: 42}},
		fake.Credential{Email: "blocked@example.com", Token: blockedToken, Default: fake.Behavior{Fault: fake.UserBlocked}},
		fake.Credential{Email: "broken@example.com", Token: atlassianToken, Default: fake.Behavior{Fault: fake.InternalError}},
	)
	e := newEnv(t, envOptions{checker: client})
	c := e.pageLoggedIn(testPassword)
	form := func(email, token string) url.Values {
		return url.Values{"action": {"check"}, "email": {email}, "token": {token}, "label": {"L"}}
	}
	cases := []struct {
		name   string
		vals   url.Values
		status int
		texts  []string
	}{
		{"accepted", form("ok@example.com", atlassianToken), 200,
			[]string{"Atlassian accepted this credential.", "2,000 of 2,000 credits left this month", "type it again"}},
		{"rate limited", form("limited@example.com", atlassianToken), 200, []string{"rate limited for now (try again in 42 s)"}},
		{"wrong token", form("ok@example.com", atlassianToken+"x"), 200, []string{"Atlassian refused this email and API token (401 Unauthorized)"}},
		{"blocked", form("blocked@example.com", blockedToken), 200, []string{"the Atlassian user is blocked"}},
		{"upstream failing", form("broken@example.com", atlassianToken), 200, []string{"server error"}},
		{"bad email", form("nope", atlassianToken), 400, []string{"Email is not a valid address"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := wantPage(t, c.post("/credentials", tc.vals), tc.status, tc.texts...)
			noSecret(t, body, atlassianToken, blockedToken)
			wantValue(t, body, "email", tc.vals.Get("email"))
			wantValue(t, body, "label", "L")
		})
	}
	if cs, _ := e.st.ListCredentials(t.Context()); len(cs) != 0 {
		t.Errorf("a check stored %d credentials", len(cs))
	}
	if n := len(gw.Requests()); n != 5 {
		t.Errorf("the gateway saw %d checks, want 5 (none for bad input)", n)
	}

	t.Run("fragment for the script", func(t *testing.T) {
		res := c.post("/fragments/check", url.Values{"email": {"ok@example.com"}, "token": {atlassianToken}})
		body := wantPage(t, res, http.StatusOK, "Atlassian accepted this credential.")
		if strings.Contains(body, "<html") || strings.Contains(body, "type it again") {
			t.Errorf("the fragment is a whole page or asks to retype: %s", body)
		}
		noSecret(t, body, atlassianToken)
		res = c.post("/fragments/check", url.Values{"email": {""}, "token": {atlassianToken}})
		wantPage(t, res, http.StatusBadRequest, "email is required")
	})
	t.Run("unreachable", func(t *testing.T) {
		client, gw := fakeChecker(t)
		gw.HTTP.Close()
		e := newEnv(t, envOptions{checker: client})
		c := e.pageLoggedIn(testPassword)
		wantPage(t, c.post("/credentials", form("ok@example.com", atlassianToken)), 200, "could not be reached")
	})
	t.Run("no checker", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		c := e.pageLoggedIn(testPassword)
		if body := wantPage(t, c.do("GET", "/credentials", nil, nil), 200); strings.Contains(body, `value="check"`) {
			t.Error("the page offers a check without a checker")
		}
		wantPage(t, c.post("/credentials", form("ok@example.com", atlassianToken)), 503, "not available")
		wantPage(t, c.post("/fragments/check", form("ok@example.com", atlassianToken)), 503, "not available")
	})
}

func TestCredentialsPageBulk(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.pageLoggedIn(testPassword)
	c.addCredential("dup@example.com", atlassianToken)
	before := e.changed.Load()
	tok := func(n string) string { return atlassianToken + n }
	lines := strings.Join([]string{
		"a@example.com:" + tok("a"),
		"",
		"# a comment",
		"  b@example.com : " + tok("b") + "  ",
		"dup@example.com:" + tok("d"),
		"not an email:" + tok("x"),
		tok("reversed") + ":c@example.com",
		"no colon at all " + tok("y"),
		"e@example.com:",
		"a@example.com:" + tok("again"),
	}, "\r\n")
	res := c.post("/credentials/bulk", url.Values{"lines": {lines}})
	body := wantPage(t, res, http.StatusOK)
	want := []struct{ line, email, result, msg string }{
		{"1", "a@example.com", "added", ""},
		{"4", "b@example.com", "added", ""},
		{"5", "dup@example.com", "duplicate", "already exists"},
		{"6", "–", "invalid", "email is not a valid address"},
		{"7", "–", "invalid", "email is not a valid address"},
		{"8", "–", "invalid", "expected email:token"},
		{"9", "e@example.com", "invalid", "token is required"},
		{"10", "a@example.com", "duplicate", "already exists"},
	}
	report := body[strings.Index(body, `id="bulk-report"`):]
	rows := strings.Split(report, "<tr>")[2:]
	if len(rows) != len(want) {
		t.Fatalf("report has %d rows, want %d:\n%s", len(rows), len(want), report)
	}
	for i, w := range want {
		r := rows[i]
		if !strings.Contains(r, `<td class="num">`+w.line+`</td><td>`+w.email+`</td>`) ||
			!strings.Contains(r, `result-`+w.result) || !strings.Contains(r, w.msg) {
			t.Errorf("row %d = %s, want line %s, %s, %s, %q", i, r, w.line, w.email, w.result, w.msg)
		}
	}
	noSecret(t, body, tok("a"), tok("b"), tok("d"), tok("x"), tok("reversed"), tok("y"), tok("again"))
	if strings.Contains(body, ">"+lines) || strings.Contains(body, "c@example.com") {
		t.Error("the pasted text is shown back")
	}
	cs, _ := e.st.ListCredentials(t.Context())
	if len(cs) != 3 {
		t.Errorf("%d credentials stored, want 3 (dup, a, b)", len(cs))
	}
	if n := e.changed.Load() - before; n != 1 {
		t.Errorf("Changed ran %d times for one paste, want 1", n)
	}

	t.Run("empty", func(t *testing.T) {
		wantPage(t, c.post("/credentials/bulk", url.Values{"lines": {"\n# nothing\n"}}), 400, "Paste at least one email:token line.")
	})
	t.Run("store failing", func(t *testing.T) {
		var u *unavailableStore
		e := newEnv(t, envOptions{wrapStore: func(s store.Store) store.Store { u = &unavailableStore{Store: s}; return u }})
		c := e.pageLoggedIn(testPassword)
		u.createDown.Store(true)
		before := e.changed.Load()
		body := wantPage(t, c.post("/credentials/bulk", url.Values{"lines": {"f@example.com:" + tok("f") + "\nnot an email:" + tok("g")}}),
			http.StatusOK, "not saved: the store failed; try this line again")
		report := body[strings.Index(body, `id="bulk-report"`):]
		for _, want := range []string{
			`<td class="num">1</td><td>f@example.com</td><td><span class="badge result-failed">failed</span>`,
			`<td class="num">2</td><td>–</td><td><span class="badge result-invalid">invalid</span>`,
		} {
			if !strings.Contains(report, want) {
				t.Errorf("report lacks %s:\n%s", want, report)
			}
		}
		noSecret(t, body, tok("f"), tok("g"))
		if strings.Contains(body, "sqlite") || strings.Contains(body, "refused") {
			t.Errorf("the page leaks the store's error: %s", report)
		}
		if n := e.changed.Load() - before; n != 0 {
			t.Errorf("Changed ran %d times with nothing added, want 0", n)
		}
	})
	t.Run("too many lines", func(t *testing.T) {
		many := strings.Repeat("x@example.com:"+atlassianToken+"\n", maxBulkLines+1)
		body := wantPage(t, c.post("/credentials/bulk", url.Values{"lines": {many}}), 400, "At most 500 lines at a time.")
		noSecret(t, body, atlassianToken)
		if cs, _ := e.st.ListCredentials(t.Context()); len(cs) != 3 {
			t.Errorf("a refused paste stored credentials: %d", len(cs))
		}
	})
}

func TestCredentialsPageActions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	api := e.loggedIn(testPassword)
	v := api.addCredential("act@example.com", atlassianToken)
	c := e.pageLoggedIn(testPassword)
	state := func() pool.CredentialStatus {
		t.Helper()
		for _, s := range e.pool.Status().Credentials {
			if s.ID == v.ID {
				return s
			}
		}
		t.Fatalf("%s is not in the pool", v.ID)
		return pool.CredentialStatus{}
	}
	row := func() string {
		t.Helper()
		body := wantPage(t, c.do("GET", "/credentials", nil, nil), http.StatusOK)
		i := strings.Index(body, `data-credential="act@example.com"`)
		if i < 0 {
			t.Fatalf("no row for the credential:\n%s", body)
		}
		return body[i : i+strings.Index(body[i:], "</tr>")]
	}

	wantRedirect(t, c.post("/credentials/"+v.ID+"/disable", nil), flash("/credentials", "disabled"))
	if got := state().State; got != pool.StateDisabled {
		t.Errorf("after disable: %s", got)
	}
	if r := row(); !strings.Contains(r, `badge disabled`) || !strings.Contains(r, "/enable") {
		t.Errorf("row after disable: %s", r)
	}

	// A persisted cooldown reaches the pool; the row shows it with a countdown.
	until := time.Now().Add(90 * time.Second)
	if err := e.st.SetCredentialState(t.Context(), store.CredentialState{CredentialID: v.ID, State: store.StateCooling,
		Reason: "rate_limited", Until: until, UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	wantRedirect(t, c.post("/credentials/"+v.ID+"/enable", nil), flash("/credentials", "enabled"))
	if got := state().State; got != pool.StateReady {
		t.Errorf("after enable: %s, want ready (enabling clears a cooldown)", got)
	}
	if err := e.st.SetCredentialState(t.Context(), store.CredentialState{CredentialID: v.ID, State: store.StateCooling,
		Reason: "rate_limited", Until: until, UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	e.resync()
	r := row()
	for _, want := range []string{`badge cooling`, "rate_limited", `data-countdown="` + until.UTC().Format(time.RFC3339) + `"`, "/reset"} {
		if !strings.Contains(r, want) {
			t.Errorf("cooling row lacks %q: %s", want, r)
		}
	}
	wantRedirect(t, c.post("/credentials/"+v.ID+"/reset", nil), flash("/credentials", "reset"))
	if got := state().State; got != pool.StateReady {
		t.Errorf("after reset: %s", got)
	}

	// Traffic shows in the row: requests, failures, tokens, last error.
	l, err := e.pool.Acquire(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.Finish(pool.Result{Outcome: pool.OutcomeServerError, Usage: pool.Usage{InputTokens: 1200, OutputTokens: 34}, Err: errors.New("upstream said <b>no</b>")})
	r = row()
	for _, want := range []string{`<td class="num">1</td>`, `<td class="num">1,234</td>`, "upstream said &lt;b&gt;no&lt;/b&gt;"} {
		if !strings.Contains(r, want) {
			t.Errorf("row lacks %q: %s", want, r)
		}
	}

	t.Run("delete asks first", func(t *testing.T) {
		body := wantPage(t, c.post("/credentials/"+v.ID+"/delete", nil), http.StatusOK, "Delete the credential act@example.com")
		if !strings.Contains(body, `name="confirmed" value="1"`) || !strings.Contains(body, `action="/admin/credentials/`+v.ID+`/delete"`) {
			t.Errorf("the confirmation page has no confirming form: %s", body)
		}
		if _, err := e.st.GetCredential(t.Context(), v.ID); err != nil {
			t.Fatalf("deleted before confirmation: %v", err)
		}
		wantRedirect(t, c.post("/credentials/"+v.ID+"/delete", url.Values{"confirmed": {"1"}}), flash("/credentials", "deleted"))
		if _, err := e.st.GetCredential(t.Context(), v.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("after delete: %v, want not found", err)
		}
	})
	t.Run("unknown id", func(t *testing.T) {
		for _, action := range []string{"enable", "disable", "reset", "delete"} {
			wantPage(t, c.post("/credentials/cred_nope/"+action, url.Values{"confirmed": {"1"}}), http.StatusNotFound, "Not found")
			wantPage(t, c.post("/credentials/cred_nope/"+action, nil), http.StatusNotFound, "Not found")
		}
	})
	t.Run("no pool", func(t *testing.T) {
		e := newEnv(t, envOptions{noPool: true})
		c := e.pageLoggedIn(testPassword)
		wantPage(t, c.post("/credentials/x/reset", nil), http.StatusServiceUnavailable, "not running")
		e.loggedIn(testPassword).addCredential("np@example.com", atlassianToken)
		body := wantPage(t, c.do("GET", "/credentials", nil, nil), http.StatusOK, "np@example.com")
		if !strings.Contains(body, `badge unknown`) || strings.Contains(body, "/reset") {
			t.Errorf("without a pool the state should be unknown and no reset offered: %s", body)
		}
	})
}

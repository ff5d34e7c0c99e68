package adminui

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// Field errors are tied to their fields: each error message has an id, its
// input names it in aria-describedby and is aria-invalid, and the first
// invalid field of the form has autofocus (no script needed).

var (
	idAttr        = regexp.MustCompile(`\sid="([^"]+)"`)
	autofocusTag  = regexp.MustCompile(`<(?:input|textarea)\b[^>]*\sautofocus\b[^>]*>`)
	describedByRe = regexp.MustCompile(`aria-describedby="([^"]+)"`)
)

// fieldTag returns the tag of the input or textarea whose id is id.
func fieldTag(t *testing.T, body, id string) string {
	t.Helper()
	tag := regexp.MustCompile(`<(?:input|textarea)[^>]*\sid="` + regexp.QuoteMeta(id) + `"[^>]*>`).FindString(body)
	if tag == "" {
		t.Fatalf("no field with id %q in the page:\n%s", id, body)
	}
	return tag
}

// wantTied checks that the field tag is invalid and described by the
// element errID, which is a field error saying text.
func wantTied(t *testing.T, body, tag, errID, text string) {
	t.Helper()
	if !strings.Contains(tag, `aria-invalid="true"`) {
		t.Errorf("%s is not aria-invalid", tag)
	}
	m := describedByRe.FindStringSubmatch(tag)
	if m == nil || m[1] != errID {
		t.Errorf("%s is not described by %s", tag, errID)
	}
	el := regexp.MustCompile(`<p class="field-error" id="` + regexp.QuoteMeta(errID) + `" role="alert">([^<]*)</p>`).FindStringSubmatch(body)
	if el == nil {
		t.Errorf("no field error with id %s in the page", errID)
	} else if !strings.Contains(el[1], text) {
		t.Errorf("error %s says %q, want %q", errID, el[1], text)
	}
}

// wantNotInvalid checks that a field tag is neither invalid nor described
// by an error.
func wantNotInvalid(t *testing.T, tag string) {
	t.Helper()
	if strings.Contains(tag, "aria-invalid") || strings.Contains(tag, "-error") {
		t.Errorf("a field without error is marked: %s", tag)
	}
}

// wantAutofocus checks that exactly one field has autofocus: the one with id.
func wantAutofocus(t *testing.T, body, id string) {
	t.Helper()
	tags := autofocusTag.FindAllString(body, -1)
	if len(tags) != 1 {
		t.Fatalf("%d fields have autofocus, want 1 (%s): %q", len(tags), id, tags)
	}
	if !strings.Contains(tags[0], ` id="`+id+`"`) {
		t.Errorf("autofocus is on %s, want the field %s", tags[0], id)
	}
}

// wantUniqueIDs checks that no id is used twice in the page.
func wantUniqueIDs(t *testing.T, body string) {
	t.Helper()
	seen := map[string]bool{}
	for _, m := range idAttr.FindAllStringSubmatch(body, -1) {
		if seen[m[1]] {
			t.Errorf("id %q is used twice in the page", m[1])
		}
		seen[m[1]] = true
	}
}

// TestAddCredentialFormShowsEveryError: the add form reports every bad
// field at once (as the tokens form does), each tied to its field, the
// first one focused, what was typed kept (not the token), nothing saved.
func TestAddCredentialFormShowsEveryError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.pageLoggedIn(testPassword)
	long := strings.Repeat("l", 101)
	for _, action := range []string{"add", "check"} {
		t.Run(action, func(t *testing.T) {
			res := c.post("/credentials", url.Values{"action": {action}, "email": {"not-an-email"}, "token": {"has a space"},
				"cloud_id": {"not-a-uuid"}, "label": {long}})
			body := wantPage(t, res, http.StatusBadRequest)
			for _, f := range []struct{ field, text string }{
				{"email", "Email is not a valid address"}, {"token", "Token must not contain spaces"},
				{"cloud_id", "Cloud id must be a UUID"}, {"label", "Label must be at most 100 characters"},
			} {
				wantTied(t, body, fieldTag(t, body, f.field), f.field+"-error", f.text)
			}
			wantAutofocus(t, body, "email")
			wantUniqueIDs(t, body)
			wantValue(t, body, "email", "not-an-email")
			wantValue(t, body, "label", long)
			wantValue(t, body, "cloud_id", "not-a-uuid")
			if strings.Contains(body, "has a space") {
				t.Error("the typed token is shown back")
			}
			wantNotInvalid(t, fieldTag(t, body, "lines"))
		})
	}
	t.Run("the first invalid field is focused", func(t *testing.T) {
		body := wantPage(t, c.post("/credentials", url.Values{"action": {"add"}, "email": {"fine@example.com"}, "token": {""},
			"label": {"bad\x01label"}}), http.StatusBadRequest, "Token is required", "Label must not contain control characters")
		wantNotInvalid(t, fieldTag(t, body, "email"))
		wantNotInvalid(t, fieldTag(t, body, "cloud_id"))
		wantTied(t, body, fieldTag(t, body, "token"), "token-error", "Token is required")
		wantTied(t, body, fieldTag(t, body, "label"), "label-error", "Label must not contain control characters")
		wantAutofocus(t, body, "token")
	})
	t.Run("a token pasted as the email is not echoed", func(t *testing.T) {
		body := wantPage(t, c.post("/credentials", url.Values{"action": {"add"}, "email": {"x@example.com:" + atlassianToken}, "token": {""}}),
			http.StatusBadRequest, "Token is required")
		wantValue(t, body, "email", "")
		if strings.Contains(body, atlassianToken[:12]) {
			t.Error("the pasted token is in the page")
		}
	})
	t.Run("the script's check", func(t *testing.T) {
		body := wantPage(t, c.post("/fragments/check", url.Values{"email": {""}, "token": {"a b"}, "cloud_id": {"x"}}), http.StatusBadRequest,
			"email is required", "token must not contain spaces", "cloud id must be a UUID")
		if strings.Contains(body, "<html") {
			t.Error("the fragment is a whole page")
		}
	})
	t.Run("a bulk add error", func(t *testing.T) {
		body := wantPage(t, c.post("/credentials/bulk", url.Values{"lines": {"\n# nothing\n"}}), http.StatusBadRequest)
		wantTied(t, body, fieldTag(t, body, "lines"), "lines-error", "Paste at least one email:token line.")
		wantAutofocus(t, body, "lines")
		wantNotInvalid(t, fieldTag(t, body, "email"))
	})
	if cs, err := e.st.ListCredentials(t.Context()); err != nil || len(cs) != 0 {
		t.Errorf("credentials after refused forms: %v, %v", cs, err)
	}
	t.Run("a good form still adds", func(t *testing.T) {
		wantRedirect(t, c.post("/credentials", url.Values{"action": {"add"}, "email": {"ok@example.com"}, "token": {atlassianToken}}),
			flash("/credentials", "added"))
		body := wantPage(t, c.do("GET", "/credentials", nil, nil), http.StatusOK)
		if autofocusTag.MatchString(body) {
			t.Error("a page without errors focuses a field")
		}
	})
}

func TestCredentialProblems(t *testing.T) {
	t.Parallel()
	in, errs := credentialProblems(CredentialInput{Email: " a@example.com ", Token: " tok ", CloudID: " 0D1C2B3A-0000-4000-8000-00000000000A ", Label: " l "})
	if len(errs) != 0 || in.Email != "a@example.com" || in.Token != "tok" || in.CloudID != "0d1c2b3a-0000-4000-8000-00000000000a" || in.Label != "l" {
		t.Errorf("good input: %+v, %v", in, errs)
	}
	_, errs = credentialProblems(CredentialInput{MaxConcurrency: -1})
	var fields []string
	for _, err := range errs {
		ve, ok := err.(*ValidationError)
		if !ok {
			t.Fatalf("%T is not a *ValidationError", err)
		}
		fields = append(fields, ve.Field)
	}
	if strings.Join(fields, ",") != "email,token,max_concurrency" {
		t.Errorf("fields = %v, want email, token, max_concurrency", fields)
	}
	// validateCredential (the JSON API, the service) answers the first.
	if _, err := validateCredential(CredentialInput{Email: "bad", Token: ""}); err == nil || err.(*ValidationError).Field != "email" {
		t.Errorf("validateCredential = %v, want the email's error", err)
	}
}

// TestLoginErrorTiedToField: the login error is the password field's
// description, and an error about the password marks it invalid.
func TestLoginErrorTiedToField(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{LoginAttemptsPerIP: 2}}) // the two failures below, then throttled
	anon := e.client()
	body := wantPage(t, anon.do("GET", "/login", nil, nil), http.StatusOK)
	wantNotInvalid(t, fieldTag(t, body, "password"))
	for _, tc := range []struct {
		name   string
		pw     string
		status int
		text   string
	}{
		{"wrong", "not the password at all", http.StatusUnauthorized, "Invalid password."},
		{"empty", "", http.StatusBadRequest, "Enter the admin password."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := wantPage(t, anon.post("/login", url.Values{"password": {tc.pw}}), tc.status, tc.text)
			tag := fieldTag(t, body, "password")
			if !strings.Contains(tag, `aria-invalid="true"`) || !strings.Contains(tag, `aria-describedby="login-error"`) {
				t.Errorf("password field = %s", tag)
			}
			if !strings.Contains(body, `<p class="notice error" role="alert" id="login-error">`+tc.text) {
				t.Error("the error has no id login-error")
			}
			wantAutofocus(t, body, "password")
		})
	}
	t.Run("throttled", func(t *testing.T) {
		body := wantPage(t, anon.post("/login", url.Values{"password": {"x"}}), http.StatusTooManyRequests, "Too many attempts")
		tag := fieldTag(t, body, "password")
		if strings.Contains(tag, "aria-invalid") || !strings.Contains(tag, `aria-describedby="login-error"`) {
			t.Errorf("throttled: password field = %s, want described, not invalid (the password was not judged)", tag)
		}
	})
}

func TestPasswordFormErrorsTied(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{LoginAttemptsPerIP: 100}})
	c := e.pageLoggedIn(testPassword)
	body := wantPage(t, c.post("/password", url.Values{"current": {""}, "new": {"short"}, "confirm": {"short"}}), http.StatusBadRequest)
	wantTied(t, body, fieldTag(t, body, "current"), "current-error", "Enter your current password.")
	wantTied(t, body, fieldTag(t, body, "new"), "new-error", "Password must be at least 12 characters")
	wantNotInvalid(t, fieldTag(t, body, "confirm"))
	wantAutofocus(t, body, "current")
	wantUniqueIDs(t, body)

	body = wantPage(t, c.post("/password", url.Values{"current": {testPassword}, "new": {"a long enough password"}, "confirm": {"another one"}}),
		http.StatusBadRequest)
	wantTied(t, body, fieldTag(t, body, "confirm"), "confirm-error", "The two new passwords differ.")
	wantAutofocus(t, body, "confirm")
}

func TestTokenFormErrorsTied(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.pageLoggedIn(testPassword)
	body := wantPage(t, c.postTokenForm(url.Values{"name": {""}, "rate_limit": {"many"}}), http.StatusBadRequest)
	wantTied(t, body, fieldTag(t, body, "name"), "name-error", "Name is required")
	wantTied(t, body, fieldTag(t, body, "rate_limit"), "rate_limit-error", "Enter a whole number")
	wantNotInvalid(t, fieldTag(t, body, "expires_at"))
	wantAutofocus(t, body, "name")

	api := e.loggedIn(testPassword)
	var created tokenCreated
	api.do("POST", "/api/tokens", map[string]any{"name": "row"}, nil).decode(t, &created)
	body = wantPage(t, c.post("/tokens/"+created.ID+"/limit", url.Values{"rate_limit": {"-3"}}), http.StatusBadRequest)
	tag := regexp.MustCompile(`<input name="rate_limit"[^>]*aria-label="Requests per minute for row"[^>]*>`).FindString(body)
	if tag == "" {
		t.Fatalf("no rate limit field in the row:\n%s", body)
	}
	errID := "limit-" + created.ID + "-rate_limit-error"
	wantTied(t, body, tag, errID, "Rate_limit must be between 0")
	if n := len(autofocusTag.FindAllString(body, -1)); n != 1 || !strings.Contains(tag, " autofocus") {
		t.Errorf("%d fields have autofocus; the row's invalid field: %s", n, tag)
	}
	wantNotInvalid(t, fieldTag(t, body, "rate_limit")) // the create form's own
	wantUniqueIDs(t, body)
}

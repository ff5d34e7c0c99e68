package adminui

import (
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// Helpers for the page tests: a browser-like client posting URL-encoded
// forms (with the session's CSRF token in the csrf_token field, as the
// pages' forms carry it) and reading the HTML answers.

const formType = "application/x-www-form-urlencoded"

// post sends a form to /admin+path. The client's CSRF token goes in the
// csrf_token field unless vals sets that field (to "" to send none); the
// X-CSRF-Token header is never sent.
func (c *client) post(path string, vals url.Values) response {
	c.e.t.Helper()
	if vals == nil {
		vals = url.Values{}
	}
	if _, set := vals[csrfField]; !set && c.csrf != "" {
		vals.Set(csrfField, c.csrf)
	}
	if vals.Get(csrfField) == "" {
		vals.Del(csrfField)
	}
	return c.do("POST", path, vals.Encode(), map[string]string{"Content-Type": formType, csrfHeader: ""})
}

// pageLoggedIn returns a client logged in through the login form, holding
// the CSRF token its pages carry.
func (e *env) pageLoggedIn(password string) *client {
	e.t.Helper()
	c := e.client()
	res := c.post("/login", url.Values{"password": {password}})
	if res.status != http.StatusSeeOther {
		e.t.Fatalf("login form: status %d, body %s", res.status, res.body)
	}
	page := c.do("GET", "/password", nil, nil) // a page every session may see
	c.csrf = formCSRF(e.t, page)
	return c
}

// formCSRF reads the CSRF token of the page's forms.
func formCSRF(t *testing.T, res response) string {
	t.Helper()
	return formField(t, res, "csrf_token")
}

// formField reads the value of the page's first input named name.
func formField(t *testing.T, res response, name string) string {
	t.Helper()
	m := regexp.MustCompile(`name="` + regexp.QuoteMeta(name) + `" value="([^"]+)"`).FindSubmatch(res.body)
	if m == nil {
		t.Fatalf("no %s field in the page (status %d): %s", name, res.status, res.body)
	}
	return string(m[1])
}

// wantRedirect checks a 303 to location (a path under /admin).
func wantRedirect(t *testing.T, res response, location string) {
	t.Helper()
	if res.status != http.StatusSeeOther {
		t.Fatalf("status = %d, want 303 to %s (body %.300s)", res.status, location, res.body)
	}
	if got := res.header.Get("Location"); got != location {
		t.Fatalf("Location = %q, want %q", got, location)
	}
}

// wantPage checks an HTML answer's status and that the page shows each of
// texts (given unescaped; compared in their escaped form).
func wantPage(t *testing.T, res response, status int, texts ...string) string {
	t.Helper()
	body := string(res.body)
	if res.status != status {
		t.Fatalf("status = %d, want %d (body %s)", res.status, status, body)
	}
	if ct := res.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q, want text/html; charset=utf-8", ct)
	}
	for _, s := range texts {
		if !strings.Contains(body, html.EscapeString(s)) {
			t.Errorf("the page does not show %q:\n%s", s, body)
		}
	}
	return body
}

// inputValue returns the value attribute of the input whose id is name,
// else of the first input named name ("" when it has none), and whether
// such an input exists.
func inputValue(body, name string) (string, bool) {
	q := regexp.QuoteMeta(name)
	tag := regexp.MustCompile(`<input[^>]*\bid="` + q + `"[^>]*>`).FindString(body)
	if tag == "" {
		tag = regexp.MustCompile(`<input[^>]*\bname="` + q + `"[^>]*>`).FindString(body)
	}
	if tag == "" {
		return "", false
	}
	m := regexp.MustCompile(`\bvalue="([^"]*)"`).FindStringSubmatch(tag)
	if m == nil {
		return "", true
	}
	return html.UnescapeString(m[1]), true
}

// wantValue checks that the page's input name holds value.
func wantValue(t *testing.T, body, name, value string) {
	t.Helper()
	got, ok := inputValue(body, name)
	if !ok {
		t.Fatalf("no input %q in the page", name)
	}
	if got != value {
		t.Errorf("input %s = %q, want %q", name, got, value)
	}
}

// flash is the URL a redirect with a notice goes to.
func flash(path, done string) string { return basePath + path + "?done=" + done }

// regexpMatch reports whether the pattern matches s.
func regexpMatch(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }

// formNonce reads the one-time nonce of the page's token form.
func formNonce(t *testing.T, res response) string {
	t.Helper()
	return formField(t, res, nonceField)
}

// postTokenForm sends the tokens page's create form as a browser does:
// with the nonce of the form a fresh GET /tokens shows (unless vals sets
// form_nonce itself).
func (c *client) postTokenForm(vals url.Values) response {
	c.e.t.Helper()
	v := url.Values{}
	for k, vs := range vals {
		v[k] = vs
	}
	if _, set := v[nonceField]; !set {
		v.Set(nonceField, formNonce(c.e.t, c.do("GET", "/tokens", nil, nil)))
	}
	return c.post("/tokens", v)
}

package adminui

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"html/template"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// basePath is where the handler is mounted: links and redirects are
// absolute under it.
const basePath = "/admin"

// csrfField is the hidden form field carrying the session's CSRF token.
const csrfField = "csrf_token"

//go:embed web
var webFS embed.FS

// views are the parsed page templates and the static assets, all embedded.
type views struct {
	pages  map[string]*template.Template
	static map[string]staticFile
}

type staticFile struct {
	body    []byte
	version string // a content hash, for cache busting
}

// pageNames are the page templates; each is parsed with layout.html.
var pageNames = []string{"login", "password", "dashboard", "credentials", "tokens", "confirm", "error"}

func loadViews() (*views, error) {
	v := &views{pages: map[string]*template.Template{}, static: map[string]staticFile{}}
	err := fs.WalkDir(webFS, "web/static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := webFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		v.static[strings.TrimPrefix(p, "web/static/")] = staticFile{body: b, version: hex.EncodeToString(sum[:6])}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("adminui: static assets: %w", err)
	}
	funcs := template.FuncMap{
		"asset": func(name string) (string, error) {
			f, ok := v.static[name]
			if !ok {
				return "", fmt.Errorf("no static asset %q", name)
			}
			return basePath + "/static/" + name + "?v=" + f.version, nil
		},
		"num":     num,
		"px":      func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
		"pct":     percent,
		"utc":     formatUTC,
		"iso":     func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"ago":     ago,
		"until":   until,
		"balance": balanceLine,
		"join":    strings.Join,
		"cap":     capitalize,
	}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(webFS, "web/templates/layout.html", "web/templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("adminui: template %s: %w", name, err)
		}
		v.pages[name] = t
	}
	return v, nil
}

// page is what every page template reads; each page embeds it.
type page struct {
	Title      string
	Nav        string // the active nav entry
	CSRF       string // "" when logged out
	LoggedIn   bool
	MustChange bool
	Flash      string // a success notice after a redirect
	Now        time.Time
}

// basePage fills page from the request's session, if any.
func (a *Admin) basePage(r *http.Request, title, nav string) page {
	p := page{Title: title, Nav: nav, Now: a.svc.now()}
	if s, ok := sessionFrom(r.Context()); ok {
		p.CSRF, p.LoggedIn, p.MustChange = s.CSRFToken, true, s.MustChangePassword
	}
	p.Flash = flashes[r.URL.Query().Get("done")]
	return p
}

// flashes are the notices a redirect may ask for with ?done=; anything
// else shows nothing, so a link cannot put text on a page.
var flashes = map[string]string{
	"added":    "Credential added.",
	"enabled":  "Credential enabled; its cooldown or invalid state is cleared.",
	"disabled": "Credential disabled.",
	"reset":    "Cooldown reset: the credential is back in rotation.",
	"deleted":  "Credential deleted.",
	"revoked":  "API token revoked.",
	"limit":    "Rate limit saved.",
	"logout":   "You are logged out.",
	"password": "Password changed. Every other session was ended.",
}

// render executes a template into a buffer and writes it with status, so a
// template error is a clean 500 rather than half a page.
func (a *Admin) render(w http.ResponseWriter, r *http.Request, status int, name, tmpl string, data any) {
	t, ok := a.views.pages[name]
	if !ok {
		a.logger.LogAttrs(r.Context(), slog.LevelError, "admin page: no such template", slog.String("page", name))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, tmpl, data); err != nil {
		a.logger.LogAttrs(r.Context(), slog.LevelError, "admin page", slog.String("page", name), slog.String("error", err.Error()))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// renderPage renders a whole page (the layout around the page's content).
func (a *Admin) renderPage(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	a.render(w, r, status, name, "layout", data)
}

type errorPage struct {
	page
	Status  int
	Message string
}

// pageError renders the error page.
func (a *Admin) pageError(w http.ResponseWriter, r *http.Request, status int, title, message string) {
	a.renderPage(w, r, status, "error", errorPage{page: a.basePage(r, title, ""), Status: status, Message: message})
}

// pageServiceError renders a Service error that is not a form field's
// problem: the detail goes to the log, the page shows a fixed message.
func (a *Admin) pageServiceError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, pool.ErrUnknownCredential):
		a.pageError(w, r, http.StatusNotFound, "Not found", "It does not exist (any more); it may have been deleted meanwhile.")
	case errors.Is(err, ErrBusy):
		w.Header().Set("Retry-After", "1")
		a.pageError(w, r, http.StatusServiceUnavailable, "Busy", "Too many password checks are running at once. Try again in a moment.")
	case errors.Is(err, store.ErrUnavailable):
		a.logger.LogAttrs(r.Context(), slog.LevelError, "admin page failed", slog.String("error", err.Error()))
		a.pageError(w, r, http.StatusServiceUnavailable, "Store unavailable", "The store cannot be reached right now. Try again in a moment.")
	default:
		a.logger.LogAttrs(r.Context(), slog.LevelError, "admin page failed", slog.String("error", err.Error()))
		a.pageError(w, r, http.StatusInternalServerError, "Internal error", "Something went wrong; the server log has the details.")
	}
}

// redirect answers a POST (or a page that needs another first) with 303 to
// basePath+to.
func redirect(w http.ResponseWriter, r *http.Request, to string) {
	http.Redirect(w, r, basePath+to, http.StatusSeeOther)
}

// isAPI reports whether r is for the JSON API (the handler is reached with
// /admin stripped or, through chi's Mount, not).
func isAPI(r *http.Request) bool {
	p := strings.TrimPrefix(r.URL.Path, basePath)
	return p == "/api" || strings.HasPrefix(p, "/api/")
}

// isFragment reports whether r is for an HTML fragment fetched by script:
// those answer a status, never a redirect.
func isFragment(r *http.Request) bool {
	return strings.HasPrefix(strings.TrimPrefix(r.URL.Path, basePath), "/fragments/")
}

// pageSession is requireSession for pages: without a live session a page
// redirects to the login page and a fragment answers 401. A fragment the
// page fetches by itself (GET) does not count as activity: an unattended
// dashboard still ends at the idle timeout.
func (a *Admin) pageSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := a.sessionID(r)
		lookup := a.svc.Session
		if isFragment(r) && r.Method == http.MethodGet {
			lookup = a.svc.PeekSession
		}
		sess, err := lookup(r.Context(), id)
		if err != nil {
			if !errors.Is(err, ErrNoSession) {
				a.pageServiceError(w, r, err)
				return
			}
			if id != "" {
				http.SetCookie(w, a.sessionCookie(r, ""))
			}
			if isFragment(r) {
				http.Error(w, "login required", http.StatusUnauthorized)
				return
			}
			redirect(w, r, "/login")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionCtxKey{}, sess)))
	})
}

// pageCSRF parses a POST's form (see parseForm) and answers 403 unless its
// csrf_token field (or, for a script's fetch, the X-CSRF-Token header)
// matches the session's token.
func (a *Admin) pageCSRF(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		if !a.parseForm(w, r) {
			return
		}
		got := r.PostForm.Get(csrfField)
		if got == "" {
			got = r.Header.Get(csrfHeader)
		}
		if !validCSRF(r, got) {
			a.pageError(w, r, http.StatusForbidden, "Form expired",
				"This form does not belong to your current session (it may be from an old tab or another login). Reload the page and try again.")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// pagePasswordChanged sends every page to the password page while a
// generated password has not been changed.
func (a *Admin) pagePasswordChanged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sess, _ := sessionFrom(r.Context()); sess.MustChangePassword {
			if isFragment(r) {
				http.Error(w, "password change required", http.StatusForbidden)
				return
			}
			redirect(w, r, "/password")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// parseForm reads a URL-encoded form body into r.PostForm with the API's
// limits: the content type (415), MaxBodyBytes (413), BodyReadTimeout
// (408). On failure it has answered with an error page and returns false.
func (a *Admin) parseForm(w http.ResponseWriter, r *http.Request) bool {
	if r.PostForm != nil {
		return true // parsed already (by pageCSRF)
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		a.pageError(w, r, http.StatusUnsupportedMediaType, "Unsupported form",
			"The form must be sent URL-encoded (application/x-www-form-urlencoded).")
		return false
	}
	rc := http.NewResponseController(w)
	if r.ContentLength != 0 {
		_ = rc.SetReadDeadline(time.Now().Add(a.cfg.BodyReadTimeout))
	}
	r.Body = http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes)
	err = r.ParseForm()
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		if r.ContentLength != 0 {
			_ = rc.SetReadDeadline(time.Time{})
		}
		return true
	case errors.Is(err, os.ErrDeadlineExceeded):
		w.Header().Set("Connection", "close")
		a.pageError(w, r, http.StatusRequestTimeout, "Too slow", "The form was not received in time.")
	case errors.As(err, &mbe):
		a.pageError(w, r, http.StatusRequestEntityTooLarge, "Too large", "The form is too large.")
	default:
		a.pageError(w, r, http.StatusBadRequest, "Bad form", "The form could not be read.")
	}
	return false
}

// serveStatic serves the embedded CSS, script and icon; they hold no
// secret and are public (the login page needs them).
func (a *Admin) serveStatic(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "*")
	f, ok := a.views.static[name]
	if !ok {
		a.pageError(w, r, http.StatusNotFound, "Not found", "There is no such file.")
		return
	}
	if ct := mime.TypeByExtension(path.Ext(name)); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	// Asset URLs carry a content hash (?v=), so a changed file is a new URL.
	w.Header().Set("Cache-Control", "public, max-age=86400")
	w.Header().Set("ETag", `"`+f.version+`"`)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}

// form holds what a user typed (secrets excluded) and the errors to show
// next to each field ("" is the form as a whole). Order lists the form's
// fields as the page shows them (the first invalid one gets the focus);
// Prefix keeps the ids of its error messages apart from another form's
// on the same page.
type form struct {
	Values map[string]string
	Errors map[string]string
	Order  []string
	Prefix string
}

func newForm(r *http.Request, fields ...string) form {
	f := form{Values: map[string]string{}, Errors: map[string]string{}}
	for _, k := range fields {
		f.Values[k] = r.PostForm.Get(k)
	}
	return f
}

// ordered returns f with its fields' page order.
func (f form) ordered(fields ...string) form {
	f.Order = fields
	return f
}

// fieldError is what the "ferr" template shows: a field's error message
// and the id that its input's aria-describedby names.
type fieldError struct {
	ID      string
	Message string
}

// Err is field's error for the "ferr" template.
func (f form) Err(field string) fieldError {
	return fieldError{ID: f.errorID(field), Message: f.Errors[field]}
}

func (f form) errorID(field string) string { return f.Prefix + field + "-error" }

// Invalid returns the attributes of field's input when field has an
// error: aria-invalid, aria-describedby naming the error's message, and
// autofocus on the form's first invalid field (in Order), so that the
// browser puts the cursor where the first problem is. Without an error it
// is empty.
func (f form) Invalid(field string) template.HTMLAttr {
	if f.Errors[field] == "" {
		return ""
	}
	attrs := ` aria-invalid="true" aria-describedby="` + html.EscapeString(f.errorID(field)) + `"`
	for _, k := range f.Order {
		if f.Errors[k] != "" {
			if k == field {
				attrs += " autofocus"
			}
			break
		}
	}
	return template.HTMLAttr(attrs)
}

// fail records err on its field when it is a *ValidationError or a
// *ConflictError and reports whether it did.
func (f form) fail(err error) bool {
	var ve *ValidationError
	var ce *ConflictError
	switch {
	case errors.As(err, &ve):
		f.Errors[ve.Field] = ve.Message
		v := f.Values[ve.Field]
		switch ve.Field {
		case "email", "cloud_id":
			if len(v) > 80 || strings.Contains(v, ":") {
				// Most likely an email:token line (or a token) pasted into
				// the wrong field: a secret is not echoed back into the page.
				f.Values[ve.Field] = ""
			}
		case "allowed_models":
			if slices.ContainsFunc(splitModels(v), looksLikeSecret) {
				f.Values[ve.Field] = ""
			}
		}
	case errors.As(err, &ce):
		f.Errors[ce.Field] = ce.Message
	default:
		return false
	}
	return true
}

// status is the answer status of a form that failed: 409 for a duplicate,
// else 400.
func (f form) status(err error) int {
	var ce *ConflictError
	if errors.As(err, &ce) {
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

// capitalize upper-cases the first letter of a message ("email is
// required" → "Email is required").
func capitalize(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 {
		return s
	}
	return string(unicode.ToUpper(r)) + s[n:]
}

// num writes an integer of any size with thousands separators.
func num(v any) (string, error) {
	switch n := v.(type) {
	case int:
		return groupDigits(int64(n)), nil
	case int64:
		return groupDigits(n), nil
	}
	return "", fmt.Errorf("num: %T is not an integer", v)
}

// groupDigits writes n with thousands separators ("12,345").
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// percent is part/whole as a percentage with one decimal ("2.5%"), "–" of nothing.
func percent(part, whole int64) string {
	if whole <= 0 {
		return "–"
	}
	return strconv.FormatFloat(float64(part)*100/float64(whole), 'f', 1, 64) + "%"
}

func formatUTC(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// ago is how long before now t was ("3 min ago"); "never" for the zero time.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	return span(d) + " ago"
}

// until is how long after now t is ("in 42 s"); "now" once it has passed.
func until(now, t time.Time) string {
	d := t.Sub(now)
	if d <= 0 {
		return "now"
	}
	return "in " + span(d)
}

func span(d time.Duration) string {
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d.Round(time.Second)/time.Second)) + " s"
	case d < time.Hour:
		m := int(d / time.Minute)
		s := int(d%time.Minute) / int(time.Second)
		if s == 0 || m >= 10 {
			return strconv.Itoa(m) + " min"
		}
		return strconv.Itoa(m) + " min " + strconv.Itoa(s) + " s"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + " h"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + " days"
}

package adminui

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/go-chi/chi/v5"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// The API tokens page: create (the new token is shown once, in the answer
// to the POST that made it, never stored in plaintext and never shown
// again), list with today's usage, change a rate limit, revoke.

type tokenRow struct {
	TokenView
	Today UsageCounts
	// Limit is the rate-limit form of this row when its change failed.
	Limit *form
}

type tokensPage struct {
	page
	Rows       []tokenRow
	Create     form
	TodayError bool
	// NewToken is the token just created: shown on this one answer only.
	NewToken string
	NewName  string
	// Nonce is the create form's one-time value (see pageCreateToken).
	Nonce string
}

// tokenFields are the create form's fields in page order.
var tokenFields = []string{"name", "expires_at", "allowed_models", "rate_limit"}

// nonceField carries the create form's one-time value; the used ones are
// remembered in the Deps.Nonces store.
const nonceField = "form_nonce"

func (a *Admin) showTokens(w http.ResponseWriter, r *http.Request, status int, edit func(*tokensPage)) {
	ctx := r.Context()
	d := tokensPage{page: a.basePage(r, "API tokens", "tokens"), Create: newForm(r, tokenFields...).ordered(tokenFields...),
		Nonce: newNonce()}
	views, err := a.svc.ListTokens(ctx)
	if err != nil {
		a.pageServiceError(w, r, err)
		return
	}
	_, perToken, err := a.svc.UsageToday(ctx)
	if err != nil {
		a.logger.LogAttrs(ctx, slog.LevelWarn, "tokens page: usage today", slog.String("error", err.Error()))
		d.TodayError = true
	}
	for _, v := range views {
		d.Rows = append(d.Rows, tokenRow{TokenView: v, Today: perToken[v.ID]})
	}
	if edit != nil {
		edit(&d)
	}
	a.renderPage(w, r, status, "tokens", d)
}

func (a *Admin) pageTokens(w http.ResponseWriter, r *http.Request) {
	a.showTokens(w, r, http.StatusOK, nil)
}

// pageCreateToken creates a token and answers with the page showing it
// once (no redirect: the token must not travel in a URL or be kept for a
// later request). The form carries a one-time nonce, so that the browser
// sending it again (a reload of this answer, "confirm resubmission", a
// double click) creates no second token that nobody ever sees: the repeat
// is refused (409) with the list, where the first token is. The nonce is
// spent only when the token is about to be made (and given back when that
// fails), so a form that had mistakes can be corrected and sent again. The
// used nonces are kept in the Deps.Nonces store, shared by every replica
// with Redis; when it cannot answer, no token is made (503): a repeat could
// not be told from a first sending.
func (a *Admin) pageCreateToken(w http.ResponseWriter, r *http.Request) {
	f := newForm(r, tokenFields...).ordered(tokenFields...)
	in := TokenInput{Name: f.Values["name"], AllowedModels: splitModels(f.Values["allowed_models"])}
	// Every field's problem at once, and all of them before the nonce is
	// spent.
	var err error
	if _, err := validateTokenName(in.Name); err != nil {
		f.fail(err)
	}
	if in.ExpiresAt, err = parseExpiry(f.Values["expires_at"]); err == nil {
		_, err = a.svc.validateExpiry(in.ExpiresAt)
	}
	if err != nil {
		f.fail(err)
	}
	if in.RateLimit, err = parseRateLimit(f.Values["rate_limit"]); err != nil {
		f.fail(err)
	}
	if err := checkAllowedModels(a.catalog, in.AllowedModels); err != nil {
		f.fail(err)
	}
	if len(f.Errors) > 0 {
		a.showTokens(w, r, http.StatusBadRequest, func(d *tokensPage) { d.Create = f })
		return
	}
	nonce := r.PostForm.Get(nonceField)
	if !validNonce(nonce) {
		f.Errors[""] = "This form is out of date (it has no valid form id). Check the list below, then create the token again."
		a.showTokens(w, r, http.StatusBadRequest, func(d *tokensPage) { d.Create = f })
		return
	}
	key := "token-create:" + nonce
	_, _, _, fresh, err := a.nonces.Take(r.Context(), key)
	if err != nil {
		a.logger.LogAttrs(r.Context(), slog.LevelError, "token form nonce", slog.String("error", err.Error()))
		a.pageError(w, r, http.StatusServiceUnavailable, "Unavailable",
			"Creating tokens is unavailable right now; try again in a moment.")
		return
	}
	if !fresh {
		a.showTokens(w, r, http.StatusConflict, func(d *tokensPage) {
			d.Create = form{Values: map[string]string{}, Errors: map[string]string{
				"": "This form was sent already (the page was reloaded or the form submitted twice), so no second token was made. " +
					"The token made the first time is in the list below, but it cannot be shown again: if you did not copy it, revoke it and create another.",
			}}
		})
		return
	}
	plain, t, err := a.svc.CreateToken(r.Context(), in)
	if err != nil {
		// No token was made: the nonce is good again, so that sending this
		// form once more (a reload) is not taken for a repeat.
		if berr := a.nonces.Burst(r.Context(), key, 1); berr != nil {
			a.logger.LogAttrs(r.Context(), slog.LevelWarn, "token form nonce: give back", slog.String("error", berr.Error()))
		}
		if f.fail(err) {
			a.showTokens(w, r, http.StatusBadRequest, func(d *tokensPage) { d.Create = f })
			return
		}
		a.pageServiceError(w, r, err)
		return
	}
	a.showTokens(w, r, http.StatusCreated, func(d *tokensPage) {
		d.NewToken, d.NewName = plain, t.Name
		d.Create = form{Values: map[string]string{}, Errors: map[string]string{}}
	})
}

// newNonce returns a fresh form nonce: 128 random bits (rand.Text).
func newNonce() string { return rand.Text() }

// validNonce reports whether s has the shape of a nonce of newNonce.
func validNonce(s string) bool {
	return len(s) == 26 && strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") == ""
}

// pageTokenLimit changes one token's rate limit.
func (a *Admin) pageTokenLimit(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	f := newForm(r, "rate_limit").ordered("rate_limit")
	f.Prefix = "limit-" + id + "-"
	n, err := parseRateLimit(f.Values["rate_limit"])
	if err == nil {
		_, err = a.svc.UpdateToken(r.Context(), id, TokenPatch{RateLimit: &n})
	}
	switch {
	case err == nil:
		redirect(w, r, "/tokens?done=limit")
	case f.fail(err):
		a.showTokens(w, r, http.StatusBadRequest, func(d *tokensPage) {
			for i := range d.Rows {
				if d.Rows[i].ID == id {
					d.Rows[i].Limit = &f
				}
			}
		})
	default:
		a.pageServiceError(w, r, err)
	}
}

func (a *Admin) pageRevokeToken(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	ctx := r.Context()
	if r.PostForm.Get("confirmed") != "1" {
		views, err := a.svc.ListTokens(ctx)
		if err != nil {
			a.pageServiceError(w, r, err)
			return
		}
		for _, v := range views {
			if v.ID == id {
				a.confirm(w, r, "Revoke API token",
					"Revoke the API token "+v.Name+" ("+v.Prefix+"…)? Clients using it are refused at once; this cannot be undone.",
					"/tokens/"+id+"/revoke", "Revoke token", "/tokens")
				return
			}
		}
		a.pageServiceError(w, r, fmt.Errorf("revoke token %s: %w", id, store.ErrNotFound))
		return
	}
	if err := a.svc.RevokeToken(ctx, id); err != nil {
		a.pageServiceError(w, r, err)
		return
	}
	redirect(w, r, "/tokens?done=revoked")
}

// splitModels reads a list of model names separated by commas, spaces or
// line breaks.
func splitModels(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
}

// parseExpiry reads the expiry field: blank (never), a date YYYY-MM-DD (the
// token works through that UTC day) or an RFC 3339 time.
func parseExpiry(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := parseDay(s); err == nil {
		return d.AddDate(0, 0, 1), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, invalid("expires_at", "enter a date as YYYY-MM-DD (or leave it blank for no expiry)")
}

// parseRateLimit reads the rate-limit field: blank is 0 (unlimited).
func parseRateLimit(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, invalid("rate_limit", "enter a whole number of requests per minute (0 or blank: unlimited)")
	}
	return n, validateRateLimit(n)
}

package adminui

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
)

// The login, logout and password pages. They use the same Service calls,
// throttling and cookies as the JSON API.

type loginPage struct {
	page
	Error string
	// BadPassword: the error is about the password typed (none, or not
	// the right one), which the field then reports as invalid.
	BadPassword bool
}

func (a *Admin) pageLogin(w http.ResponseWriter, r *http.Request) {
	if s, err := a.svc.Session(r.Context(), a.sessionID(r)); err == nil {
		if s.MustChangePassword {
			redirect(w, r, "/password")
			return
		}
		redirect(w, r, "/")
		return
	}
	p := a.basePage(r, "Log in", "")
	if r.URL.Query().Get("done") == "changed" {
		p.Flash = "Password changed. Log in with your new password."
	}
	a.renderPage(w, r, http.StatusOK, "login", loginPage{page: p})
}

// pageLoginPost logs in. Every failure of the password itself (wrong, or
// none set) gets the same page; the password is never shown back.
func (a *Admin) pageLoginPost(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, msg string) {
		a.renderPage(w, r, status, "login", loginPage{page: a.basePage(r, "Log in", ""), Error: msg,
			BadPassword: status == http.StatusBadRequest || status == http.StatusUnauthorized})
	}
	ok, retry, err := a.takeAttempt(r, true)
	switch {
	case err != nil:
		fail(http.StatusServiceUnavailable, "Logging in is unavailable right now; try again in a moment.")
		return
	case !ok:
		w.Header().Set("Retry-After", strconv.Itoa(retry))
		fail(http.StatusTooManyRequests, "Too many attempts. Wait "+strconv.Itoa(retry)+" s and try again.")
		return
	}
	if !a.parseForm(w, r) {
		return
	}
	pw := r.PostForm.Get("password")
	if pw == "" {
		fail(http.StatusBadRequest, "Enter the admin password.")
		return
	}
	ctx := r.Context()
	id, _, mustChange, err := a.svc.Login(ctx, pw)
	if err != nil {
		if errors.Is(err, ErrInvalidPassword) {
			a.logger.LogAttrs(ctx, slog.LevelWarn, "admin login failed", slog.String("client", a.clientKey(r)))
			fail(http.StatusUnauthorized, "Invalid password.")
			return
		}
		a.pageServiceError(w, r, err)
		return
	}
	a.startSession(w, r, id)
	if mustChange {
		redirect(w, r, "/password")
		return
	}
	redirect(w, r, "/")
}

// startSession ends the session the browser had (so a planted cookie
// never becomes a logged-in one) and sets the new one's cookie.
func (a *Admin) startSession(w http.ResponseWriter, r *http.Request, id string) {
	ctx := r.Context()
	if old := a.sessionID(r); old != "" {
		if err := a.svc.Logout(ctx, old); err != nil {
			a.logger.LogAttrs(ctx, slog.LevelWarn, "end previous session", slog.String("error", err.Error()))
		}
	}
	a.logger.LogAttrs(ctx, slog.LevelInfo, "admin logged in", slog.String("client", a.clientKey(r)))
	http.SetCookie(w, a.sessionCookie(r, id))
}

func (a *Admin) pageLogout(w http.ResponseWriter, r *http.Request) {
	if err := a.svc.Logout(r.Context(), a.sessionID(r)); err != nil {
		a.pageServiceError(w, r, err)
		return
	}
	http.SetCookie(w, a.sessionCookie(r, ""))
	w.Header().Set("Clear-Site-Data", `"cache"`) // pages seen while logged in (a new token) leave the browser's cache
	redirect(w, r, "/login?done=logout")
}

type passwordPage struct {
	page
	Form form
}

// passwordFields are the password form's fields in page order.
var passwordFields = []string{"current", "new", "confirm"}

func (a *Admin) pagePassword(w http.ResponseWriter, r *http.Request) {
	a.renderPage(w, r, http.StatusOK, "password", passwordPage{page: a.basePage(r, "Password", "password"),
		Form: newForm(r).ordered(passwordFields...)})
}

// pagePasswordPost changes the password: every session ends, and this
// browser gets a fresh one (it has just proved the password). No typed
// value is ever shown back.
func (a *Admin) pagePasswordPost(w http.ResponseWriter, r *http.Request) {
	f := newForm(r).ordered(passwordFields...)
	show := func(status int) {
		a.renderPage(w, r, status, "password", passwordPage{page: a.basePage(r, "Password", "password"), Form: f})
	}
	ok, retry, err := a.takeAttempt(r, false)
	switch {
	case err != nil:
		f.Errors[""] = "Changing the password is unavailable right now; try again in a moment."
		show(http.StatusServiceUnavailable)
		return
	case !ok:
		w.Header().Set("Retry-After", strconv.Itoa(retry))
		f.Errors[""] = "Too many attempts. Wait " + strconv.Itoa(retry) + " s and try again."
		show(http.StatusTooManyRequests)
		return
	}
	cur, nw, confirm := r.PostForm.Get("current"), r.PostForm.Get("new"), r.PostForm.Get("confirm")
	if cur == "" {
		f.Errors["current"] = "Enter your current password."
	}
	switch err := validateNewPassword("new", nw); {
	case nw == "":
		f.Errors["new"] = "Choose a new password."
	case err != nil:
		f.fail(err)
	case confirm != nw:
		f.Errors["confirm"] = "The two new passwords differ."
	}
	if len(f.Errors) > 0 {
		show(http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	if err := a.svc.ChangePassword(ctx, cur, nw); err != nil {
		if f.fail(err) {
			show(http.StatusBadRequest)
			return
		}
		a.pageServiceError(w, r, err)
		return
	}
	id, _, _, err := a.svc.Login(ctx, nw)
	if err != nil {
		a.logger.LogAttrs(ctx, slog.LevelWarn, "new session after a password change", slog.String("error", err.Error()))
		http.SetCookie(w, a.sessionCookie(r, ""))
		redirect(w, r, "/login?done=changed")
		return
	}
	a.startSession(w, r, id)
	redirect(w, r, "/?done=password")
}

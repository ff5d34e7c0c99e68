package adminui

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// The credentials page: the list with each credential's live state, the
// add form (with an optional check against the upstream first), bulk add,
// and the per-row actions. The Atlassian token is never shown back, not
// even to the person who just typed it.

// maxBulkLines bounds one bulk paste.
const maxBulkLines = 500

// credRow is a credential as the pages list it: its stored record (token
// masked) and the pool's live view of it.
type credRow struct {
	ID, Email, Label, CloudID string
	TokenMasked               string
	TokenReadable             bool
	Enabled                   bool
	// State is ready, cooling, invalid, disabled or unknown (not in the
	// pool: no pool, or not synced yet).
	State         string
	CooldownUntil time.Time
	Reason        string
	InFlight      int
	Limit         int
	Requests      int64
	Failures      int64
	Tokens        int64
	LastError     string
	LastErrorAt   time.Time
}

// Name is how a credential is called on a page: its label, else its email.
func (c credRow) Name() string { return cmp.Or(c.Label, c.Email) }

func rowFromStatus(s pool.CredentialStatus) credRow {
	return credRow{
		ID: s.ID, Email: s.Email, Label: s.Label, Enabled: s.Enabled, State: s.State,
		CooldownUntil: s.CooldownUntil, Reason: s.Reason, InFlight: s.InFlight, Limit: s.Limit,
		Requests: s.Requests, Failures: s.Failures, Tokens: s.InputTokens + s.OutputTokens,
		LastError: s.LastError, LastErrorAt: s.LastErrorAt,
	}
}

type credentialsPage struct {
	page
	HasPool  bool
	CanCheck bool
	Rows     []credRow
	Add      form // email, cloud_id, label; the token is never kept
	Check    *CheckResult
	Bulk     form // its lines (tokens) are never kept
	Report   []bulkLine
}

// bulkLine is the result of one pasted line.
type bulkLine struct {
	Line    int
	Email   string // "" when the line's email is not valid (it might be anything)
	Result  string // added, duplicate, invalid, failed
	Message string
}

func (a *Admin) credentialsData(r *http.Request) (credentialsPage, error) {
	d := credentialsPage{page: a.basePage(r, "Credentials", "credentials"), CanCheck: a.checker != nil,
		Add: newForm(r, "email", "cloud_id", "label").ordered("email", "token", "cloud_id", "label"), Bulk: newForm(r).ordered("lines")}
	views, err := a.svc.ListCredentials(r.Context())
	if err != nil {
		return d, err
	}
	live := map[string]pool.CredentialStatus{}
	if a.pool != nil {
		d.HasPool = true
		for _, s := range a.pool.Status().Credentials {
			live[s.ID] = s
		}
	}
	for _, v := range views {
		row := credRow{State: "unknown"}
		if s, ok := live[v.ID]; ok {
			row = rowFromStatus(s)
		}
		row.ID, row.Email, row.Label, row.CloudID, row.Enabled = v.ID, v.Email, v.Label, v.CloudID, v.Enabled
		row.TokenMasked, row.TokenReadable = v.TokenMasked, v.TokenReadable
		if !v.Enabled {
			row.State = pool.StateDisabled
		}
		d.Rows = append(d.Rows, row)
	}
	return d, nil
}

func (a *Admin) showCredentials(w http.ResponseWriter, r *http.Request, status int, edit func(*credentialsPage)) {
	d, err := a.credentialsData(r)
	if err != nil {
		a.pageServiceError(w, r, err)
		return
	}
	if edit != nil {
		edit(&d)
	}
	a.renderPage(w, r, status, "credentials", d)
}

func (a *Admin) pageCredentials(w http.ResponseWriter, r *http.Request) {
	a.showCredentials(w, r, http.StatusOK, nil)
}

func credentialInput(r *http.Request) CredentialInput {
	return CredentialInput{
		Email:   r.PostForm.Get("email"),
		Token:   r.PostForm.Get("token"),
		CloudID: r.PostForm.Get("cloud_id"),
		Label:   r.PostForm.Get("label"),
	}
}

// pageAddCredential adds a credential, or with action=check (the page
// without script) only checks it and shows the verdict. Bad input is
// answered with every field's error at once.
func (a *Admin) pageAddCredential(w http.ResponseWriter, r *http.Request) {
	in := credentialInput(r)
	if _, errs := credentialProblems(in); len(errs) > 0 {
		// Every field's problem at once, not one per try.
		a.showCredentials(w, r, http.StatusBadRequest, func(d *credentialsPage) {
			for _, err := range errs {
				d.Add.fail(err)
			}
		})
		return
	}
	if r.PostForm.Get("action") == "check" {
		res, err := a.checkCredential(r.Context(), in)
		status := a.formStatus(w, r, err)
		if status == 0 {
			return
		}
		a.showCredentials(w, r, status, func(d *credentialsPage) {
			if err != nil {
				d.Add.fail(err)
				if errors.Is(err, errNoChecker) {
					d.Add.Errors[""] = "Credential checks are not available on this server."
				}
				return
			}
			d.Check = &res
		})
		return
	}
	_, err := a.svc.AddCredential(r.Context(), in)
	if err == nil {
		redirect(w, r, "/credentials?done=added")
		return
	}
	status := a.formStatus(w, r, err)
	if status == 0 {
		return
	}
	a.showCredentials(w, r, status, func(d *credentialsPage) { d.Add.fail(err) })
}

// formStatus is the status of a form answer for err: 200 for none, 400 or
// 409 for a field's error, 503 without a checker. For any other error it
// renders the error page itself and returns 0.
func (a *Admin) formStatus(w http.ResponseWriter, r *http.Request, err error) int {
	var ve *ValidationError
	var ce *ConflictError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &ce):
		return http.StatusConflict
	case errors.As(err, &ve):
		return http.StatusBadRequest
	case errors.Is(err, errNoChecker):
		return http.StatusServiceUnavailable
	}
	a.pageServiceError(w, r, err)
	return 0
}

type checkFragment struct {
	Check  *CheckResult
	Errors map[string]string
}

// fragmentCheck is the check for the page's script: the verdict (or the
// input's errors) as an HTML fragment, so that the typed token stays in
// its field.
func (a *Admin) fragmentCheck(w http.ResponseWriter, r *http.Request) {
	in := credentialInput(r)
	if _, errs := credentialProblems(in); len(errs) > 0 {
		d := checkFragment{Errors: map[string]string{}}
		for _, err := range errs {
			form{Errors: d.Errors}.fail(err)
		}
		a.render(w, r, http.StatusBadRequest, "credentials", "checkfrag", d)
		return
	}
	res, err := a.checkCredential(r.Context(), in)
	status := a.formStatus(w, r, err)
	if status == 0 {
		return
	}
	d := checkFragment{Errors: map[string]string{}}
	switch {
	case errors.Is(err, errNoChecker):
		d.Errors[""] = "Credential checks are not available on this server."
	case err != nil:
		form{Errors: d.Errors}.fail(err)
	default:
		d.Check = &res
	}
	a.render(w, r, status, "credentials", "checkfrag", d)
}

// pageBulkAdd adds one credential per "email:token" line and reports each
// line: added, duplicate, invalid (or failed, when the store failed).
// Blank lines and lines starting with # are skipped.
func (a *Admin) pageBulkAdd(w http.ResponseWriter, r *http.Request) {
	text := r.PostForm.Get("lines")
	var (
		ins   []CredentialInput
		lines []int
		bad   []bulkLine
	)
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(ins)+len(bad) > maxBulkLines {
			break // refused below; no need to read the rest
		}
		email, token, ok := strings.Cut(line, ":")
		if !ok {
			bad = append(bad, bulkLine{Line: i + 1, Result: "invalid", Message: "expected email:token"})
			continue
		}
		ins = append(ins, CredentialInput{Email: email, Token: token})
		lines = append(lines, i+1)
	}
	fail := func(msg string) {
		a.showCredentials(w, r, http.StatusBadRequest, func(d *credentialsPage) { d.Bulk.Errors["lines"] = msg })
	}
	switch n := len(ins) + len(bad); {
	case n == 0:
		fail("Paste at least one email:token line.")
		return
	case n > maxBulkLines:
		fail("At most " + strconv.Itoa(maxBulkLines) + " lines at a time.")
		return
	}
	_, errs := a.svc.AddCredentials(r.Context(), ins)
	report := make([]bulkLine, 0, len(ins)+len(bad))
	for i, err := range errs {
		l := bulkLine{Line: lines[i], Result: "added"}
		if email, err := validateEmail(ins[i].Email); err == nil {
			l.Email = email
		}
		var ve *ValidationError
		var ce *ConflictError
		switch {
		case err == nil:
		case errors.As(err, &ce):
			l.Result, l.Message = "duplicate", ce.Message
		case errors.As(err, &ve):
			l.Result, l.Message = "invalid", ve.Message
		default:
			a.logger.LogAttrs(r.Context(), slog.LevelError, "bulk add credential", slog.Int("line", l.Line), slog.String("error", err.Error()))
			l.Result, l.Message = "failed", "not saved: the store failed; try this line again"
		}
		report = append(report, l)
	}
	report = append(report, bad...)
	slices.SortFunc(report, func(x, y bulkLine) int { return x.Line - y.Line })
	a.showCredentials(w, r, http.StatusOK, func(d *credentialsPage) { d.Report = report })
}

func (a *Admin) pageEnableCredential(w http.ResponseWriter, r *http.Request) {
	a.credentialAction(w, r, "enabled", func(ctx context.Context, id string) error {
		enabled := true
		_, err := a.updateCredential(ctx, id, CredentialPatch{Enabled: &enabled})
		return err
	})
}

func (a *Admin) pageDisableCredential(w http.ResponseWriter, r *http.Request) {
	a.credentialAction(w, r, "disabled", func(ctx context.Context, id string) error {
		enabled := false
		_, err := a.updateCredential(ctx, id, CredentialPatch{Enabled: &enabled})
		return err
	})
}

func (a *Admin) pageResetCredential(w http.ResponseWriter, r *http.Request) {
	if a.pool == nil {
		a.pageError(w, r, http.StatusServiceUnavailable, "Pool not running", "The credential pool is not running, so there is no cooldown to reset.")
		return
	}
	a.credentialAction(w, r, "reset", func(_ context.Context, id string) error { return a.pool.Reset(id) })
}

func (a *Admin) pageDeleteCredential(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	if r.PostForm.Get("confirmed") != "1" {
		v, err := a.svc.GetCredential(r.Context(), id)
		if err != nil {
			a.pageServiceError(w, r, err)
			return
		}
		a.confirm(w, r, "Delete credential",
			"Delete the credential "+cmp.Or(v.Label, v.Email)+" ("+v.Email+")? The proxy stops using it at once; this cannot be undone.",
			"/credentials/"+id+"/delete", "Delete credential", "/credentials")
		return
	}
	a.credentialAction(w, r, "deleted", a.svc.RemoveCredential)
}

// credentialAction runs do on the {id} of the route and redirects back to
// the list with a notice.
func (a *Admin) credentialAction(w http.ResponseWriter, r *http.Request, done string, do func(context.Context, string) error) {
	if err := do(r.Context(), chi.URLParam(r, "id")); err != nil {
		a.pageServiceError(w, r, err)
		return
	}
	redirect(w, r, "/credentials?done="+done)
}

// updateCredential is Service.UpdateCredential for the API and the pages.
// Re-enabling means "try it again": the live pool state is cleared too
// (the pool may not know the credential yet: it resyncs on Changed).
func (a *Admin) updateCredential(ctx context.Context, id string, p CredentialPatch) (CredentialView, error) {
	enabling := p.Enabled != nil && *p.Enabled
	wasEnabled := false
	if enabling {
		if cur, err := a.svc.GetCredential(ctx, id); err == nil {
			wasEnabled = cur.Enabled
		}
	}
	v, err := a.svc.UpdateCredential(ctx, id, p)
	if err != nil {
		return v, err
	}
	if enabling && !wasEnabled && a.pool != nil {
		_ = a.pool.Reset(id)
	}
	return v, nil
}

type confirmPage struct {
	page
	Message string
	Action  string
	Button  string
	Cancel  string
}

// confirm renders the confirmation page of a destructive action: the page
// without script asks there, the script asks in a dialog and sends
// confirmed=1 at once.
func (a *Admin) confirm(w http.ResponseWriter, r *http.Request, title, msg, action, button, cancel string) {
	a.renderPage(w, r, http.StatusOK, "confirm", confirmPage{
		page: a.basePage(r, title, ""), Message: msg, Action: basePath + action, Button: button, Cancel: basePath + cancel,
	})
}

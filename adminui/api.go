package adminui

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// The admin JSON API. Request bodies are decoded strictly (unknown fields
// are refused so that a typo such as "enable" does not silently do nothing).

type loginRequest struct {
	Password string `json:"password"`
}

type loginResponse struct {
	CSRFToken          string `json:"csrf_token"`
	MustChangePassword bool   `json:"must_change_password"`
}

func (a *Admin) handleLogin(w http.ResponseWriter, r *http.Request) {
	if !a.throttle(w, r, true) {
		return
	}
	var req loginRequest
	if !a.decodeJSON(w, r, &req) {
		return
	}
	if req.Password == "" {
		renderError(w, http.StatusBadRequest, typeInvalidRequest, "invalid_value", "password", "password is required")
		return
	}
	ctx := r.Context()
	id, csrf, mustChange, err := a.svc.Login(ctx, req.Password)
	if err != nil {
		if errors.Is(err, ErrInvalidPassword) {
			a.logger.LogAttrs(ctx, slog.LevelWarn, "admin login failed", slog.String("client", a.clientKey(r)))
			renderError(w, http.StatusUnauthorized, typeAuthentication, "invalid_password", "", "invalid password")
			return
		}
		a.renderServiceError(w, r, err)
		return
	}
	a.startSession(w, r, id) // a new session id at every login
	writeJSON(w, http.StatusOK, loginResponse{CSRFToken: csrf, MustChangePassword: mustChange})
}

func (a *Admin) handleLogout(w http.ResponseWriter, r *http.Request) {
	if err := a.svc.Logout(r.Context(), a.sessionID(r)); err != nil {
		a.renderServiceError(w, r, err)
		return
	}
	http.SetCookie(w, a.sessionCookie(r, ""))
	w.Header().Set("Clear-Site-Data", `"cache"`) // pages seen while logged in (a new token) leave the browser's cache
	w.WriteHeader(http.StatusNoContent)
}

type sessionResponse struct {
	User               string    `json:"user"`
	CSRFToken          string    `json:"csrf_token"`
	MustChangePassword bool      `json:"must_change_password"`
	CreatedAt          time.Time `json:"created_at"`
	IdleExpiresAt      time.Time `json:"idle_expires_at"`
	ExpiresAt          time.Time `json:"expires_at"`
}

func (a *Admin) handleSession(w http.ResponseWriter, r *http.Request) {
	s, _ := sessionFrom(r.Context())
	writeJSON(w, http.StatusOK, sessionResponse{
		User:               "admin",
		CSRFToken:          s.CSRFToken,
		MustChangePassword: s.MustChangePassword,
		CreatedAt:          s.CreatedAt.UTC(),
		IdleExpiresAt:      s.IdleExpiresAt.UTC(),
		ExpiresAt:          s.ExpiresAt.UTC(),
	})
}

type passwordRequest struct {
	Current string `json:"current"`
	New     string `json:"new"`
}

func (a *Admin) handlePassword(w http.ResponseWriter, r *http.Request) {
	// Guessing the current password through this route is throttled like
	// a login (per client only: a stolen session is one client).
	if !a.throttle(w, r, false) {
		return
	}
	var req passwordRequest
	if !a.decodeJSON(w, r, &req) {
		return
	}
	if err := a.svc.ChangePassword(r.Context(), req.Current, req.New); err != nil {
		a.renderServiceError(w, r, err)
		return
	}
	http.SetCookie(w, a.sessionCookie(r, "")) // every session ended, this one too
	w.WriteHeader(http.StatusNoContent)
}

type listResponse[T any] struct {
	Object string `json:"object"`
	Data   []T    `json:"data"`
}

func (a *Admin) handleListCredentials(w http.ResponseWriter, r *http.Request) {
	cs, err := a.svc.ListCredentials(r.Context())
	if err != nil {
		a.renderServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, listResponse[CredentialView]{Object: "list", Data: cs})
}

type credentialRequest struct {
	Email          string `json:"email"`
	Token          string `json:"token"`
	CloudID        string `json:"cloud_id"`
	Label          string `json:"label"`
	MaxConcurrency int    `json:"max_concurrency"`
}

func (a *Admin) handleAddCredential(w http.ResponseWriter, r *http.Request) {
	var req credentialRequest
	if !a.decodeJSON(w, r, &req) {
		return
	}
	c, err := a.svc.AddCredential(r.Context(), CredentialInput(req))
	if err != nil {
		a.renderServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, a.svc.View(r.Context(), c))
}

type credentialPatchRequest struct {
	Enabled        *bool   `json:"enabled"`
	MaxConcurrency *int    `json:"max_concurrency"`
	Label          *string `json:"label"`
}

func (a *Admin) handleUpdateCredential(w http.ResponseWriter, r *http.Request) {
	var req credentialPatchRequest
	if !a.decodeJSON(w, r, &req) {
		return
	}
	v, err := a.updateCredential(r.Context(), chi.URLParam(r, "id"), CredentialPatch(req))
	if err != nil {
		a.renderServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *Admin) handleRemoveCredential(w http.ResponseWriter, r *http.Request) {
	if err := a.svc.RemoveCredential(r.Context(), chi.URLParam(r, "id")); err != nil {
		a.renderServiceError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *Admin) handleResetCredential(w http.ResponseWriter, r *http.Request) {
	if a.pool == nil {
		renderError(w, http.StatusServiceUnavailable, typeServer, "pool_unavailable", "", "the credential pool is not running")
		return
	}
	if err := a.pool.Reset(chi.URLParam(r, "id")); err != nil {
		a.renderServiceError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *Admin) handlePool(w http.ResponseWriter, r *http.Request) {
	if a.pool == nil {
		renderError(w, http.StatusServiceUnavailable, typeServer, "pool_unavailable", "", "the credential pool is not running")
		return
	}
	writeJSON(w, http.StatusOK, a.pool.Status())
}

func (a *Admin) handleListTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := a.svc.ListTokens(r.Context())
	if err != nil {
		a.renderServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, listResponse[TokenView]{Object: "list", Data: ts})
}

type tokenRequest struct {
	Name          string   `json:"name"`
	ExpiresAt     *string  `json:"expires_at"` // RFC 3339
	AllowedModels []string `json:"allowed_models"`
	RateLimit     int      `json:"rate_limit"`
}

// tokenCreated is the one answer that carries a client token in full.
type tokenCreated struct {
	Token string `json:"token"`
	TokenView
}

func (a *Admin) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	var req tokenRequest
	if !a.decodeJSON(w, r, &req) {
		return
	}
	in := TokenInput{Name: req.Name, AllowedModels: req.AllowedModels, RateLimit: req.RateLimit}
	if req.ExpiresAt != nil && strings.TrimSpace(*req.ExpiresAt) != "" {
		t, err := time.Parse(time.RFC3339, strings.TrimSpace(*req.ExpiresAt))
		if err != nil {
			renderError(w, http.StatusBadRequest, typeInvalidRequest, "invalid_value", "expires_at",
				"expires_at must be an RFC 3339 time, e.g. 2030-01-31T00:00:00Z")
			return
		}
		in.ExpiresAt = t
	}
	plain, t, err := a.svc.CreateToken(r.Context(), in)
	if err != nil {
		a.renderServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, tokenCreated{Token: plain, TokenView: TokenViewOf(t, a.svc.now())})
}

func (a *Admin) handleRevokeToken(w http.ResponseWriter, r *http.Request) {
	if err := a.svc.RevokeToken(r.Context(), chi.URLParam(r, "id")); err != nil {
		a.renderServiceError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type checkRequest struct {
	Email   string `json:"email"`
	Token   string `json:"token"`
	CloudID string `json:"cloud_id"`
}

// handleCheckCredential asks the upstream's credits check about a
// credential that is not stored (yet). The upstream's verdict, a refusal
// included, is a 200 CheckResult; bad input is a 400 naming the field.
func (a *Admin) handleCheckCredential(w http.ResponseWriter, r *http.Request) {
	var req checkRequest
	if !a.decodeJSON(w, r, &req) {
		return
	}
	res, err := a.checkCredential(r.Context(), CredentialInput{Email: req.Email, Token: req.Token, CloudID: req.CloudID})
	if err != nil {
		a.renderServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

type tokenPatchRequest struct {
	Name          *string   `json:"name"`
	ExpiresAt     *string   `json:"expires_at"` // RFC 3339; "" removes the expiry
	AllowedModels *[]string `json:"allowed_models"`
	RateLimit     *int      `json:"rate_limit"`
}

func (a *Admin) handleUpdateToken(w http.ResponseWriter, r *http.Request) {
	var req tokenPatchRequest
	if !a.decodeJSON(w, r, &req) {
		return
	}
	p := TokenPatch{Name: req.Name, AllowedModels: req.AllowedModels, RateLimit: req.RateLimit}
	if req.ExpiresAt != nil {
		var t time.Time
		if v := strings.TrimSpace(*req.ExpiresAt); v != "" {
			var err error
			if t, err = time.Parse(time.RFC3339, v); err != nil {
				renderError(w, http.StatusBadRequest, typeInvalidRequest, "invalid_value", "expires_at",
					"expires_at must be an RFC 3339 time, e.g. 2030-01-31T00:00:00Z, or \"\" for no expiry")
				return
			}
		}
		p.ExpiresAt = &t
	}
	v, err := a.svc.UpdateToken(r.Context(), chi.URLParam(r, "id"), p)
	if err != nil {
		a.renderServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// handleUsage answers GET /api/usage?from=YYYY-MM-DD&to=YYYY-MM-DD.
func (a *Admin) handleUsage(w http.ResponseWriter, r *http.Request) {
	from, to, err := parseUsageRange(r.URL.Query(), a.svc.now())
	if err != nil {
		a.renderServiceError(w, r, err)
		return
	}
	rep, err := a.svc.Usage(r.Context(), from, to)
	if err != nil {
		a.renderServiceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

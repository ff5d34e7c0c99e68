package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/observability"
	"github.com/atlassian-proxy/atlassian-proxy/openaierr"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

type tokenKey struct{}

// tokenFrom returns the verified client token of the request, if any.
func tokenFrom(ctx context.Context) (store.APIToken, bool) {
	t, ok := ctx.Value(tokenKey{}).(store.APIToken)
	return t, ok
}

// tokenID is the id of the request's API token ("" when none).
func tokenID(ctx context.Context) string {
	t, _ := tokenFrom(ctx)
	return t.ID
}

// bearer extracts the token of an "Authorization: Bearer <token>" header.
// present reports whether an Authorization header was sent at all.
func bearer(r *http.Request) (token string, present bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", true
	}
	return strings.TrimSpace(rest), true
}

const (
	msgMissingKey = "You didn't provide an API key. Send it in an Authorization header using Bearer auth " +
		"(Authorization: Bearer YOUR_KEY)."
	msgBadScheme  = "The Authorization header must use Bearer auth (Authorization: Bearer YOUR_KEY)."
	msgUnknownKey = "Incorrect API key provided. Ask the proxy's administrator for a valid token."
	msgExpiredKey = "The API key provided has expired. Ask the proxy's administrator for a new token."
)

// verify checks the request's bearer token. With required false a request
// without an Authorization header passes (as nobody); a header that is
// sent must always hold a valid token.
func (a *API) verify(r *http.Request, required bool) (store.APIToken, bool, *apiError) {
	raw, present := bearer(r)
	if !present {
		if !required {
			return store.APIToken{}, false, nil
		}
		return store.APIToken{}, false, unauthorized(msgMissingKey)
	}
	if raw == "" {
		return store.APIToken{}, false, unauthorized(msgBadScheme)
	}
	tok, err := a.tokens.Verify(raw)
	if err != nil {
		// The token itself never reaches a log or a response.
		if errors.Is(err, auth.ErrExpiredToken) {
			return store.APIToken{}, false, unauthorized(msgExpiredKey)
		}
		return store.APIToken{}, false, unauthorized(msgUnknownKey)
	}
	return tok, true, nil
}

func unauthorized(msg string) *apiError {
	return &apiError{status: http.StatusUnauthorized, typ: openaierr.TypeInvalidRequest, code: "invalid_api_key", message: msg}
}

func (a *API) tokenMiddleware(required bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok, ok, aerr := a.verify(r, required)
			if aerr != nil {
				aerr.log(r.Context())
				aerr.render(w)
				return
			}
			if ok {
				observability.AddLogAttrs(r.Context(), slog.String("token_id", tok.ID))
				if a.rateLimited(w, r, tok) {
					return
				}
				r = r.WithContext(context.WithValue(r.Context(), tokenKey{}, tok))
			}
			next.ServeHTTP(w, r)
		})
	}
}

// requireToken rejects requests without a valid client token.
func (a *API) requireToken(next http.Handler) http.Handler { return a.tokenMiddleware(true)(next) }

// optionalToken lets requests without an Authorization header through but
// rejects a token that is sent and not valid.
func (a *API) optionalToken(next http.Handler) http.Handler { return a.tokenMiddleware(false)(next) }

// allows reports whether the token may use model m. An empty AllowedModels
// allows every model; entries are matched through the catalog, so an alias
// and the canonical id name the same model.
func (a *API) allows(tok store.APIToken, m gateway.Model) bool {
	if len(tok.AllowedModels) == 0 {
		return true
	}
	for _, name := range tok.AllowedModels {
		if name == m.ID {
			return true
		}
		if am, ok := a.catalog.Lookup(name); ok && am.ID == m.ID {
			return true
		}
	}
	return false
}

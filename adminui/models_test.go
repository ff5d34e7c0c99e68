package adminui

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/gateway"
)

func TestCheckAllowedModels(t *testing.T) {
	t.Parallel()
	cat := gateway.DefaultCatalog()
	for _, ok := range [][]string{nil, {}, {"claude-sonnet-4"}, {"anthropic:claude-sonnet-4@20250514", " gpt-5 ", "gpt-5"}} {
		if err := checkAllowedModels(cat, ok); err != nil {
			t.Errorf("checkAllowedModels(%q) = %v", ok, err)
		}
	}
	secret := auth.TokenPrefix + "abcdefghijklmnopqrstuvwxyz0123456789"
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"no-such-model"}, "unknown model 'no-such-model'; GET /v1/models lists them"},
		{[]string{"gpt-5", "a", "b"}, "unknown models 'a', 'b'; GET /v1/models lists them"},
		{[]string{"m1", "m2", "m3", "m4", "m5", "m6", "m7"}, "unknown models 'm1', 'm2', 'm3', 'm4', 'm5' and 2 more; GET /v1/models lists them"},
		{[]string{"Claude-Sonnet-4"}, "unknown model 'Claude-Sonnet-4'; GET /v1/models lists them"}, // names are exact, as in requests
		{[]string{secret}, "an allowed model is not a model name (it looks like a token, so it is not shown); GET /v1/models lists them"},
		{[]string{secret, "nope"}, "unknown model 'nope'; GET /v1/models lists them"},
		{[]string{"ATATT3xFfGF0abc"}, "an allowed model is not a model name (it looks like a token, so it is not shown); GET /v1/models lists them"},
		{[]string{"a b"}, "allowed model names must not contain spaces"}, // the shape is checked first
	} {
		err := checkAllowedModels(cat, tc.in)
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != "allowed_models" || ve.Message != tc.want {
			t.Errorf("checkAllowedModels(%q) = %v, want allowed_models: %s", tc.in, err, tc.want)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error repeats a token: %v", err)
		}
	}
}

// TestAllowedModelsFromTheCatalog: the tokens page and the JSON API refuse
// an allowed model the catalog does not know (a token that every request
// would then be refused with), naming it; ids and aliases pass.
func TestAllowedModelsFromTheCatalog(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.pageLoggedIn(testPassword)
	api := e.loggedIn(testPassword)

	t.Run("page", func(t *testing.T) {
		body := wantPage(t, c.postTokenForm(url.Values{"name": {"ci"}, "allowed_models": {"claude-sonnet-4, no-such-model"}, "rate_limit": {"x"}}),
			http.StatusBadRequest, "Unknown model 'no-such-model'; GET /v1/models lists them", "Enter a whole number")
		wantTied(t, body, fieldTag(t, body, "allowed_models"), "allowed_models-error", "Unknown model")
		wantValue(t, body, "allowed_models", "claude-sonnet-4, no-such-model")
		wantValue(t, body, "name", "ci")
		wantAutofocus(t, body, "allowed_models")

		secret := auth.TokenPrefix + "pastedTokenValue0123456789abcdefghijklmnop"
		body = wantPage(t, c.postTokenForm(url.Values{"name": {"ci"}, "allowed_models": {"gpt-5 " + secret}}), http.StatusBadRequest,
			"it looks like a token, so it is not shown")
		if strings.Contains(body, secret[:16]) {
			t.Error("a token typed as a model is shown back")
		}
		if e.tokenCount(t) != 0 {
			t.Fatal("a refused form saved a token")
		}
		body = wantPage(t, c.postTokenForm(url.Values{"name": {"ci"}, "allowed_models": {"anthropic:claude-sonnet-4@20250514 claude-sonnet-4, gpt-5"}}),
			http.StatusCreated, "New API token")
		if strings.Contains(body, "aria-invalid") {
			t.Error("a field is marked invalid after success")
		}
	})
	t.Run("api create", func(t *testing.T) {
		before := e.tokenCount(t)
		d := wantError(t, api.do("POST", "/api/tokens", map[string]any{"name": "x", "allowed_models": []string{"gpt-5", "no-such-model"}}, nil),
			http.StatusBadRequest, "invalid_value", "allowed_models")
		if d.Message != "unknown model 'no-such-model'; GET /v1/models lists them" {
			t.Errorf("message = %q", d.Message)
		}
		if e.tokenCount(t) != before {
			t.Error("a refused create saved a token")
		}
		res := api.do("POST", "/api/tokens", map[string]any{"name": "x", "allowed_models": []string{"claude-opus-4"}}, nil)
		if res.status != http.StatusCreated {
			t.Fatalf("an alias: %d %s", res.status, res.body)
		}
	})
	t.Run("api update", func(t *testing.T) {
		var tok tokenCreated
		api.do("POST", "/api/tokens", map[string]any{"name": "patched", "allowed_models": []string{"gpt-5"}}, nil).decode(t, &tok)
		d := wantError(t, api.do("PATCH", "/api/tokens/"+tok.ID, map[string]any{"name": "renamed", "allowed_models": []string{"gpt-6"}}, nil),
			http.StatusBadRequest, "invalid_value", "allowed_models")
		if d.Message != "unknown model 'gpt-6'; GET /v1/models lists them" {
			t.Errorf("message = %q", d.Message)
		}
		ts, _ := e.admin.Service().ListTokens(t.Context())
		for _, v := range ts {
			if v.ID == tok.ID && (v.Name != "patched" || !slices.Equal(v.AllowedModels, []string{"gpt-5"})) {
				t.Errorf("a refused patch changed the token: %+v", v)
			}
		}
		res := api.do("PATCH", "/api/tokens/"+tok.ID, map[string]any{"allowed_models": []string{"gemini-2.5-pro"}}, nil)
		if res.status != http.StatusOK {
			t.Errorf("patch to an alias: %d %s", res.status, res.body)
		}
		if res := api.do("PATCH", "/api/tokens/"+tok.ID, map[string]any{"rate_limit": 5}, nil); res.status != http.StatusOK {
			t.Errorf("a patch without models: %d %s", res.status, res.body)
		}
	})
}

// TestAllowedModelsFromAConfiguredCatalog: Deps.Catalog (MODELS_FILE) is
// the catalog checked, not the built-in one.
func TestAllowedModelsFromAConfiguredCatalog(t *testing.T) {
	t.Parallel()
	cat, err := gateway.LoadCatalog(strings.NewReader(`{"models":[{"id":"house:model-1","upstream":"model-1","route":"unified",` +
		`"owned_by":"house","aliases":["model-1"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{catalog: cat})
	api := e.loggedIn(testPassword)
	if res := api.do("POST", "/api/tokens", map[string]any{"name": "x", "allowed_models": []string{"model-1", "house:model-1"}}, nil); res.status != http.StatusCreated {
		t.Errorf("a model of the configured catalog: %d %s", res.status, res.body)
	}
	wantError(t, api.do("POST", "/api/tokens", map[string]any{"name": "x", "allowed_models": []string{"claude-sonnet-4"}}, nil),
		http.StatusBadRequest, "invalid_value", "allowed_models")
}

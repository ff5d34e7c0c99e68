package adminui

import (
	"net/http"
	"slices"
	"testing"
	"time"
)

func TestUpdateTokenAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c := e.loggedIn(testPassword)
	res := c.do("POST", "/api/tokens", map[string]any{"name": "ci", "rate_limit": 10, "allowed_models": []string{"gpt-5"},
		"expires_at": "2031-01-01T00:00:00Z"}, nil)
	var tok tokenCreated
	res.decode(t, &tok)
	path := "/api/tokens/" + tok.ID
	stored := func() TokenView {
		t.Helper()
		ts, err := e.admin.Service().ListTokens(t.Context())
		if err != nil || len(ts) != 1 {
			t.Fatalf("tokens = %v, %v", ts, err)
		}
		return ts[0]
	}
	changed := e.changed.Load()

	steps := []struct {
		name  string
		body  any
		check func(TokenView) bool
	}{
		{"rate limit", map[string]any{"rate_limit": 120}, func(v TokenView) bool { return v.RateLimit == 120 && v.Name == "ci" }},
		{"name", map[string]any{"name": "  deploy  "}, func(v TokenView) bool { return v.Name == "deploy" && v.RateLimit == 120 }},
		{"models", map[string]any{"allowed_models": []string{"gpt-5", " claude-opus-4 ", "gpt-5"}}, func(v TokenView) bool {
			return slices.Equal(v.AllowedModels, []string{"gpt-5", "claude-opus-4"})
		}},
		{"every model again", map[string]any{"allowed_models": []string{}}, func(v TokenView) bool { return len(v.AllowedModels) == 0 }},
		{"expiry", map[string]any{"expires_at": "2032-02-03T04:05:06+01:00"}, func(v TokenView) bool {
			return v.ExpiresAt != nil && v.ExpiresAt.Equal(time.Date(2032, 2, 3, 3, 5, 6, 0, time.UTC))
		}},
		{"no expiry", map[string]any{"expires_at": ""}, func(v TokenView) bool { return v.ExpiresAt == nil }},
		{"unlimited", map[string]any{"rate_limit": 0}, func(v TokenView) bool { return v.RateLimit == 0 && v.Name == "deploy" }},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			res := c.do("PATCH", path, st.body, nil)
			if res.status != http.StatusOK {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			var got TokenView
			res.decode(t, &got)
			if !st.check(got) || !st.check(stored()) {
				t.Errorf("answer %+v, stored %+v", got, stored())
			}
			if _, hasToken := decodeMap(t, res)["token"]; hasToken {
				t.Error("the answer carries a token")
			}
		})
	}
	if n := e.changed.Load() - changed; n != int64(len(steps)) {
		t.Errorf("Changed ran %d times, want %d (the token cache must reload)", n, len(steps))
	}

	before := stored()
	bad := []struct {
		name   string
		path   string
		body   any
		status int
		code   string
		param  string
	}{
		{"empty patch", path, map[string]any{}, 400, "invalid_value", ""},
		{"empty name", path, map[string]any{"name": " "}, 400, "invalid_value", "name"},
		{"past expiry", path, map[string]any{"expires_at": "2001-01-01T00:00:00Z"}, 400, "invalid_value", "expires_at"},
		{"bad expiry", path, map[string]any{"expires_at": "tomorrow"}, 400, "invalid_value", "expires_at"},
		{"negative rate limit", path, map[string]any{"rate_limit": -1}, 400, "invalid_value", "rate_limit"},
		{"empty model", path, map[string]any{"allowed_models": []string{""}}, 400, "invalid_value", "allowed_models"},
		{"wrong type", path, `{"rate_limit":"9"}`, 400, "invalid_type", "rate_limit"},
		{"unknown field", path, map[string]any{"prefix": "x"}, 400, "unknown_field", "prefix"},
		{"mixed good and bad", path, map[string]any{"name": "fine", "rate_limit": -5}, 400, "invalid_value", "rate_limit"},
		{"unknown id", "/api/tokens/tok_nope", map[string]any{"rate_limit": 1}, 404, "not_found", ""},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, c.do("PATCH", tc.path, tc.body, nil), tc.status, tc.code, tc.param)
		})
	}
	if after := stored(); after.Name != before.Name || after.RateLimit != before.RateLimit {
		t.Errorf("a refused patch changed the token: %+v → %+v", before, after)
	}
	t.Run("an expired token can still be renamed", func(t *testing.T) {
		now := time.Now()
		e := newEnv(t, envOptions{})
		c := e.loggedIn(testPassword)
		res := c.do("POST", "/api/tokens", map[string]any{"name": "old", "expires_at": now.Add(2 * time.Second).UTC().Format(time.RFC3339)}, nil)
		var tok tokenCreated
		res.decode(t, &tok)
		time.Sleep(2100 * time.Millisecond)
		res = c.do("PATCH", "/api/tokens/"+tok.ID, map[string]any{"name": "renamed"}, nil)
		var got TokenView
		res.decode(t, &got)
		if res.status != 200 || got.Name != "renamed" || !got.Expired {
			t.Errorf("rename an expired token: %d %s", res.status, res.body)
		}
	})
}

func decodeMap(t *testing.T, res response) map[string]any {
	t.Helper()
	var m map[string]any
	res.decode(t, &m)
	return m
}

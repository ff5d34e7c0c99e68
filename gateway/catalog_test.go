package gateway

import (
	"strings"
	"testing"
)

func TestDefaultCatalogNames(t *testing.T) {
	c := DefaultCatalog()
	tests := []struct {
		name, wantID, wantUpstream string
	}{
		// The original tool's names, exactly as written.
		{"anthropic:claude-3-5-sonnet-v2@20241022", "anthropic:claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet-v2@20241022"},
		{"anthropic:claude-3-7-sonnet@20250219", "anthropic:claude-3-7-sonnet@20250219", "claude-3-7-sonnet@20250219"},
		{"anthropic:claude-sonnet-4@20250514", "anthropic:claude-sonnet-4@20250514", "claude-sonnet-4@20250514"},
		{"anthropic:claude-opus-4@20250514", "anthropic:claude-opus-4@20250514", "claude-opus-4@20250514"},
		{"bedrock:anthropic.claude-3-5-sonnet-20241022-v2:0", "bedrock:anthropic.claude-3-5-sonnet-20241022-v2:0", "anthropic.claude-3-5-sonnet-20241022-v2:0"},
		{"bedrock:anthropic.claude-3-7-sonnet-20250219-v1:0", "bedrock:anthropic.claude-3-7-sonnet-20250219-v1:0", "anthropic.claude-3-7-sonnet-20250219-v1:0"},
		{"bedrock:anthropic.claude-sonnet-4-20250514-v1:0", "bedrock:anthropic.claude-sonnet-4-20250514-v1:0", "anthropic.claude-sonnet-4-20250514-v1:0"},
		{"bedrock:anthropic.claude-opus-4-20250514-v1:0", "bedrock:anthropic.claude-opus-4-20250514-v1:0", "anthropic.claude-opus-4-20250514-v1:0"},
		{"google:gemini-2.0-flash-001", "google:gemini-2.0-flash-001", "gemini-2.0-flash-001"},
		{"google:gemini-2.5-pro-preview-03-25", "google:gemini-2.5-pro-preview-03-25", "gemini-2.5-pro-preview-03-25"},
		{"google:gemini-2.5-flash-preview-04-17", "google:gemini-2.5-flash-preview-04-17", "gemini-2.5-flash-preview-04-17"},
		// Bare upstream ids.
		{"claude-sonnet-4@20250514", "anthropic:claude-sonnet-4@20250514", "claude-sonnet-4@20250514"},
		{"anthropic.claude-opus-4-20250514-v1:0", "bedrock:anthropic.claude-opus-4-20250514-v1:0", "anthropic.claude-opus-4-20250514-v1:0"},
		// Newer ids of §5.
		{"bedrock:anthropic.claude-haiku-4-5-20251001-v1:0", "bedrock:anthropic.claude-haiku-4-5-20251001-v1:0", "anthropic.claude-haiku-4-5-20251001-v1:0"},
		{"bedrock:anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock:anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-sonnet-4-5-20250929-v1:0"},
		{"bedrock:anthropic.claude-opus-4-5-20251101-v1:0", "bedrock:anthropic.claude-opus-4-5-20251101-v1:0", "anthropic.claude-opus-4-5-20251101-v1:0"},
		{"bedrock:anthropic.claude-opus-4-6-v1:0", "bedrock:anthropic.claude-opus-4-6-v1:0", "anthropic.claude-opus-4-6-v1:0"},
		{"anthropic.claude-opus-4-6-v1:0", "bedrock:anthropic.claude-opus-4-6-v1:0", "anthropic.claude-opus-4-6-v1:0"},
		{"google:claude-sonnet-4-5@20250929", "anthropic:claude-sonnet-4-5@20250929", "claude-sonnet-4-5@20250929"},
		{"claude-sonnet-4-5@20250929", "anthropic:claude-sonnet-4-5@20250929", "claude-sonnet-4-5@20250929"},
		{"google:claude-opus-4-6", "anthropic:claude-opus-4-6", "claude-opus-4-6"},
		{"openai:gpt-5-2025-08-07", "openai:gpt-5-2025-08-07", "gpt-5-2025-08-07"},
		{"gpt-5-2025-08-07", "openai:gpt-5-2025-08-07", "gpt-5-2025-08-07"},
		// Short aliases.
		{"claude-sonnet-4", "anthropic:claude-sonnet-4@20250514", "claude-sonnet-4@20250514"},
		{"claude-opus-4", "anthropic:claude-opus-4@20250514", "claude-opus-4@20250514"},
		{"claude-3-7-sonnet", "anthropic:claude-3-7-sonnet@20250219", "claude-3-7-sonnet@20250219"},
		{"claude-3-5-sonnet", "anthropic:claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet-v2@20241022"},
		{"gemini-2.5-pro", "google:gemini-2.5-pro-preview-03-25", "gemini-2.5-pro-preview-03-25"},
		{"gemini-2.5-flash", "google:gemini-2.5-flash-preview-04-17", "gemini-2.5-flash-preview-04-17"},
		{"gemini-2.0-flash", "google:gemini-2.0-flash-001", "gemini-2.0-flash-001"},
		{"claude-sonnet-4-5", "anthropic:claude-sonnet-4-5@20250929", "claude-sonnet-4-5@20250929"},
		{"claude-opus-4-5", "bedrock:anthropic.claude-opus-4-5-20251101-v1:0", "anthropic.claude-opus-4-5-20251101-v1:0"},
		{"claude-haiku-4-5", "bedrock:anthropic.claude-haiku-4-5-20251001-v1:0", "anthropic.claude-haiku-4-5-20251001-v1:0"},
		{"claude-opus-4-6", "anthropic:claude-opus-4-6", "claude-opus-4-6"},
		{"gpt-5", "openai:gpt-5-2025-08-07", "gpt-5-2025-08-07"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ok := c.Lookup(tt.name)
			if !ok {
				t.Fatalf("Lookup(%q): not found", tt.name)
			}
			if m.ID != tt.wantID || m.Upstream != tt.wantUpstream || m.Route != RouteUnified {
				t.Errorf("Lookup(%q) = id %q upstream %q route %q, want %q %q %q", tt.name, m.ID, m.Upstream, m.Route, tt.wantID, tt.wantUpstream, RouteUnified)
			}
		})
	}
}

func TestDefaultCatalogEntries(t *testing.T) {
	models := DefaultCatalog().List()
	if len(models) < 18 {
		t.Errorf("got %d models, want at least 18", len(models))
	}
	for _, m := range models {
		if m.OwnedBy == "" || m.Created <= 0 {
			t.Errorf("%s: owned_by %q created %d, want both set", m.ID, m.OwnedBy, m.Created)
		}
		// Every id carries a vendor prefix, and its upstream id is the id
		// with only that first segment stripped.
		if got := StripVendor(m.ID); got == m.ID || got != m.Upstream {
			t.Errorf("%s: upstream %q, want %q", m.ID, m.Upstream, got)
		}
		if strings.HasSuffix(m.Upstream, ":") || m.Upstream == "0" || m.Upstream == "1" {
			t.Errorf("%s: upstream %q looks like a last-colon split", m.ID, m.Upstream)
		}
	}
}

func TestLookupExact(t *testing.T) {
	c := DefaultCatalog()
	for _, name := range []string{"", "CLAUDE-SONNET-4", "claude-sonnet-4 ", "claude", "bedrock:", "anthropic.claude-sonnet-4-20250514-v1", "0"} {
		if m, ok := c.Lookup(name); ok {
			t.Errorf("Lookup(%q) = %q, want not found", name, m.ID)
		}
	}
}

func TestCatalogIsImmutable(t *testing.T) {
	c := DefaultCatalog()
	m, _ := c.Lookup("claude-sonnet-4")
	m.Aliases[0] = "changed"
	list := c.List()
	list[0].ID = "changed"
	list[0].Aliases[0] = "changed"
	if m2, _ := c.Lookup("claude-sonnet-4"); m2.Aliases[0] == "changed" || c.List()[0].ID == "changed" || c.List()[0].Aliases[0] == "changed" {
		t.Error("a caller changed the catalog")
	}
}

func TestStripVendor(t *testing.T) {
	for in, want := range map[string]string{
		"bedrock:anthropic.claude-sonnet-4-20250514-v1:0": "anthropic.claude-sonnet-4-20250514-v1:0",
		"anthropic:claude-sonnet-4@20250514":              "claude-sonnet-4@20250514",
		"google:gemini-2.0-flash-001":                     "gemini-2.0-flash-001",
		"openai:gpt-5-2025-08-07":                         "gpt-5-2025-08-07",
		"anthropic.claude-sonnet-4-20250514-v1:0":         "anthropic.claude-sonnet-4-20250514-v1:0",
		"claude-sonnet-4":                                 "claude-sonnet-4",
		"other:thing":                                     "other:thing",
	} {
		if got := StripVendor(in); got != want {
			t.Errorf("StripVendor(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoadCatalog(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"valid", `{"models":[{"id":"a:b","upstream":"b","route":"unified","owned_by":"x","aliases":["b"]}]}`, ""},
		{"duplicate id", `{"models":[{"id":"a","upstream":"u","route":"unified"},{"id":"a","upstream":"u","route":"unified"}]}`, `name "a" already used by model "a"`},
		{"alias clashes with id", `{"models":[{"id":"a","upstream":"u","route":"unified"},{"id":"b","upstream":"u","route":"unified","aliases":["a"]}]}`, `name "a" already used`},
		{"duplicate alias", `{"models":[{"id":"a","upstream":"u","route":"unified","aliases":["x","x"]}]}`, `name "x" listed twice`},
		{"unknown route", `{"models":[{"id":"a","upstream":"u","route":"bedrock-native"}]}`, `unknown route "bedrock-native"`},
		{"empty route", `{"models":[{"id":"a","upstream":"u"}]}`, `empty route`},
		{"empty upstream", `{"models":[{"id":"a","upstream":" ","route":"unified"}]}`, `empty upstream`},
		{"empty id", `{"models":[{"id":"","upstream":"u","route":"unified"}]}`, `model 0: empty id`},
		{"empty alias", `{"models":[{"id":"a","upstream":"u","route":"unified","aliases":[""]}]}`, `empty alias`},
		{"no models", `{"models":[]}`, `no models`},
		{"unknown field", `{"models":[{"id":"a","upstream":"u","route":"unified","upsteam":"x"}]}`, `unknown field "upsteam"`},
		{"not JSON", `models: []`, `decode`},
		{"trailing data", `{"models":[{"id":"a","upstream":"u","route":"unified"}]} {}`, `trailing data`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadCatalog(strings.NewReader(tt.in))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("LoadCatalog: %v", err)
				}
				if m, ok := c.Lookup("b"); !ok || m.ID != "a:b" {
					t.Errorf("Lookup(b) = %+v, %v", m, ok)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("LoadCatalog error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

package gateway

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
)

// Routes name the upstream API a model is served through. Only the unified
// chat route exists today; the provider-native routes of the protocol page
// (OpenAI, Bedrock, Vertex) will be added as further values.
const (
	// RouteUnified is POST {BaseURL}/rovodev/v2/proxy/ai/v2/beta/chat.
	RouteUnified = "unified"
)

// knownRoutes is the set of routes the client can send to.
var knownRoutes = map[string]bool{RouteUnified: true}

// Model is one entry of the model catalog.
type Model struct {
	// ID is the client-facing name, e.g. "bedrock:anthropic.claude-sonnet-4-20250514-v1:0".
	ID string `json:"id"`
	// Upstream is the gateway's own id, sent as platform_attributes.model,
	// e.g. "anthropic.claude-sonnet-4-20250514-v1:0".
	Upstream string `json:"upstream"`
	// Route is the upstream API, one of the Route* constants.
	Route string `json:"route"`
	// OwnedBy is the vendor shown in /v1/models.
	OwnedBy string `json:"owned_by"`
	// Aliases are further client-facing names that resolve to this entry.
	Aliases []string `json:"aliases,omitempty"`
	// Created is the Unix time shown in /v1/models.
	Created int64 `json:"created"`
}

// Catalog is an immutable, validated set of models. Safe for concurrent use.
type Catalog struct {
	models []Model
	byName map[string]int // id or alias → index in models
}

// catalogFile is the on-disk shape of a catalog (models.json, MODELS_FILE).
type catalogFile struct {
	Models []Model `json:"models"`
}

//go:embed models.json
var defaultModels []byte

var defaultCatalog = sync.OnceValue(func() *Catalog {
	c, err := LoadCatalog(bytes.NewReader(defaultModels))
	if err != nil {
		panic("gateway: embedded models.json is invalid: " + err.Error())
	}
	return c
})

// DefaultCatalog returns the catalog embedded in the binary (models.json).
func DefaultCatalog() *Catalog { return defaultCatalog() }

// LoadCatalog reads a catalog in the models.json format:
//
//	{"models":[{"id":"…","upstream":"…","route":"unified","owned_by":"…","aliases":["…"],"created":0}]}
//
// Unknown keys, duplicate ids or aliases, unknown routes and empty ids or
// upstream ids are errors that name the offending entry.
func LoadCatalog(r io.Reader) (*Catalog, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var f catalogFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("catalog: decode: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("catalog: trailing data after the JSON object")
	}
	if len(f.Models) == 0 {
		return nil, errors.New("catalog: no models")
	}
	c := &Catalog{models: make([]Model, 0, len(f.Models)), byName: make(map[string]int)}
	for i, m := range f.Models {
		where := fmt.Sprintf("catalog: model %d (%q)", i, m.ID)
		switch {
		case strings.TrimSpace(m.ID) == "":
			return nil, fmt.Errorf("catalog: model %d: empty id", i)
		case strings.TrimSpace(m.Upstream) == "":
			return nil, fmt.Errorf("%s: empty upstream", where)
		case m.Route == "":
			return nil, fmt.Errorf("%s: empty route", where)
		case !knownRoutes[m.Route]:
			return nil, fmt.Errorf("%s: unknown route %q", where, m.Route)
		}
		m.Aliases = slices.Clone(m.Aliases)
		for _, name := range append([]string{m.ID}, m.Aliases...) {
			if strings.TrimSpace(name) == "" {
				return nil, fmt.Errorf("%s: empty alias", where)
			}
			if j, dup := c.byName[name]; dup {
				if j == len(c.models) {
					return nil, fmt.Errorf("%s: name %q listed twice", where, name)
				}
				return nil, fmt.Errorf("%s: name %q already used by model %q", where, name, c.models[j].ID)
			}
			c.byName[name] = len(c.models)
		}
		c.models = append(c.models, m)
	}
	return c, nil
}

// Lookup finds a model by its exact id or one of its aliases.
func (c *Catalog) Lookup(name string) (Model, bool) {
	i, ok := c.byName[name]
	if !ok {
		return Model{}, false
	}
	return c.models[i].clone(), true
}

// List returns every model in catalog order (aliases are not separate entries).
func (c *Catalog) List() []Model {
	out := make([]Model, len(c.models))
	for i, m := range c.models {
		out[i] = m.clone()
	}
	return out
}

func (m Model) clone() Model {
	m.Aliases = slices.Clone(m.Aliases)
	return m
}

// StripVendor removes the first "vendor:" segment of a client-facing model
// name and nothing more: "bedrock:anthropic.claude-sonnet-4-20250514-v1:0"
// becomes "anthropic.claude-sonnet-4-20250514-v1:0". A name whose first
// segment is not one of the known vendor prefixes is returned unchanged.
func StripVendor(name string) string {
	prefix, rest, ok := strings.Cut(name, ":")
	if !ok {
		return name
	}
	switch prefix {
	case "anthropic", "bedrock", "google", "openai", "vertex":
		return rest
	}
	return name
}

package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestLayers holds the dependency arrows of ARCHITECTURE.md: each package
// imports only the project packages it is allowed to.
func TestLayers(t *testing.T) {
	const mod = "github.com/atlassian-proxy/atlassian-proxy/"
	allowed := map[string][]string{
		"store":         {},
		"observability": {},
		"openaierr":     {},
		"pool":          {"store"},
		"auth":          {"store"},
		"gateway":       {"pool", "store"},
		"dispatch":      {"pool", "store"},
		"api":           {"dispatch", "gateway", "auth", "observability", "openaierr", "pool", "store", "usage", "ratelimit"},
		"adminui":       {"pool", "store", "auth", "observability", "openaierr", "gateway", "usage", "ratelimit"},
		"usage":         {"store"},
		"ratelimit":     {},
	}
	for pkg, ok := range allowed {
		t.Run(pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", mod+pkg).Output()
			if err != nil {
				t.Fatal(err)
			}
			for dep := range strings.FieldsSeq(string(out)) {
				rel, found := strings.CutPrefix(dep, mod)
				if !found || rel == pkg {
					continue
				}
				top := strings.SplitN(rel, "/", 2)[0]
				if top == pkg {
					continue
				}
				if !slices.Contains(ok, top) {
					t.Errorf("%s imports %s, which ARCHITECTURE.md does not allow", pkg, rel)
				}
			}
		})
	}
}

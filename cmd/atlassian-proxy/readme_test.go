package main

import (
	"os"
	"strings"
	"testing"

	"github.com/atlassian-proxy/atlassian-proxy/gateway"
)

// TestREADMEListsEveryModel keeps the README's model table and its
// configuration table in step with the code.
func TestREADMEListsEveryModel(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, m := range gateway.DefaultCatalog().List() {
		if !strings.Contains(readme, "`"+m.ID+"`") {
			t.Errorf("README does not list model %s", m.ID)
		}
		for _, a := range m.Aliases {
			if !strings.Contains(readme, "`"+a+"`") {
				t.Errorf("README does not list alias %s of %s", a, m.ID)
			}
		}
	}
	for _, s := range settings() {
		if !strings.Contains(readme, "`"+s.env+"`") || !strings.Contains(readme, "`--"+s.flag+"`") {
			t.Errorf("README's configuration table lacks %s / --%s", s.env, s.flag)
		}
	}
}

// Command promcheck validates Prometheus rule files the way Prometheus loads
// them (strict YAML, PromQL syntax, durations, label and annotation
// templates) and prints, as JSON, every rule with the metric names its
// expression selects. deploy/alerts_test.go builds and runs it to check the
// alert rules against the metrics the program exports.
//
// It is its own module so that the main module does not depend on
// Prometheus itself:
//
//	cd deploy/promcheck && go run . ../prometheus/alerts.yml
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// Rule is one rule of a checked file.
type Rule struct {
	Group       string            `json:"group"`
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Metrics are the metric names the expression selects, sorted.
	Metrics []string `json:"metrics"`
}

// File is the result for one rule file.
type File struct {
	Path   string   `json:"path"`
	Errors []string `json:"errors,omitempty"`
	Rules  []Rule   `json:"rules,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: promcheck RULES.yml...")
		os.Exit(2)
	}
	var out []File
	failed := false
	for _, path := range os.Args[1:] {
		f := check(path)
		failed = failed || len(f.Errors) > 0
		out = append(out, f)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if failed {
		os.Exit(1)
	}
}

func check(path string) File {
	f := File{Path: path}
	groups, errs := rulefmt.ParseFile(path, false)
	for _, err := range errs {
		f.Errors = append(f.Errors, err.Error())
	}
	if groups == nil {
		return f
	}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			rule := Rule{Group: g.Name, Alert: r.Alert, Record: r.Record, Expr: r.Expr,
				Labels: r.Labels, Annotations: r.Annotations}
			if r.For != 0 {
				rule.For = time.Duration(r.For).String()
			}
			expr, err := parser.ParseExpr(r.Expr)
			if err != nil {
				// rulefmt has reported it already; keep going.
				continue
			}
			rule.Metrics = metricNames(expr)
			f.Rules = append(f.Rules, rule)
		}
	}
	return f
}

// metricNames returns the metric names of every selector in expr: the
// selector's name, or the value of an equality matcher on __name__.
func metricNames(expr parser.Expr) []string {
	var names []string
	for _, ms := range parser.ExtractSelectors(expr) {
		for _, m := range ms {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual && !slices.Contains(names, m.Value) {
				names = append(names, m.Value)
			}
		}
	}
	slices.Sort(names)
	return names
}

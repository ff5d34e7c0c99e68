package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const (
	alertsFile         = "prometheus/alerts.yml"
	prometheusRuleFile = "kubernetes/components/prometheusrule/prometheusrule.yaml"
	operationsDoc      = "../docs/operations.md"
)

var update = flag.Bool("update", false, "rewrite "+prometheusRuleFile+" from "+alertsFile)

// generatedMetrics are series that Prometheus itself adds to every target.
var generatedMetrics = []string{"up"}

var promcheckTool tool

// promcheck returns the binary of ./promcheck (its own module, pinned to a
// Prometheus release), built once per test process.
func promcheck(t *testing.T) string {
	t.Helper()
	return promcheckTool.get(t, func() (string, error) {
		dir, err := tempDir()
		if err != nil {
			return "", err
		}
		bin := filepath.Join(dir, "promcheck")
		// go test puts its own go first on PATH.
		cmd := exec.Command("go", "build", "-buildvcs=false", "-o", bin, ".")
		cmd.Dir = "promcheck"
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", errors.New("build deploy/promcheck: " + err.Error() + "\n" + string(out))
		}
		return bin, nil
	})
}

type checkedRule struct {
	Group       string            `json:"group"`
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Metrics     []string          `json:"metrics"`
}

// checkRules validates a rule file with Prometheus' own loader and returns
// its rules with the metric names each one selects.
func checkRules(t *testing.T, path string) []checkedRule {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(promcheck(t), path)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var files []struct {
		Errors []string      `json:"errors"`
		Rules  []checkedRule `json:"rules"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &files); err != nil || len(files) != 1 {
		t.Fatalf("promcheck %s: %v %v\n%s", path, runErr, err, stderr.String())
	}
	for _, e := range files[0].Errors {
		t.Errorf("%s: %s", path, e)
	}
	if runErr != nil && len(files[0].Errors) == 0 {
		t.Fatalf("promcheck %s: %v\n%s", path, runErr, stderr.String())
	}
	return files[0].Rules
}

// TestAlertRules loads the alert rules as Prometheus does and checks that
// every metric they use is exported by the program, that every alert has a
// severity, a summary, a description and a runbook section in
// docs/operations.md.
func TestAlertRules(t *testing.T) {
	rules := checkRules(t, alertsFile)
	if len(rules) == 0 {
		t.Fatal("no rules")
	}
	exported := exportedMetrics(t)
	anchors := markdownAnchors(t, operationsDoc)
	seen := map[string]bool{}
	for _, r := range rules {
		if r.Alert == "" {
			t.Errorf("group %s: a recording rule (%s); this file holds alerts", r.Group, r.Record)
			continue
		}
		if seen[r.Alert] {
			t.Errorf("alert %s defined twice", r.Alert)
		}
		seen[r.Alert] = true
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
		}
		for _, a := range []string{"summary", "description", "runbook"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, a)
			}
		}
		doc, anchor, _ := strings.Cut(r.Annotations["runbook"], "#")
		if doc != "docs/operations.md" || !anchors[anchor] {
			t.Errorf("%s: runbook %q is no section of docs/operations.md", r.Alert, r.Annotations["runbook"])
		}
		if len(r.Metrics) == 0 {
			t.Errorf("%s: the expression selects no metric", r.Alert)
		}
		for _, m := range r.Metrics {
			if !exported[m] && !slices.Contains(generatedMetrics, m) {
				t.Errorf("%s uses %s, which the program does not export", r.Alert, m)
			}
		}
		if !strings.Contains(r.Expr, "atlassian_proxy_") && !strings.Contains(r.Expr, `job="`+proxyName+`"`) {
			t.Errorf("%s: %s is not limited to job %q", r.Alert, r.Expr, proxyName)
		}
	}
	for _, want := range []string{"AtlassianProxyNoReadyCredential", "AtlassianProxyAllCredentialsCooling",
		"AtlassianProxyUpstreamErrors", "AtlassianProxyHighLatency", "AtlassianProxyStoreDegraded",
		"AtlassianProxyStoreDataLost", "AtlassianProxyRetryBudgetExhausted"} {
		if !seen[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

// TestAlertRulesCatchErrors makes sure the check above fails where it should.
func TestAlertRulesCatchErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yml")
	if err := os.WriteFile(bad, []byte("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(rate(foo[5m]) > 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promcheck(t), bad).Output()
	if err == nil || !strings.Contains(string(out), "parse error") {
		t.Errorf("promcheck accepted an unbalanced expression: %v\n%s", err, out)
	}
}

// prometheusRule is the PrometheusRule generated from alerts.yml: a header
// and the file itself under spec.
func prometheusRule(t *testing.T) []byte {
	t.Helper()
	alerts, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.WriteString("# Generated from deploy/" + alertsFile + " by\n" +
		"#   go test ./deploy -run TestPrometheusRule -update\n" +
		"# Do not edit: change that file and run the command.\n" +
		"apiVersion: monitoring.coreos.com/v1\n" +
		"kind: PrometheusRule\n" +
		"metadata:\n" +
		"  name: " + proxyName + "\n" +
		"  labels:\n" +
		"    app.kubernetes.io/name: " + proxyName + "\n" +
		"spec:\n")
	for _, line := range strings.SplitAfter(string(alerts), "\n") {
		if strings.TrimSpace(line) != "" {
			b.WriteString("  ")
		}
		b.WriteString(line)
	}
	return b.Bytes()
}

// TestPrometheusRule: the component's PrometheusRule is alerts.yml itself.
func TestPrometheusRule(t *testing.T) {
	want := prometheusRule(t)
	if *update {
		if err := os.WriteFile(prometheusRuleFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(prometheusRuleFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is not generated from %s: run go test ./deploy -run TestPrometheusRule -update", prometheusRuleFile, alertsFile)
	}
}

// markdownAnchors are the GitHub anchors of a Markdown file's headings.
func markdownAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	punct := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	out := map[string]bool{}
	inCode := false
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
		}
		if inCode || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		h = strings.ToLower(punct.ReplaceAllString(h, ""))
		out[strings.ReplaceAll(h, " ", "-")] = true
	}
	return out
}

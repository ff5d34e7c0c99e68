// Package deploy holds the deployment files (Dockerfile, the Compose files,
// deploy/kubernetes, deploy/prometheus, deploy/grafana) and the tests that
// check them against the program: every kustomize overlay is rendered and
// its image, ports, probes, shutdown timings, security settings, secrets and
// replica shape are checked; the Compose files are parsed with their load
// balancer, Prometheus and Grafana configurations; the alert rules are
// validated with Prometheus' own parser and their metrics compared with the
// ones the program exports.
package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// kustomizeModule is the kustomize CLI the test renders with. Set KUSTOMIZE
// to a kustomize binary to skip building it.
const kustomizeModule = "sigs.k8s.io/kustomize/kustomize/v5@v5.7.1"

const (
	image      = "ghcr.io/atlassian-proxy/atlassian-proxy"
	dataDir    = "/data"
	secretName = "atlassian-proxy"
	proxyName  = "atlassian-proxy"
	redisName  = "atlassian-proxy-redis"
	redisPort  = 6379
)

// tool is a program the tests build once per test process.
type tool struct {
	once sync.Once
	bin  string
	err  error
}

// get returns the tool's binary, made by build on the first call; a
// failure fails every test that needs the tool.
func (tl *tool) get(t *testing.T, build func() (string, error)) string {
	t.Helper()
	tl.once.Do(func() { tl.bin, tl.err = build() })
	if tl.err != nil {
		t.Fatal(tl.err)
	}
	return tl.bin
}

var kustomizeTool tool

// kustomize returns a kustomize binary: $KUSTOMIZE, or one built once per
// test process.
func kustomize(t *testing.T) string {
	t.Helper()
	return kustomizeTool.get(t, func() (string, error) {
		if bin := os.Getenv("KUSTOMIZE"); bin != "" {
			return bin, nil
		}
		dir, err := tempDir()
		if err != nil {
			return "", err
		}
		// go test puts its own go first on PATH.
		cmd := exec.Command("go", "install", kustomizeModule)
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", errors.New("go install " + kustomizeModule + ": " + err.Error() + "\n" + string(out))
		}
		return filepath.Join(dir, "kustomize"), nil
	})
}

var (
	tmpMu   sync.Mutex
	tmpDirs []string
)

// tempDir is a directory shared by the tests of this process (built tools);
// TestMain removes it.
func tempDir() (string, error) {
	dir, err := os.MkdirTemp("", "deploy-test-")
	if err == nil {
		tmpMu.Lock()
		tmpDirs = append(tmpDirs, dir)
		tmpMu.Unlock()
	}
	return dir, err
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range tmpDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

// build renders a kustomization directory and decodes every document; it
// also returns the rendered text.
func build(t *testing.T, dir string) ([]map[string]any, string) {
	t.Helper()
	cmd := exec.Command(kustomize(t), "build", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kustomize build %s: %v\n%s", dir, err, stderr.String())
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("kustomize build %s: output does not parse: %v", dir, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
	if len(docs) == 0 {
		t.Fatalf("kustomize build %s: no documents", dir)
	}
	return docs, string(out)
}

// get follows map keys; nil when a key is missing or a value is no map.
func get(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func list(v any, path ...string) []map[string]any {
	raw, _ := get(v, path...).([]any)
	var out []map[string]any
	for _, e := range raw {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func strs(v any, path ...string) []string {
	raw, _ := get(v, path...).([]any)
	var out []string
	for _, e := range raw {
		switch e := e.(type) {
		case string:
			out = append(out, e)
		case int:
			out = append(out, strconv.Itoa(e))
		}
	}
	return out
}

func find(docs []map[string]any, kind string) []map[string]any {
	var out []map[string]any
	for _, d := range docs {
		if d["kind"] == kind {
			out = append(out, d)
		}
	}
	return out
}

// named is the one document of kind and name; the test fails without it.
func named(t *testing.T, docs []map[string]any, kind, name string) map[string]any {
	t.Helper()
	for _, d := range find(docs, kind) {
		if get(d, "metadata", "name") == name {
			return d
		}
	}
	t.Fatalf("no %s %s", kind, name)
	return nil
}

// matches reports whether selector (matchLabels) selects labels.
func matches(selector, labels any) bool {
	sel, _ := selector.(map[string]any)
	l, _ := labels.(map[string]any)
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if l[k] != v {
			return false
		}
	}
	return true
}

func overlays(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join("kubernetes", "overlays", "*", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range dirs {
		out = append(out, filepath.Dir(d))
	}
	for _, want := range []string{"single", "ha"} {
		if !slices.Contains(out, filepath.Join("kubernetes", "overlays", want)) {
			t.Fatalf("overlays %v: want kubernetes/overlays/%s", out, want)
		}
	}
	return out
}

func TestKustomizeOverlays(t *testing.T) {
	for _, dir := range overlays(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			docs, text := build(t, dir)
			deps := find(docs, "Deployment")
			if len(deps) != 1 {
				t.Fatalf("%d Deployments, want 1", len(deps))
			}
			dep := deps[0]
			checkDeployment(t, dep)
			checkService(t, named(t, docs, "Service", proxyName), dep)
			checkNoSecrets(t, docs, text)
			if len(find(docs, "NetworkPolicy")) == 0 {
				t.Error("no NetworkPolicy")
			}
			for _, np := range find(docs, "NetworkPolicy") {
				if get(np, "spec", "podSelector", "matchLabels") == nil {
					t.Errorf("NetworkPolicy %v selects every pod of the namespace", get(np, "metadata", "name"))
				}
			}
			switch filepath.Base(dir) {
			case "single":
				checkSingle(t, docs, dep)
			case "ha":
				checkHA(t, docs, dep)
			}
		})
	}
}

// envOf returns a container's plain values by name and its entries.
func envOf(c map[string]any) (map[string]string, map[string]map[string]any) {
	values := map[string]string{}
	entries := map[string]map[string]any{}
	for _, e := range list(c, "env") {
		n, _ := e["name"].(string)
		entries[n] = e
		if v, ok := e["value"].(string); ok {
			values[n] = v
		}
	}
	return values, entries
}

func container(t *testing.T, workload map[string]any, name string) map[string]any {
	t.Helper()
	for _, c := range list(workload, "spec", "template", "spec", "containers") {
		if c["name"] == name {
			return c
		}
	}
	t.Fatalf("%v has no container %s", get(workload, "metadata", "name"), name)
	return nil
}

// preStopSleep is the seconds of a preStop "sleep N" (exec or the sleep action).
func preStopSleep(t *testing.T, c map[string]any) time.Duration {
	t.Helper()
	if s, ok := get(c, "lifecycle", "preStop", "sleep", "seconds").(int); ok {
		return time.Duration(s) * time.Second
	}
	cmd := strs(c, "lifecycle", "preStop", "exec", "command")
	if len(cmd) == 2 && cmd[0] == "sleep" {
		if n, err := strconv.Atoi(cmd[1]); err == nil {
			return time.Duration(n) * time.Second
		}
	}
	t.Fatalf("preStop %v: want a sleep of some seconds", get(c, "lifecycle", "preStop"))
	return 0
}

func checkDeployment(t *testing.T, dep map[string]any) {
	t.Helper()
	pod := get(dep, "spec", "template", "spec")
	if cs := list(pod, "containers"); len(cs) != 1 {
		t.Fatalf("%d containers, want 1", len(cs))
	}
	c := container(t, dep, proxyName)
	env, entries := envOf(c)
	checkEnvNames(t, "the Deployment", env)

	img, _ := c["image"].(string)
	if name, tag, _ := strings.Cut(img, ":"); name != image || tag == "" {
		t.Errorf("image = %q, want %s:TAG", img, image)
	}

	httpPort := portOf(t, effective(t, env, "PORT"))
	metricsPort := portOf(t, effective(t, env, "METRICS_ADDR"))
	if httpPort != portOf(t, settingDefault(t, "PORT")) || metricsPort != portOf(t, settingDefault(t, "METRICS_ADDR")) {
		t.Errorf("ports %d and %d: want the program's defaults of PORT and METRICS_ADDR", httpPort, metricsPort)
	}
	ports := map[string]int{}
	for _, p := range list(c, "ports") {
		n, _ := p["name"].(string)
		ports[n], _ = p["containerPort"].(int)
	}
	if ports["http"] != httpPort || ports["metrics"] != metricsPort {
		t.Errorf("container ports = %v, want http=%d (PORT) metrics=%d (METRICS_ADDR)", ports, httpPort, metricsPort)
	}

	checkProbe := func(name, path string) {
		t.Helper()
		p := get(c, name, "httpGet")
		if p == nil {
			t.Errorf("%s: no httpGet", name)
			return
		}
		if got := get(p, "path"); got != path {
			t.Errorf("%s path = %v, want %s", name, got, path)
		}
		if port := get(p, "port"); port != "http" && port != httpPort {
			t.Errorf("%s port = %v, want http or %d", name, port, httpPort)
		}
	}
	checkProbe("readinessProbe", "/ready")
	checkProbe("livenessProbe", "/health")

	if v := env["DATA_DIR"]; v != dataDir {
		t.Errorf("DATA_DIR = %q, want %s", v, dataDir)
	}
	var dataVol string
	for _, m := range list(c, "volumeMounts") {
		if m["mountPath"] == dataDir {
			dataVol, _ = m["name"].(string)
		}
	}
	if dataVol == "" {
		t.Errorf("no volume mounted at %s (the root file system is read-only)", dataDir)
	}

	for name, s := range settings(t) {
		if !s.Secret {
			continue
		}
		if e, ok := entries[name]; ok {
			if ref := get(e, "valueFrom", "secretKeyRef"); get(ref, "name") != secretName || get(ref, "key") != name {
				t.Errorf("%s: want a secretKeyRef to Secret %s key %s, got %v", name, secretName, name, e)
			}
		}
	}

	if get(pod, "securityContext", "runAsNonRoot") != true && get(c, "securityContext", "runAsNonRoot") != true {
		t.Error("runAsNonRoot is not set")
	}
	if get(c, "securityContext", "readOnlyRootFilesystem") != true {
		t.Error("readOnlyRootFilesystem is not set")
	}
	if get(c, "securityContext", "allowPrivilegeEscalation") != false {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if !slices.Contains(strs(c, "securityContext", "capabilities", "drop"), "ALL") {
		t.Error("capabilities are not all dropped")
	}

	// Pod deletion: preStop, then SIGTERM: SHUTDOWN_DELAY, SHUTDOWN_GRACE,
	// the abort of the streams still open. All must fit in the grace period.
	need := preStopSleep(t, c) + stopBudget(t, env)
	g, _ := get(pod, "terminationGracePeriodSeconds").(int)
	if time.Duration(g)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds = %d, want > preStop + SHUTDOWN_DELAY + SHUTDOWN_GRACE + %v = %v",
			g, abortGrace, need)
	}
	if get(c, "resources", "requests") == nil || get(c, "resources", "limits") == nil {
		t.Error("resources requests and limits are not both set")
	}
}

func checkService(t *testing.T, svc, dep map[string]any) {
	t.Helper()
	env, _ := envOf(container(t, dep, proxyName))
	want := map[string]int{"http": portOf(t, effective(t, env, "PORT")), "metrics": portOf(t, effective(t, env, "METRICS_ADDR"))}
	got := map[string]bool{}
	for _, p := range list(svc, "spec", "ports") {
		n, _ := p["name"].(string)
		target := p["targetPort"]
		if target != n && target != want[n] {
			t.Errorf("Service port %s targets %v, want %s or %d", n, target, n, want[n])
		}
		if p["port"] != want[n] {
			t.Errorf("Service port %s = %v, want %d", n, p["port"], want[n])
		}
		got[n] = true
	}
	if !got["http"] || !got["metrics"] {
		t.Errorf("Service ports %v, want http and metrics", got)
	}
	if !matches(get(svc, "spec", "selector"), get(dep, "spec", "template", "metadata", "labels")) {
		t.Errorf("Service selector %v does not select the pods", get(svc, "spec", "selector"))
	}
}

func checkSingle(t *testing.T, docs []map[string]any, dep map[string]any) {
	t.Helper()
	if r := get(dep, "spec", "replicas"); r != 1 {
		t.Errorf("replicas = %v, want 1", r)
	}
	if s := get(dep, "spec", "strategy", "type"); s != "Recreate" {
		t.Errorf("strategy = %v, want Recreate (SQLite on a ReadWriteOnce volume)", s)
	}
	for _, kind := range []string{"HorizontalPodAutoscaler", "PodDisruptionBudget", "StatefulSet"} {
		if len(find(docs, kind)) != 0 {
			t.Errorf("a %s in the single overlay", kind)
		}
	}
	c := container(t, dep, proxyName)
	_, entries := envOf(c)
	if _, ok := entries["REDIS_URL"]; ok {
		t.Error("REDIS_URL set in the single overlay")
	}
	for _, k := range []string{"ADMIN_PASSWORD", "SECRET_KEY"} {
		if get(entries[k], "valueFrom", "secretKeyRef", "optional") != true {
			t.Errorf("%s: want an optional secretKeyRef (generated when absent)", k)
		}
	}
	pvcs := find(docs, "PersistentVolumeClaim")
	if len(pvcs) != 1 {
		t.Fatalf("%d PersistentVolumeClaims, want 1 for %s", len(pvcs), dataDir)
	}
	var vol string
	for _, m := range list(c, "volumeMounts") {
		if m["mountPath"] == dataDir {
			vol, _ = m["name"].(string)
		}
	}
	found := false
	for _, v := range list(dep, "spec", "template", "spec", "volumes") {
		if v["name"] == vol {
			found = get(v, "persistentVolumeClaim", "claimName") == get(pvcs[0], "metadata", "name") && v["emptyDir"] == nil
		}
	}
	if !found {
		t.Errorf("volume %q at %s is not the PersistentVolumeClaim", vol, dataDir)
	}
}

// Literal secrets: a 32-byte key in base64, a password in a Redis URL.
var (
	keyLike      = regexp.MustCompile(`(^|[^A-Za-z0-9+/])[A-Za-z0-9+/]{43}=($|[^A-Za-z0-9+/=])`)
	redisURLPass = regexp.MustCompile(`rediss?://[^/@\s]*:[^/@\s]+@`)
)

// checkNoSecrets fails for a Secret in the output, a secret setting given
// as a literal value, or a string that looks like a key or a password.
func checkNoSecrets(t *testing.T, docs []map[string]any, text string) {
	t.Helper()
	if n := len(find(docs, "Secret")); n > 0 {
		t.Errorf("%d Secrets in the output: the operator creates them", n)
	}
	secret := map[string]bool{"REDISCLI_AUTH": true}
	for name, s := range settings(t) {
		secret[name] = s.Secret
	}
	for _, d := range docs {
		var walk func(v any)
		walk = func(v any) {
			switch v := v.(type) {
			case map[string]any:
				if n, ok := v["name"].(string); ok && secret[n] {
					if _, literal := v["value"]; literal {
						t.Errorf("%s %v: %s has a literal value; use a secretKeyRef", d["kind"], get(d, "metadata", "name"), n)
					}
				}
				for _, e := range v {
					walk(e)
				}
			case []any:
				for i, e := range v {
					if s, ok := e.(string); ok && s == "--requirepass" && i+1 < len(v) && !strings.HasPrefix(fmt.Sprint(v[i+1]), "$(") {
						t.Errorf("%s %v: --requirepass with a literal password", d["kind"], get(d, "metadata", "name"))
					}
					walk(e)
				}
			}
		}
		walk(d)
	}
	if keyLike.MatchString(text) {
		t.Errorf("the output holds what looks like a base64 key: %q", keyLike.FindString(text))
	}
	if redisURLPass.MatchString(text) {
		t.Errorf("the output holds a Redis URL with a password: %q", redisURLPass.FindString(text))
	}
}

// rel returns p (relative to this directory) relative to dir, for
// kustomizations written into temporary directories (kustomize refuses
// absolute paths).
func rel(t *testing.T, dir, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	r, err := filepath.Rel(dir, a)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.ToSlash(r)
}

// TestComponentsOnSingle renders the optional components on top of the
// single overlay, as deploy/README.md suggests.
func TestComponentsOnSingle(t *testing.T) {
	dir := t.TempDir()
	k := "resources:\n  - " + rel(t, dir, "kubernetes/overlays/single") +
		"\ncomponents:\n  - " + rel(t, dir, "kubernetes/components/servicemonitor") +
		"\n  - " + rel(t, dir, "kubernetes/components/prometheusrule") +
		"\n  - " + rel(t, dir, "grafana") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	docs, _ := build(t, dir)
	checkMonitoring(t, docs)
}

// checkMonitoring checks the ServiceMonitor, the PrometheusRule and the
// dashboard ConfigMap of a rendering.
func checkMonitoring(t *testing.T, docs []map[string]any) {
	t.Helper()
	sm := named(t, docs, "ServiceMonitor", proxyName)
	eps := list(sm, "spec", "endpoints")
	if len(eps) != 1 || eps[0]["port"] != "metrics" || eps[0]["path"] != "/metrics" {
		t.Errorf("ServiceMonitor endpoints = %v, want port metrics path /metrics", eps)
	}
	svc := named(t, docs, "Service", proxyName)
	if !matches(get(sm, "spec", "selector", "matchLabels"), get(svc, "metadata", "labels")) {
		t.Errorf("ServiceMonitor selector %v does not select Service %s", get(sm, "spec", "selector"), proxyName)
	}
	for _, other := range find(docs, "Service") {
		if get(other, "metadata", "name") != proxyName &&
			matches(get(sm, "spec", "selector", "matchLabels"), get(other, "metadata", "labels")) {
			t.Errorf("ServiceMonitor also selects Service %v", get(other, "metadata", "name"))
		}
	}

	// The PrometheusRule holds exactly the groups of alerts.yml.
	rule := named(t, docs, "PrometheusRule", proxyName)
	var alerts map[string]any
	raw, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &alerts); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(get(rule, "spec", "groups"), alerts["groups"]) {
		t.Errorf("PrometheusRule groups differ from %s", alertsFile)
	}

	// The dashboard ConfigMap holds the dashboard file itself.
	cm := named(t, docs, "ConfigMap", "atlassian-proxy-dashboard")
	if get(cm, "metadata", "labels", "grafana_dashboard") != "1" {
		t.Errorf("dashboard ConfigMap labels %v: want grafana_dashboard=1", get(cm, "metadata", "labels"))
	}
	dash, err := os.ReadFile(filepath.Join("grafana", "atlassian-proxy.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := get(cm, "data", "atlassian-proxy.json").(string); got != string(dash) {
		t.Errorf("dashboard ConfigMap data (%d bytes) differs from grafana/atlassian-proxy.json (%d bytes)", len(got), len(dash))
	}
}

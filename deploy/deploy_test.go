// Package deploy holds the deployment files (Dockerfile, docker-compose.yml,
// deploy/kubernetes) and this test, which renders every kustomize overlay and
// checks that image, ports, probes, data directory and security settings agree
// with the program.
package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
)

// kustomizeModule is the kustomize CLI the test renders with. Set KUSTOMIZE
// to a kustomize binary to skip building it.
const kustomizeModule = "sigs.k8s.io/kustomize/kustomize/v5@v5.7.1"

const (
	image        = "ghcr.io/atlassian-proxy/atlassian-proxy"
	httpPort     = 8000
	metricsPort  = 9090
	dataDir      = "/data"
	drainSeconds = 25 // SHUTDOWN_GRACE default
)

var (
	kustomizeOnce sync.Once
	kustomizeBin  string
	kustomizeErr  error
)

// kustomize returns a kustomize binary, built once per test process.
func kustomize(t *testing.T) string {
	t.Helper()
	kustomizeOnce.Do(func() {
		if bin := os.Getenv("KUSTOMIZE"); bin != "" {
			kustomizeBin = bin
			return
		}
		dir, err := os.MkdirTemp("", "kustomize-")
		if err != nil {
			kustomizeErr = err
			return
		}
		// Not removed per test: the binary is shared; TestMain removes it.
		tmpDirs = append(tmpDirs, dir)
		// go test puts its own go first on PATH.
		cmd := exec.Command("go", "install", kustomizeModule)
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			kustomizeErr = errors.New("go install " + kustomizeModule + ": " + err.Error() + "\n" + string(out))
			return
		}
		kustomizeBin = filepath.Join(dir, "kustomize")
	})
	if kustomizeErr != nil {
		t.Fatal(kustomizeErr)
	}
	return kustomizeBin
}

var tmpDirs []string

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range tmpDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

// build renders a kustomization directory and decodes every document.
func build(t *testing.T, dir string) []map[string]any {
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
	return docs
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

func find(docs []map[string]any, kind string) []map[string]any {
	var out []map[string]any
	for _, d := range docs {
		if d["kind"] == kind {
			out = append(out, d)
		}
	}
	return out
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
	if !slices.Contains(out, filepath.Join("kubernetes", "overlays", "single")) {
		t.Fatalf("overlays %v: want kubernetes/overlays/single", out)
	}
	return out
}

func TestKustomizeOverlays(t *testing.T) {
	for _, dir := range overlays(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			docs := build(t, dir)
			deps := find(docs, "Deployment")
			if len(deps) != 1 {
				t.Fatalf("%d Deployments, want 1", len(deps))
			}
			checkDeployment(t, deps[0])
			svcs := find(docs, "Service")
			if len(svcs) != 1 {
				t.Fatalf("%d Services, want 1", len(svcs))
			}
			checkService(t, svcs[0], deps[0])
			if filepath.Base(dir) == "single" {
				if r := get(deps[0], "spec", "replicas"); r != 1 {
					t.Errorf("single: replicas = %v, want 1", r)
				}
				if s := get(deps[0], "spec", "strategy", "type"); s != "Recreate" {
					t.Errorf("single: strategy = %v, want Recreate (SQLite on a ReadWriteOnce volume)", s)
				}
				if len(find(docs, "PersistentVolumeClaim")) != 1 {
					t.Error("single: want one PersistentVolumeClaim for /data")
				}
			}
			if len(find(docs, "NetworkPolicy")) == 0 {
				t.Error("no NetworkPolicy")
			}
		})
	}
}

func checkDeployment(t *testing.T, dep map[string]any) {
	t.Helper()
	pod := get(dep, "spec", "template", "spec")
	cs := list(pod, "containers")
	if len(cs) != 1 {
		t.Fatalf("%d containers, want 1", len(cs))
	}
	c := cs[0]

	img, _ := c["image"].(string)
	if name, _, _ := strings.Cut(img, ":"); name != image {
		t.Errorf("image = %q, want %s[:tag]", img, image)
	}

	ports := map[string]int{}
	for _, p := range list(c, "ports") {
		n, _ := p["name"].(string)
		ports[n], _ = p["containerPort"].(int)
	}
	if ports["http"] != httpPort || ports["metrics"] != metricsPort {
		t.Errorf("container ports = %v, want http=%d metrics=%d", ports, httpPort, metricsPort)
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

	env := map[string]map[string]any{}
	for _, e := range list(c, "env") {
		n, _ := e["name"].(string)
		env[n] = e
	}
	if v := get(env["DATA_DIR"], "value"); v != dataDir {
		t.Errorf("DATA_DIR = %v, want %s", v, dataDir)
	}
	for _, k := range []string{"ADMIN_PASSWORD", "SECRET_KEY"} {
		ref := get(env[k], "valueFrom", "secretKeyRef")
		if get(ref, "name") != "atlassian-proxy" || get(ref, "key") != k || get(ref, "optional") != true {
			t.Errorf("%s: want an optional secretKeyRef to Secret atlassian-proxy key %s, got %v", k, k, ref)
		}
	}

	var dataVol string
	for _, m := range list(c, "volumeMounts") {
		if m["mountPath"] == dataDir {
			dataVol, _ = m["name"].(string)
		}
	}
	if dataVol == "" {
		t.Errorf("no volume mounted at %s", dataDir)
	} else {
		found := false
		for _, v := range list(pod, "volumes") {
			if v["name"] == dataVol && (v["persistentVolumeClaim"] != nil || v["emptyDir"] == nil) {
				found = true
			}
		}
		if !found {
			t.Errorf("volume %q at %s is not persistent", dataVol, dataDir)
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
	if g, _ := get(pod, "terminationGracePeriodSeconds").(int); g <= drainSeconds {
		t.Errorf("terminationGracePeriodSeconds = %d, want > SHUTDOWN_GRACE (%ds)", g, drainSeconds)
	}
	if get(c, "lifecycle", "preStop") == nil {
		t.Error("no preStop hook")
	}
	if get(c, "resources", "requests") == nil || get(c, "resources", "limits") == nil {
		t.Error("resources requests and limits are not both set")
	}
}

func checkService(t *testing.T, svc, dep map[string]any) {
	t.Helper()
	want := map[string]int{"http": httpPort, "metrics": metricsPort}
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
	sel, _ := get(svc, "spec", "selector").(map[string]any)
	labels, _ := get(dep, "spec", "template", "metadata", "labels").(map[string]any)
	if len(sel) == 0 {
		t.Error("Service has no selector")
	}
	for k, v := range sel {
		if labels[k] != v {
			t.Errorf("Service selector %s=%v does not match the pod labels %v", k, v, labels)
		}
	}
}

// TestServiceMonitorComponent renders the optional component on top of the
// single overlay.
func TestServiceMonitorComponent(t *testing.T) {
	dir := t.TempDir()
	// kustomize refuses absolute paths: refer to the tree relative to dir.
	rel := func(p string) string {
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
	k := "resources:\n  - " + rel("kubernetes/overlays/single") +
		"\ncomponents:\n  - " + rel("kubernetes/components/servicemonitor") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	docs := build(t, dir)
	sms := find(docs, "ServiceMonitor")
	if len(sms) != 1 {
		t.Fatalf("%d ServiceMonitors, want 1", len(sms))
	}
	eps := list(sms[0], "spec", "endpoints")
	if len(eps) != 1 || eps[0]["port"] != "metrics" || eps[0]["path"] != "/metrics" {
		t.Errorf("ServiceMonitor endpoints = %v, want port metrics path /metrics", eps)
	}
	svc := find(docs, "Service")[0]
	sel, _ := get(sms[0], "spec", "selector", "matchLabels").(map[string]any)
	labels, _ := get(svc, "metadata", "labels").(map[string]any)
	for k, v := range sel {
		if labels[k] != v {
			t.Errorf("ServiceMonitor selector %s=%v does not match the Service labels %v", k, v, labels)
		}
	}
}

// dockerfileInstructions returns the Dockerfile's final stage as
// (instruction, arguments) pairs, continuation lines joined.
func dockerfileInstructions(t *testing.T) [][2]string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var all [][2]string
	var cur string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if rest, ok := strings.CutSuffix(line, "\\"); ok {
			cur += rest + " "
			continue
		}
		cur += line
		instr, args, _ := strings.Cut(cur, " ")
		all = append(all, [2]string{strings.ToUpper(instr), strings.Join(strings.Fields(args), " ")})
		cur = ""
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	last := -1
	for i, in := range all {
		if in[0] == "FROM" {
			last = i
		}
	}
	if last < 1 {
		t.Fatal("Dockerfile: want a multi-stage build")
	}
	return all[last:]
}

func TestDockerfile(t *testing.T) {
	final := dockerfileInstructions(t)
	var env, volume, user, health, expose, entry string
	for _, in := range final {
		switch in[0] {
		case "ENV":
			env += " " + in[1]
		case "VOLUME":
			volume += " " + in[1]
		case "USER":
			user = in[1]
		case "HEALTHCHECK":
			health = in[1]
		case "EXPOSE":
			expose += " " + in[1]
		case "ENTRYPOINT":
			entry = in[1]
		}
	}
	if !slices.Contains(strings.Fields(env), "DATA_DIR="+dataDir) {
		t.Errorf("final stage ENV %q: want DATA_DIR=%s", env, dataDir)
	}
	if f := strings.Fields(strings.NewReplacer("[", " ", "]", " ", `"`, " ", ",", " ").Replace(volume)); !slices.Contains(f, dataDir) {
		t.Errorf("final stage VOLUME %q: want %s", volume, dataDir)
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("final stage USER %q: want a non-root user", user)
	}
	if !strings.Contains(health, "/health") || strings.HasPrefix(health, "NONE") {
		t.Errorf("HEALTHCHECK %q: want a check of /health", health)
	}
	if !slices.Contains(strings.Fields(expose), "8000") {
		t.Errorf("EXPOSE %q: want 8000", expose)
	}
	if !strings.Contains(entry, "atlassian-proxy") {
		t.Errorf("ENTRYPOINT %q: want the atlassian-proxy binary", entry)
	}
}

func TestCompose(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Image       string   `yaml:"image"`
			Ports       []string `yaml:"ports"`
			Volumes     []string `yaml:"volumes"`
			Environment []string `yaml:"environment"`
			Healthcheck struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	s, ok := c.Services["atlassian-proxy"]
	if !ok {
		t.Fatal("docker-compose.yml: no service atlassian-proxy")
	}
	var vol string
	for _, v := range s.Volumes {
		if src, dst, ok := strings.Cut(v, ":"); ok && strings.TrimSuffix(dst, ":rw") == dataDir {
			vol = src
		}
	}
	if vol == "" {
		t.Errorf("volumes %v: want one mounted at %s", s.Volumes, dataDir)
	} else if _, named := c.Volumes[vol]; !named {
		t.Errorf("volume %q at %s is not a named volume", vol, dataDir)
	}
	if !slices.ContainsFunc(s.Ports, func(p string) bool { return strings.HasSuffix(p, ":8000") }) {
		t.Errorf("ports %v: want 8000 published", s.Ports)
	}
	if !slices.Contains(s.Environment, "DATA_DIR="+dataDir) {
		t.Errorf("environment %v: want DATA_DIR=%s", s.Environment, dataDir)
	}
	if !strings.Contains(strings.Join(s.Healthcheck.Test, " "), "/health") {
		t.Errorf("healthcheck %v: want a check of /health", s.Healthcheck.Test)
	}
}

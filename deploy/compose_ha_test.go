package deploy

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const haCompose = "docker-compose.ha.yml"

// TestComposeHA checks docker-compose.ha.yml: three replicas on Redis, the
// load balancer in front of exactly them, Prometheus scraping exactly their
// metrics ports with the alert rules, Grafana with the data source and the
// dashboard, and the secrets from .env.
func TestComposeHA(t *testing.T) {
	doc, text := composeFile(t, haCompose)
	if n, _ := doc["name"].(string); n == "" {
		t.Errorf("%s: no project name, so it would share the single instance's project", haCompose)
	}
	svcs := services(doc)
	checkComposeSecrets(t, haCompose, text, svcs)

	var replicas []string
	var redis string
	for name, s := range svcs {
		img, _ := s["image"].(string)
		switch {
		case strings.HasPrefix(img, image+":"):
			replicas = append(replicas, name)
		case strings.HasPrefix(img, "redis:"):
			redis = name
		}
	}
	slices.Sort(replicas)
	if len(replicas) != 3 {
		t.Fatalf("%s: replicas %v, want 3", haCompose, replicas)
	}
	if redis == "" {
		t.Fatalf("%s: no redis service", haCompose)
	}

	example := dotEnvExample(t)
	required := map[string]bool{}
	for _, m := range regexpAll(`\$\{([A-Za-z_][A-Za-z0-9_]*):\?`, withoutComments(text)) {
		required[m] = true
	}
	for v := range required {
		if _, ok := example[v]; !ok {
			t.Errorf(".env.example: no %s, which %s requires", v, haCompose)
		}
	}
	for k, v := range example {
		if secretEnv(t, k) && v != "" && k != "REDIS_URL" { // checked below
			t.Errorf(".env.example: %s has a value; leave secrets empty", k)
		}
	}
	u, err := url.Parse(example["REDIS_URL"])
	if err != nil || u.Scheme != "redis" || u.Hostname() != redis || u.Port() != strconv.Itoa(redisPort) || u.User != nil {
		t.Errorf(".env.example: REDIS_URL %q, want redis://%s:%d/N without a password (REDIS_PASSWORD carries it)", example["REDIS_URL"], redis, redisPort)
	}

	var port, metricsPort int
	for _, name := range replicas {
		s := svcs[name]
		env := composeEnv(s)
		checkEnvNames(t, haCompose+" "+name, env)
		for _, k := range []string{"REDIS_URL", "REDIS_PASSWORD", "SECRET_KEY", "ADMIN_PASSWORD"} {
			m := interpolation.FindStringSubmatch(env[k])
			if m == nil || !strings.HasPrefix(m[2], ":?") {
				t.Errorf("%s: %s = %q, want a required ${%s:?...} from .env", name, k, env[k], k)
			}
		}
		p, mp := portOf(t, effective(t, env, "PORT")), portOf(t, effective(t, env, "METRICS_ADDR"))
		if port == 0 {
			port, metricsPort = p, mp
		} else if p != port || mp != metricsPort {
			t.Errorf("%s: ports %d/%d differ from the other replicas' %d/%d", name, p, mp, port, metricsPort)
		}
		if len(strs(s, "ports")) != 0 {
			t.Errorf("%s publishes ports; only the load balancer should (TRUSTED_PROXIES trusts the Compose network)", name)
		}
		if !strings.Contains(strings.Join(strs(s, "healthcheck", "test"), " "), ":"+strconv.Itoa(p)+"/health") {
			t.Errorf("%s: healthcheck %v, want /health on port %d", name, get(s, "healthcheck", "test"), p)
		}
		if get(s, "depends_on", redis, "condition") != "service_healthy" {
			t.Errorf("%s: want depends_on %s with condition service_healthy", name, redis)
		}
		if s["read_only"] == true && !slices.Contains(strs(s, "tmpfs"), dataDir) && hostPath(s, dataDir) == "" {
			t.Errorf("%s: read-only without anything at %s", name, dataDir)
		}
		checkStopGrace(t, haCompose+" "+name, s, env)
	}

	// Redis: append-only persistence on a named volume, a password.
	rs := svcs[redis]
	cmd := strings.Join(strs(rs, "command"), " ")
	if !strings.Contains(cmd, "--appendonly yes") || !strings.Contains(cmd, `--requirepass "$$REDIS_PASSWORD"`) ||
		!strings.Contains(cmd, "--maxmemory-policy noeviction") {
		t.Errorf("redis command %q: want --appendonly yes, --maxmemory-policy noeviction and --requirepass from the environment", cmd)
	}
	vols, _ := doc["volumes"].(map[string]any)
	var redisVol string
	for _, m := range mounts(rs) {
		if m.dst == "/data" {
			redisVol = m.src
		}
	}
	if _, ok := vols[redisVol]; !ok {
		t.Errorf("redis: /data is not on a named volume (%q)", redisVol)
	}

	checkLoadBalancer(t, svcs, replicas, port)
	prom := checkPrometheus(t, svcs, replicas, metricsPort)
	checkGrafana(t, svcs, prom)
}

// withoutComments drops the comment lines of a YAML text.
func withoutComments(text string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(text, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// sameFile reports whether two paths relative to this directory name the same file.
func sameFile(a, b string) bool {
	aa, err1 := filepath.Abs(a)
	ab, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && aa == ab
}

func regexpAll(expr, s string) []string {
	var out []string
	for _, m := range regexp.MustCompile(expr).FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// serviceMounting is the service that mounts the host file path.
func serviceMounting(t *testing.T, svcs map[string]map[string]any, path string) (string, map[string]any, string) {
	t.Helper()
	want := filepath.Clean(filepath.Join(repoRoot, path))
	for name, s := range svcs {
		for _, m := range mounts(s) {
			if filepath.Clean(m.src) == want {
				return name, s, m.dst
			}
		}
	}
	t.Fatalf("%s: no service mounts %s", haCompose, path)
	return "", nil, ""
}

// haproxySections reads an HAProxy configuration: section header → lines.
func haproxySections(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	cur := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		raw := sc.Text()
		line, _, _ := strings.Cut(raw, "#")
		line = strings.Join(strings.Fields(line), " ")
		if line == "" {
			continue
		}
		if raw[0] != ' ' && raw[0] != '\t' {
			cur = line
			out[cur] = nil
			continue
		}
		out[cur] = append(out[cur], line)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func directive(lines []string, prefix string) (string, bool) {
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(l, prefix); ok && (rest == "" || rest[0] == ' ') {
			return strings.TrimSpace(rest), true
		}
	}
	return "", false
}

func checkLoadBalancer(t *testing.T, svcs map[string]map[string]any, replicas []string, port int) {
	t.Helper()
	const cfg = "deploy/compose/haproxy.cfg"
	name, lb, _ := serviceMounting(t, svcs, cfg)
	sec := haproxySections(t, filepath.Join(repoRoot, cfg))

	var frontend string
	for h := range sec {
		if strings.HasPrefix(h, "frontend ") {
			frontend = h
		}
	}
	bind, _ := directive(sec[frontend], "bind")
	published := false
	for _, p := range strs(lb, "ports") {
		published = published || strings.HasSuffix(p, ":"+strings.TrimPrefix(bind, ":"))
	}
	if bind == "" || !published {
		t.Errorf("%s: frontend binds %q, which %s does not publish (%v)", cfg, bind, name, lb["ports"])
	}
	backend, _ := directive(sec[frontend], "default_backend")
	lines, ok := sec["backend "+backend]
	if !ok {
		t.Fatalf("%s: no backend %q", cfg, backend)
	}
	var servers []string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == "server" {
			host, p, _ := strings.Cut(f[2], ":")
			if p != strconv.Itoa(port) {
				t.Errorf("%s: server %s on port %s, want %d (PORT)", cfg, f[1], p, port)
			}
			servers = append(servers, host)
		}
	}
	slices.Sort(servers)
	if !slices.Equal(servers, replicas) {
		t.Errorf("%s: servers %v, want the replicas %v", cfg, servers, replicas)
	}
	if send, _ := directive(lines, "http-check send"); !strings.Contains(send, "uri /ready") {
		t.Errorf("%s: health check %q, want GET /ready", cfg, send)
	}
	all := slices.Concat(sec["defaults"], sec[frontend], lines)
	if !slices.Contains(all, "option http-no-delay") {
		t.Errorf("%s: no option http-no-delay: SSE chunks would wait for full packets", cfg)
	}
	for _, which := range []string{"timeout client", "timeout server"} {
		v, _ := directive(all, which)
		if d, err := time.ParseDuration(v); err != nil || d < 5*time.Minute {
			t.Errorf("%s: %s %q, want at least 5m for long completions", cfg, which, v)
		}
	}
	if !slices.Contains(all, "http-request del-header X-Forwarded-For") || !slices.Contains(all, "option forwardfor") {
		t.Errorf("%s: want X-Forwarded-For replaced with the client's address (TRUSTED_PROXIES trusts it)", cfg)
	}
}

// checkPrometheus returns the Prometheus service's name.
func checkPrometheus(t *testing.T, svcs map[string]map[string]any, replicas []string, metricsPort int) string {
	t.Helper()
	const cfg = "deploy/compose/prometheus.yml"
	name, prom, dst := serviceMounting(t, svcs, cfg)
	if !slices.Contains(strs(prom, "command"), "--config.file="+dst) {
		t.Errorf("%s: command %v does not load %s", name, prom["command"], dst)
	}
	b, err := os.ReadFile(filepath.Join(repoRoot, cfg))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("%s: %v", cfg, err)
	}
	var targets []string
	for _, sc := range c.ScrapeConfigs {
		if sc.JobName != proxyName {
			continue
		}
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
			t.Errorf("%s: metrics_path %q", cfg, sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	var want []string
	for _, r := range replicas {
		want = append(want, r+":"+strconv.Itoa(metricsPort))
	}
	slices.Sort(targets)
	if !slices.Equal(targets, want) {
		t.Errorf("%s: job %s targets %v, want %v (the replicas' METRICS_ADDR)", cfg, proxyName, targets, want)
	}
	loaded := false
	for _, rf := range c.RuleFiles {
		host := hostPath(prom, rf)
		if host == "" {
			t.Errorf("%s: rule file %s is not mounted into %s", cfg, rf, name)
			continue
		}
		if _, err := os.Stat(host); err != nil {
			t.Errorf("%s: rule file %s: %v", cfg, rf, err)
		}
		loaded = loaded || sameFile(host, alertsFile)
	}
	if !loaded {
		t.Errorf("%s: rule_files %v do not load %s", cfg, c.RuleFiles, alertsFile)
	}
	return name
}

func checkGrafana(t *testing.T, svcs map[string]map[string]any, prom string) {
	t.Helper()
	const prov = "deploy/compose/grafana/provisioning"
	name, g, dst := serviceMounting(t, svcs, prov)
	if dst != "/etc/grafana/provisioning" {
		t.Errorf("%s: provisioning mounted at %s, want /etc/grafana/provisioning", name, dst)
	}
	var ds struct {
		Datasources []struct {
			Type      string `yaml:"type"`
			URL       string `yaml:"url"`
			IsDefault bool   `yaml:"isDefault"`
		} `yaml:"datasources"`
	}
	readYAML(t, filepath.Join(repoRoot, prov, "datasources", "prometheus.yml"), &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || !ds.Datasources[0].IsDefault {
		t.Fatalf("%s: want one default prometheus data source (the dashboard picks the default), got %+v", prov, ds)
	}
	if u, err := url.Parse(ds.Datasources[0].URL); err != nil || u.Hostname() != prom || u.Port() != "9090" {
		t.Errorf("%s: data source URL %q, want http://%s:9090", prov, ds.Datasources[0].URL, prom)
	}
	var dp struct {
		Providers []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, filepath.Join(repoRoot, prov, "dashboards", "atlassian-proxy.yml"), &dp)
	if len(dp.Providers) != 1 || dp.Providers[0].Type != "file" {
		t.Fatalf("%s: want one file dashboard provider, got %+v", prov, dp)
	}
	path := dp.Providers[0].Options.Path
	found := false
	for _, m := range mounts(g) {
		if filepath.Dir(m.dst) == path || m.dst == path {
			if sameFile(m.src, filepath.Join("grafana", "atlassian-proxy.json")) {
				found = true
				if _, err := os.Stat(m.src); err != nil {
					t.Error(err)
				}
			}
		}
	}
	if !found {
		t.Errorf("%s: nothing mounts deploy/grafana/atlassian-proxy.json into the provider's path %s", name, path)
	}
	if home := composeEnv(g)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" && hostPath(g, home) == "" {
		t.Errorf("%s: home dashboard %s is not mounted", name, home)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestImagesAgree: the Compose files and the overlays run the same images
// (the proxy's by name, since tags are the operator's; Redis's exactly).
func TestImagesAgree(t *testing.T) {
	images := map[string][]string{} // image name → where
	redis := map[string][]string{}  // Redis image with its tag → where
	note := func(where, img string) {
		name, _, _ := strings.Cut(img, ":")
		switch {
		case strings.HasSuffix(name, "atlassian-proxy"):
			images[name] = append(images[name], where)
		case name == "redis" || strings.HasSuffix(name, "/redis"):
			redis[img] = append(redis[img], where)
		}
	}
	for _, f := range []string{"docker-compose.yml", haCompose} {
		doc, _ := composeFile(t, f)
		for name, s := range services(doc) {
			img, _ := s["image"].(string)
			note(f+" "+name, img)
		}
	}
	for _, dir := range overlays(t) {
		docs, _ := build(t, dir)
		for _, d := range docs {
			for _, c := range list(d, "spec", "template", "spec", "containers") {
				img, _ := c["image"].(string)
				note(dir+" "+fmt.Sprint(get(d, "metadata", "name")), img)
			}
		}
	}
	if len(images) != 1 {
		t.Errorf("the proxy runs as different images: %v", images)
	}
	if _, ok := images[image]; !ok {
		t.Errorf("the proxy images %v, want %s", images, image)
	}
	if len(redis) != 1 {
		t.Errorf("Redis runs as different images: %v", redis)
	}
}

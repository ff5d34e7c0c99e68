package deploy

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

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

// composeFile reads and decodes a Compose file of the repository root.
func composeFile(t *testing.T, name string) (map[string]any, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return doc, string(b)
}

func services(doc map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for name, s := range get(doc, "services").(map[string]any) {
		if m, ok := s.(map[string]any); ok {
			out[name] = m
		}
	}
	return out
}

// composeEnv is a service's environment, in list or map form.
func composeEnv(svc map[string]any) map[string]string {
	env := map[string]string{}
	switch e := svc["environment"].(type) {
	case []any:
		for _, kv := range e {
			s, _ := kv.(string)
			k, v, _ := strings.Cut(s, "=")
			env[k] = v
		}
	case map[string]any:
		for k, v := range e {
			switch v := v.(type) {
			case string:
				env[k] = v
			case nil:
				env[k] = ""
			default:
				env[k] = strings.TrimSpace(yamlString(v))
			}
		}
	}
	return env
}

func yamlString(v any) string {
	b, _ := yaml.Marshal(v)
	return string(b)
}

type mount struct {
	src, dst string
}

// mounts are a service's volumes (short syntax); a bind mount's source is
// made relative to this directory.
func mounts(svc map[string]any) []mount {
	var out []mount
	for _, v := range strs(svc, "volumes") {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			continue
		}
		src := parts[0]
		if strings.HasPrefix(src, ".") {
			src = filepath.Join(repoRoot, src)
		}
		out = append(out, mount{src: src, dst: parts[1]})
	}
	return out
}

// hostPath is the host file or directory mounted at dst (or at a directory
// holding dst), "" when none is.
func hostPath(svc map[string]any, dst string) string {
	for _, m := range mounts(svc) {
		if m.dst == dst {
			return m.src
		}
		if rest, ok := strings.CutPrefix(dst, m.dst+"/"); ok {
			return filepath.Join(m.src, rest)
		}
	}
	return ""
}

// interpolation matches a whole value that is one ${VAR...} of Compose.
var interpolation = regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?][^}]*)?\}$`)

// secretEnv reports whether an environment variable holds a secret.
func secretEnv(t *testing.T, name string) bool {
	t.Helper()
	if s, ok := settings(t)[name]; ok && s.Secret {
		return true
	}
	return strings.Contains(name, "PASSWORD") || strings.Contains(name, "SECRET") || name == "REDISCLI_AUTH"
}

// checkComposeSecrets fails for a secret given as a literal in a Compose file.
func checkComposeSecrets(t *testing.T, name, text string, svcs map[string]map[string]any) {
	t.Helper()
	for sname, svc := range svcs {
		for k, v := range composeEnv(svc) {
			if secretEnv(t, k) && !interpolation.MatchString(v) {
				t.Errorf("%s: service %s sets %s to a literal; take it from .env with ${%s:?...}", name, sname, k, k)
			}
		}
	}
	if keyLike.MatchString(text) || redisURLPass.MatchString(text) {
		t.Errorf("%s holds what looks like a key or a Redis password", name)
	}
}

func TestCompose(t *testing.T) {
	doc, text := composeFile(t, "docker-compose.yml")
	svcs := services(doc)
	s, ok := svcs["atlassian-proxy"]
	if !ok {
		t.Fatal("docker-compose.yml: no service atlassian-proxy")
	}
	env := composeEnv(s)
	checkEnvNames(t, "docker-compose.yml", env)
	checkComposeSecrets(t, "docker-compose.yml", text, svcs)
	var vol string
	for _, m := range mounts(s) {
		if m.dst == dataDir {
			vol = m.src
		}
	}
	if vol == "" {
		t.Errorf("volumes %v: want one mounted at %s", s["volumes"], dataDir)
	} else if _, named := get(doc, "volumes").(map[string]any)[vol]; !named {
		t.Errorf("volume %q at %s is not a named volume", vol, dataDir)
	}
	port := strings.TrimPrefix(effective(t, env, "PORT"), ":")
	if !slices.ContainsFunc(strs(s, "ports"), func(p string) bool { return strings.HasSuffix(p, ":"+port) }) {
		t.Errorf("ports %v: want %s (PORT) published", s["ports"], port)
	}
	if env["DATA_DIR"] != dataDir {
		t.Errorf("environment %v: want DATA_DIR=%s", env, dataDir)
	}
	if !strings.Contains(strings.Join(strs(s, "healthcheck", "test"), " "), "/health") {
		t.Errorf("healthcheck %v: want a check of /health", get(s, "healthcheck", "test"))
	}
	checkStopGrace(t, "docker-compose.yml atlassian-proxy", s, env)
}

// checkStopGrace: the container must get longer than the program's own
// shutdown before it is killed.
func checkStopGrace(t *testing.T, where string, svc map[string]any, env map[string]string) {
	t.Helper()
	g, _ := svc["stop_grace_period"].(string)
	if g == "" {
		t.Errorf("%s: no stop_grace_period (Docker's default is 10s)", where)
		return
	}
	if need := stopBudget(t, env); duration(t, g) <= need {
		t.Errorf("%s: stop_grace_period %s, want > SHUTDOWN_DELAY + SHUTDOWN_GRACE + %v = %v", where, g, abortGrace, need)
	}
}

// dotEnvExample reads ../.env.example (KEY=VALUE lines).
func dotEnvExample(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf(".env.example: %q is no KEY=VALUE line", line)
			continue
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

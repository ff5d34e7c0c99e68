package deploy

// Facts about the program, read from its Go source so that the deployment
// files are checked against what the program really does: its settings
// (environment names, defaults, which ones are secret) and the metric names
// it exports. Reading the source rather than importing the packages keeps
// this package free of the program's dependencies and also sees the metrics
// that package main registers.

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	repoRoot   = ".."
	configFile = "../cmd/atlassian-proxy/config.go"
	promImport = "github.com/prometheus/client_golang/prometheus"
)

// programSetting is one entry of settings() in cmd/atlassian-proxy/config.go.
type programSetting struct {
	Env, Def string
	Secret   bool
}

var (
	settingsOnce sync.Once
	settingsVal  map[string]programSetting
	settingsErr  string
)

// settings returns the program's settings by environment name.
func settings(t *testing.T) map[string]programSetting {
	t.Helper()
	settingsOnce.Do(func() {
		f, err := parser.ParseFile(token.NewFileSet(), configFile, nil, 0)
		if err != nil {
			settingsErr = err.Error()
			return
		}
		settingsVal = map[string]programSetting{}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			var s programSetting
			for _, e := range lit.Elts {
				kv, ok := e.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				key, _ := kv.Key.(*ast.Ident)
				if key == nil {
					continue
				}
				switch key.Name {
				case "env":
					s.Env = stringLit(kv.Value)
				case "def":
					s.Def = stringLit(kv.Value)
				case "secret":
					id, _ := kv.Value.(*ast.Ident)
					s.Secret = id != nil && id.Name == "true"
				}
			}
			if s.Env != "" {
				settingsVal[s.Env] = s
			}
			return true
		})
		if len(settingsVal) < 10 {
			settingsErr = "found only " + strconv.Itoa(len(settingsVal)) + " settings in " + configFile
		}
	})
	if settingsErr != "" {
		t.Fatal(settingsErr)
	}
	return settingsVal
}

func stringLit(e ast.Expr) string {
	if b, ok := e.(*ast.BasicLit); ok && b.Kind == token.STRING {
		if s, err := strconv.Unquote(b.Value); err == nil {
			return s
		}
	}
	return ""
}

// settingDefault is the program's default of a setting; the test fails when
// the program has no such setting.
func settingDefault(t *testing.T, env string) string {
	t.Helper()
	s, ok := settings(t)[env]
	if !ok {
		t.Fatalf("%s has no setting %s", configFile, env)
	}
	return s.Def
}

// effective is the value of a setting given the environment env (name to
// value): the value when set, else the program's default.
func effective(t *testing.T, env map[string]string, name string) string {
	t.Helper()
	if v, ok := env[name]; ok {
		return v
	}
	return settingDefault(t, name)
}

// portOf is the port of a PORT value or of a listen address such as ":9090".
func portOf(t *testing.T, v string) int {
	t.Helper()
	if i := strings.LastIndex(v, ":"); i >= 0 {
		v = v[i+1:]
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%q names no port", v)
	}
	return n
}

func duration(t *testing.T, v string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%q is no duration: %v", v, err)
	}
	return d
}

// abortGrace is what shutdown adds after SHUTDOWN_GRACE: the streams still
// open get an SSE error event and this long to send it (app.serve).
const abortGrace = 2 * time.Second

// stopBudget is the longest a replica takes from SIGTERM to exit under env:
// SHUTDOWN_DELAY + SHUTDOWN_GRACE + abortGrace.
func stopBudget(t *testing.T, env map[string]string) time.Duration {
	t.Helper()
	return duration(t, effective(t, env, "SHUTDOWN_DELAY")) + duration(t, effective(t, env, "SHUTDOWN_GRACE")) + abortGrace
}

// checkEnvNames fails for a variable the program does not read.
func checkEnvNames(t *testing.T, where string, env map[string]string) {
	t.Helper()
	known := settings(t)
	for name := range env {
		if _, ok := known[name]; !ok {
			t.Errorf("%s sets %s, which is no setting of the program (%s)", where, name, configFile)
		}
	}
}

var (
	metricsOnce sync.Once
	metricsVal  map[string]bool
	metricsErrs []string
)

// exportedMetrics returns every sample name the program can export: each
// prometheus.*Opts literal and prometheus.NewDesc call in the module's
// non-test Go files, with _bucket, _sum and _count for histograms and _sum
// and _count for summaries. A name it cannot work out fails the test, so
// that a new way of naming metrics is noticed here rather than missed.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	metricsOnce.Do(func() { metricsVal, metricsErrs = scanMetrics() })
	for _, e := range metricsErrs {
		t.Error(e)
	}
	if len(metricsVal) == 0 {
		t.Fatal("found no metric definitions in the program's source")
	}
	return metricsVal
}

type goFile struct {
	path string
	pkg  string
	file *ast.File
}

func scanMetrics() (map[string]bool, []string) {
	fset := token.NewFileSet()
	var files []goFile
	var errs []string
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != repoRoot && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor" || name == "node_modules" || name == "deploy") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && path != repoRoot {
				return filepath.SkipDir // another module
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			errs = append(errs, err.Error())
			return nil
		}
		files = append(files, goFile{path: path, pkg: f.Name.Name, file: f})
		return nil
	})
	if err != nil {
		return nil, []string{err.Error()}
	}

	// Package-level string constants and variables, by package name.
	consts := map[string]map[string]ast.Expr{}
	for _, gf := range files {
		for _, decl := range gf.file.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || (gd.Tok != token.CONST && gd.Tok != token.VAR) {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if consts[gf.pkg] == nil {
							consts[gf.pkg] = map[string]ast.Expr{}
						}
						consts[gf.pkg][n.Name] = vs.Values[i]
					}
				}
			}
		}
	}

	names := map[string]bool{}
	for _, gf := range files {
		prom := ""
		for _, imp := range gf.file.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == promImport {
				prom = "prometheus"
				if imp.Name != nil {
					prom = imp.Name.Name
				}
			}
		}
		if prom == "" {
			continue
		}
		// Local single assignments (ns := observability.MetricsNamespace).
		locals := map[string]ast.Expr{}
		ast.Inspect(gf.file, func(n ast.Node) bool {
			if as, ok := n.(*ast.AssignStmt); ok && len(as.Lhs) == 1 && len(as.Rhs) == 1 {
				if id, ok := as.Lhs[0].(*ast.Ident); ok {
					locals[id.Name] = as.Rhs[0]
				}
			}
			return true
		})
		ev := &evaluator{pkg: gf.pkg, prom: prom, consts: consts, locals: locals}
		where := func(n ast.Node) string { return fset.Position(n.Pos()).String() }

		ast.Inspect(gf.file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CompositeLit:
				sel, ok := n.Type.(*ast.SelectorExpr)
				if !ok || !isIdent(sel.X, prom) || !strings.HasSuffix(sel.Sel.Name, "Opts") {
					return true
				}
				kind := sel.Sel.Name
				if !slices.Contains([]string{"Opts", "CounterOpts", "GaugeOpts", "UntypedOpts", "HistogramOpts", "SummaryOpts"}, kind) {
					return true
				}
				parts := map[string]string{}
				for _, e := range n.Elts {
					kv, ok := e.(*ast.KeyValueExpr)
					if !ok {
						continue
					}
					key, _ := kv.Key.(*ast.Ident)
					if key == nil || (key.Name != "Namespace" && key.Name != "Subsystem" && key.Name != "Name") {
						continue
					}
					v, ok := ev.eval(kv.Value)
					if !ok {
						errs = append(errs, where(kv)+": cannot work out the metric's "+key.Name+"; teach deploy/program_test.go this form")
						return true
					}
					parts[key.Name] = v
				}
				if parts["Name"] == "" {
					errs = append(errs, where(n)+": a metric without a Name")
					return true
				}
				addMetric(names, fqName(parts["Namespace"], parts["Subsystem"], parts["Name"]), kind)
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok || !isIdent(sel.X, prom) || sel.Sel.Name != "NewDesc" || len(n.Args) == 0 {
					return true
				}
				v, ok := ev.eval(n.Args[0])
				if !ok || v == "" {
					errs = append(errs, where(n)+": cannot work out the name given to NewDesc; teach deploy/program_test.go this form")
					return true
				}
				addMetric(names, v, "")
			}
			return true
		})
	}
	return names, errs
}

func addMetric(names map[string]bool, name, kind string) {
	switch kind {
	case "HistogramOpts":
		names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
	case "SummaryOpts":
		names[name], names[name+"_sum"], names[name+"_count"] = true, true, true
	default:
		names[name] = true
	}
}

// fqName joins the non-empty parts with "_", as prometheus.BuildFQName does.
func fqName(ns, sub, name string) string {
	var parts []string
	for _, p := range []string{ns, sub, name} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "_")
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

// evaluator works out constant string expressions: literals, +, constants
// of this or another package, local variables assigned once, BuildFQName.
type evaluator struct {
	pkg, prom string
	consts    map[string]map[string]ast.Expr
	locals    map[string]ast.Expr
	depth     int
}

func (ev *evaluator) eval(e ast.Expr) (string, bool) {
	if ev.depth > 20 {
		return "", false
	}
	ev.depth++
	defer func() { ev.depth-- }()
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(e.Value)
		return s, err == nil
	case *ast.ParenExpr:
		return ev.eval(e.X)
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return "", false
		}
		a, ok1 := ev.eval(e.X)
		b, ok2 := ev.eval(e.Y)
		return a + b, ok1 && ok2
	case *ast.Ident:
		if v, ok := ev.locals[e.Name]; ok {
			return ev.eval(v)
		}
		if v, ok := ev.consts[ev.pkg][e.Name]; ok {
			return ev.eval(v)
		}
	case *ast.SelectorExpr:
		if x, ok := e.X.(*ast.Ident); ok {
			if v, ok := ev.consts[x.Name][e.Sel.Name]; ok {
				inner := *ev
				inner.pkg, inner.locals = x.Name, nil
				return inner.eval(v)
			}
		}
	case *ast.CallExpr:
		if sel, ok := e.Fun.(*ast.SelectorExpr); ok && isIdent(sel.X, ev.prom) && sel.Sel.Name == "BuildFQName" && len(e.Args) == 3 {
			var p [3]string
			for i, a := range e.Args {
				v, ok := ev.eval(a)
				if !ok {
					return "", false
				}
				p[i] = v
			}
			if p[2] == "" {
				return "", true
			}
			return fqName(p[0], p[1], p[2]), true
		}
	}
	return "", false
}

// TestProgramFacts checks the readers above against what is known to be
// true, so that a reader that silently finds nothing cannot pass the other
// tests.
func TestProgramFacts(t *testing.T) {
	for env, def := range map[string]string{"PORT": "8000", "METRICS_ADDR": ":9090", "DATA_DIR": "./data"} {
		if got := settingDefault(t, env); got != def {
			t.Errorf("default of %s = %q, want %q", env, got, def)
		}
	}
	for _, env := range []string{"ADMIN_PASSWORD", "SECRET_KEY"} {
		if !settings(t)[env].Secret {
			t.Errorf("%s is not marked secret in %s", env, configFile)
		}
	}
	names := exportedMetrics(t)
	for _, want := range []string{
		"atlassian_proxy_build_info",
		"atlassian_proxy_http_requests_total",
		"atlassian_proxy_http_request_duration_seconds_bucket",
		"atlassian_proxy_pool_credentials",
		"atlassian_proxy_dispatch_queue_waiting",
		"atlassian_proxy_stream_first_token_seconds_count",
	} {
		if !names[want] {
			t.Errorf("exported metrics: %s not found", want)
		}
	}
	// Every metric of the dashboard, which cmd/atlassian-proxy's dashboard
	// test checks against a running server's registry, must be found too.
	raw, err := os.ReadFile(filepath.Join("grafana", "atlassian-proxy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var anyJSON any
	if err := json.Unmarshal(raw, &anyJSON); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`atlassian_proxy_[a-z0-9_]+`)
	for _, m := range re.FindAllString(string(raw), -1) {
		if !names[m] {
			t.Errorf("the dashboard queries %s, which the source reader did not find", m)
		}
	}
}

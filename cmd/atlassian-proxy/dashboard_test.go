package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/atlassian-proxy/atlassian-proxy/adminui"
	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/internal/metrictest"
)

const dashboardPath = "../../deploy/grafana/atlassian-proxy.json"

// startDashboardStack is the in-process server in front of a fake gateway
// with two credentials, the first of which is always rate limited, so that
// requests picking it first are retried on the second.
func startDashboardStack(t *testing.T) *stack {
	t.Helper()
	return startStack(t, []fake.Credential{
		{Email: "limited@example.com", Token: "dashboard-token-limited", Default: fake.Behavior{Fault: fake.RateLimitMinute}},
		{Email: "fine@example.com", Token: "dashboard-token-fine"},
	}, nil)
}

func (s *stack) chat(t *testing.T) int {
	t.Helper()
	req, err := http.NewRequest("POST", s.proxyURL+"/v1/chat/completions", strings.NewReader(benchBody))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// exportedNames lists every sample name the registry exports: those of
// gathered families, with _bucket/_sum/_count for histograms and _sum/_count
// for summaries, and the names of registered descriptors that have no
// series yet (label vectors never used), which can only be queried as is.
func exportedNames(t *testing.T, reg *prometheus.Registry) (map[string]bool, []*dto.MetricFamily) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		n := mf.GetName()
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			names[n+"_bucket"], names[n+"_sum"], names[n+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			names[n], names[n+"_sum"], names[n+"_count"] = true, true, true
		default:
			names[n] = true
		}
	}
	ch := make(chan *prometheus.Desc)
	go func() {
		reg.Describe(ch)
		close(ch)
	}()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		m := fq.FindStringSubmatch(d.String())
		if m == nil {
			t.Errorf("cannot read the name of %v", d)
			continue
		}
		gathered := slices.ContainsFunc(mfs, func(mf *dto.MetricFamily) bool { return mf.GetName() == m[1] })
		if !gathered {
			names[m[1]] = true
		}
	}
	return names, mfs
}

var (
	promString = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promIdent  = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
)

// metricNames are the metric names in a PromQL expression (or Grafana
// label_values query): identifiers of this program's namespace and of the
// Go and process collectors, outside string literals.
func metricNames(expr string) []string {
	var out []string
	for _, id := range promIdent.FindAllString(promString.ReplaceAllString(expr, `""`), -1) {
		if strings.HasPrefix(id, "atlassian_proxy_") || strings.HasPrefix(id, "go_") || strings.HasPrefix(id, "process_") {
			out = append(out, id)
		}
	}
	return out
}

type dashPanel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource *dashDatasource `json:"datasource"`
	Targets    []struct {
		RefID      string          `json:"refId"`
		Expr       string          `json:"expr"`
		Datasource *dashDatasource `json:"datasource"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"`
}

type dashDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashboard struct {
	UID           string      `json:"uid"`
	Title         string      `json:"title"`
	SchemaVersion int         `json:"schemaVersion"`
	Panels        []dashPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *dashDatasource `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if dec.More() {
		t.Fatalf("%s: trailing data after the dashboard", dashboardPath)
	}
	return d
}

func flattenPanels(ps []dashPanel) []dashPanel {
	var out []dashPanel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, flattenPanels(p.Panels)...)
	}
	return out
}

func isDatasourceVar(ds *dashDatasource) bool {
	return ds != nil && (ds.UID == "${datasource}" || ds.UID == "$datasource")
}

// TestDashboardStructure checks the dashboard's shape: it parses, has a uid,
// a Prometheus datasource variable and an instance variable, unique panel
// ids, and every panel and target uses the datasource variable.
func TestDashboardStructure(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: want both set", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d, want ≥ 36", d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		if _, dup := vars[v.Name]; dup {
			t.Errorf("variable %q defined twice", v.Name)
		}
		vars[v.Name] = v.Type
		if v.Type == "query" && !isDatasourceVar(v.Datasource) {
			t.Errorf("variable %q: datasource %+v, want the ${datasource} variable", v.Name, v.Datasource)
		}
	}
	if vars["datasource"] != "datasource" {
		t.Errorf("no datasource variable (got %v)", vars)
	}
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && string(v.Query) != `"prometheus"` {
			t.Errorf("datasource variable query %s, want \"prometheus\"", v.Query)
		}
	}
	if _, ok := vars["instance"]; !ok {
		t.Errorf("no instance variable (got %v)", vars)
	}
	ids := map[int]string{}
	panels := flattenPanels(d.Panels)
	if len(panels) == 0 {
		t.Fatal("no panels")
	}
	for _, p := range panels {
		if p.ID <= 0 {
			t.Errorf("panel %q: id %d, want > 0", p.Title, p.ID)
		} else if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if !isDatasourceVar(p.Datasource) {
			t.Errorf("panel %q: datasource %+v, want the ${datasource} variable", p.Title, p.Datasource)
		}
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Datasource != nil && !isDatasourceVar(tg.Datasource) {
				t.Errorf("panel %q target %s: datasource %+v, want the ${datasource} variable", p.Title, tg.RefID, tg.Datasource)
			}
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: empty or repeated refId %q", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %s: empty expr", p.Title, tg.RefID)
			}
		}
	}
}

// TestDashboardMetricsExported serves chat requests through the real server
// so that the labelled families exist, then checks that every metric the
// dashboard queries is one the program exports.
func TestDashboardMetricsExported(t *testing.T) {
	d := loadDashboard(t)
	s := startDashboardStack(t)
	// The first credential is always rate limited: a request that picks it
	// first is retried on the second (a retry and a failover). Either way
	// every request must succeed.
	for range 4 {
		if code := s.chat(t); code != http.StatusOK {
			t.Fatalf("chat completion: status %d, want 200", code)
		}
	}
	names, mfs := exportedNames(t, s.app.metrics)
	for _, want := range []string{"atlassian_proxy_http_requests_total", "atlassian_proxy_http_request_duration_seconds",
		"atlassian_proxy_upstream_attempts_total", "atlassian_proxy_build_info"} {
		if !slices.ContainsFunc(mfs, func(mf *dto.MetricFamily) bool { return mf.GetName() == want }) {
			t.Errorf("after a chat request the registry has no %s family", want)
		}
	}

	var exprs []string
	for _, p := range flattenPanels(d.Panels) {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
			if len(metricNames(tg.Expr)) == 0 {
				t.Errorf("panel %q target %s queries no atlassian-proxy metric: %s", p.Title, tg.RefID, tg.Expr)
			}
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var s string
			if err := json.Unmarshal(v.Query, &s); err != nil {
				t.Errorf("variable %q: query %s", v.Name, v.Query)
			}
			q.Query = s
		}
		exprs = append(exprs, q.Query)
	}
	used := map[string]bool{}
	for _, e := range exprs {
		for _, n := range metricNames(e) {
			used[n] = true
			if !names[n] {
				t.Errorf("the dashboard queries %s, which the program does not export (in %s)", n, e)
			}
		}
	}
	if !used["atlassian_proxy_http_request_duration_seconds_bucket"] {
		t.Error("the dashboard has no latency percentiles")
	}
	t.Logf("%d expressions, %d metric names", len(exprs), len(used))
}

func TestDashboardMetricNames(t *testing.T) {
	got := metricNames(`sum by (le) (rate(atlassian_proxy_x_bucket{route=~"atlassian_proxy_fake|go_no"}[$__rate_interval])) / go_goroutines`)
	want := []string{"atlassian_proxy_x_bucket", "go_goroutines"}
	if !slices.Equal(got, want) {
		t.Errorf("metricNames = %v, want %v", got, want)
	}
}

// TestLoginRejectionsInTheRateLimitPanel: the admin UI's login throttling
// counts in the server's one rate-limit counter (limits login_ip and
// login_total, at zero from the start, next to the API's token), and the
// Grafana panel "Rate-limit rejections/s by limit" draws every limit of
// that counter as its own series, so it shows them without a change.
func TestLoginRejectionsInTheRateLimitPanel(t *testing.T) {
	s := startDashboardStack(t)
	const name = "atlassian_proxy_rate_limit_rejections_total"
	values := func() map[string]float64 {
		out := map[string]float64{}
		for k, v := range metrictest.Values(t, s.app.metrics) {
			if limit, ok := strings.CutPrefix(k, name+",limit="); ok {
				out[limit] = v
			}
		}
		return out
	}
	if got := values(); len(got) != 3 || got["token"] != 0 || got["login_ip"] != 0 || got["login_total"] != 0 {
		t.Fatalf("at start: %v, want token, login_ip and login_total at zero", got)
	}
	status := 0
	for i := range adminui.DefaultLoginAttemptsPerIP + 1 {
		resp, err := http.Post(s.proxyURL+"/admin/api/login", "application/json", strings.NewReader(`{"password":"not the password at all"}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		status = resp.StatusCode
		if i < adminui.DefaultLoginAttemptsPerIP && status != http.StatusUnauthorized {
			t.Fatalf("login %d: status %d, want 401", i+1, status)
		}
	}
	if status != http.StatusTooManyRequests {
		t.Fatalf("login %d: status %d, want 429", adminui.DefaultLoginAttemptsPerIP+1, status)
	}
	if got := values(); got["login_ip"] != 1 || got["login_total"] != 0 || got["token"] != 0 {
		t.Errorf("after one throttled login: %v, want login_ip 1", got)
	}

	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr         string `json:"expr"`
				LegendFormat string `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range d.Panels {
		if p.Title != "Rate-limit rejections/s by limit" {
			continue
		}
		found = true
		if len(p.Targets) != 1 {
			t.Fatalf("the panel has %d targets, want 1", len(p.Targets))
		}
		tg := p.Targets[0]
		if !strings.Contains(tg.Expr, name) || !strings.Contains(tg.Expr, "sum by (limit)") || strings.Contains(tg.Expr, "limit=") ||
			tg.LegendFormat != "{{limit}}" {
			t.Errorf("the panel would not show each limit as its own series: expr %s, legend %q", tg.Expr, tg.LegendFormat)
		}
	}
	if !found {
		t.Error("no panel \"Rate-limit rejections/s by limit\" in the dashboard")
	}
}

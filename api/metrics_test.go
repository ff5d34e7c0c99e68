package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
)

// canonicalModel is the catalog id of testModel (an alias).
func canonicalModel(t *testing.T, e *env) string {
	t.Helper()
	m, ok := e.api.catalog.Lookup(testModel)
	if !ok {
		t.Fatalf("%s not in the catalog", testModel)
	}
	return m.ID
}

// histCount is the number of observations of the histogram name{model}.
func histCount(t *testing.T, reg *prometheus.Registry, name, model string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelOf(m, "model") == model {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

// series returns the gathered series of the metric name, keyed by their
// label pairs ("k=v,k=v" in label name order).
func series(t *testing.T, reg *prometheus.Registry, name string) map[string]*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := map[string]*dto.Metric{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var key []string
			for _, l := range m.GetLabel() {
				key = append(key, l.GetName()+"="+l.GetValue())
			}
			out[strings.Join(key, ",")] = m
		}
	}
	return out
}

// counter is the value of the counter name{labels} (0 when absent).
func counter(t *testing.T, reg *prometheus.Registry, name, labels string) float64 {
	t.Helper()
	if m, ok := series(t, reg, name)[labels]; ok {
		return m.GetCounter().GetValue()
	}
	return 0
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

const (
	ttftName       = "atlassian_proxy_stream_first_token_seconds"
	abortsName     = "atlassian_proxy_stream_aborts_total"
	tokensName     = "atlassian_proxy_tokens_total"
	rejectionsName = "atlassian_proxy_rate_limit_rejections_total"
)

func newMetricsEnv(t *testing.T, o envOptions) (*env, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	o.reg = reg
	e := newEnv(t, o)
	if e.api.metrics == nil {
		t.Fatal("no metrics with a registerer")
	}
	return e, reg
}

func TestMetricsPreinitialised(t *testing.T) {
	e, reg := newMetricsEnv(t, envOptions{})
	for _, r := range []string{abortUpstreamBroken, abortUpstreamRefused, abortClientGone, abortShutdown, abortPanic} {
		if _, ok := series(t, reg, abortsName)["reason="+r]; !ok {
			t.Errorf("%s{reason=%q} does not exist at zero", abortsName, r)
		}
	}
	for _, m := range e.api.catalog.List() {
		if _, ok := series(t, reg, ttftName)["model="+m.ID]; !ok {
			t.Errorf("%s{model=%q} does not exist at zero", ttftName, m.ID)
		}
	}
	if _, ok := series(t, reg, rejectionsName)["limit=token"]; !ok {
		t.Errorf("%s{limit=\"token\"} does not exist at zero", rejectionsName)
	}
	// A second API on the same registerer fails instead of panicking.
	if _, err := newMetrics(reg, nil); err == nil {
		t.Error("registering the API metrics twice did not fail")
	}
}

func TestMetricsNilRegisterer(t *testing.T) {
	e := newEnv(t, envOptions{})
	if e.api.metrics != nil {
		t.Fatal("metrics without a registerer")
	}
	if resp, body := e.chat(chatBody(`"stream":true`)); resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s)", resp.StatusCode, body)
	}
}

func TestMetricsStreamRecordsFirstTokenAndTokens(t *testing.T) {
	e, reg := newMetricsEnv(t, envOptions{})
	model := canonicalModel(t, e)
	resp, body := e.chat(chatBody(`"stream":true,"stream_options":{"include_usage":true}`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s)", resp.StatusCode, body)
	}
	s := summarize(t, body)
	if !s.done || s.usage == nil {
		t.Fatalf("stream not complete or without usage:\n%s", body)
	}
	if n := histCount(t, reg, ttftName, model); n != 1 {
		t.Errorf("TTFT observations for %s = %d, want 1", model, n)
	}
	checkTokens(t, reg, model, s.usage.PromptTokens, s.usage.CompletionTokens)
	if n := counter(t, reg, abortsName, "reason="+abortClientGone) + counter(t, reg, abortsName, "reason="+abortUpstreamBroken); n != 0 {
		t.Errorf("aborts = %v after a complete stream", n)
	}
	if n := len(series(t, reg, tokensName)); n != 2 {
		t.Errorf("token series = %d, want 2 (input and output of one model)", n)
	}
}

// checkTokens waits for the token counters (the lease is returned by a
// deferred call, possibly after the client read the end).
func checkTokens(t *testing.T, reg *prometheus.Registry, model string, in, out int64) {
	t.Helper()
	if in <= 0 || out <= 0 {
		t.Fatalf("usage in=%d out=%d: the fake reports none", in, out)
	}
	eventually(t, 2*time.Second, "the tokens are counted", func() bool {
		return counter(t, reg, tokensName, "direction=input,model="+model) == float64(in) &&
			counter(t, reg, tokensName, "direction=output,model="+model) == float64(out)
	})
}

func TestMetricsToolsStreamRecordsFirstToken(t *testing.T) {
	e, reg := newMetricsEnv(t, envOptions{})
	model := canonicalModel(t, e)
	tools := `"stream":true,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]`
	resp, body := e.chat(chatBody(tools))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s)", resp.StatusCode, body)
	}
	if n := histCount(t, reg, ttftName, model); n != 1 {
		t.Errorf("TTFT observations for %s = %d, want 1", model, n)
	}
}

func TestMetricsNonStreamRecordsTokens(t *testing.T) {
	e, reg := newMetricsEnv(t, envOptions{})
	model := canonicalModel(t, e)
	resp, body := e.chat(chatBody(""))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s)", resp.StatusCode, body)
	}
	var got struct {
		Usage struct {
			PromptTokens     int64 `json:"prompt_tokens"`
			CompletionTokens int64 `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	checkTokens(t, reg, model, got.Usage.PromptTokens, got.Usage.CompletionTokens)
	if n := histCount(t, reg, ttftName, model); n != 0 {
		t.Errorf("TTFT observed for a non-streamed request")
	}
}

func TestMetricsRateLimitRejections(t *testing.T) {
	e, reg := newMetricsEnv(t, envOptions{})
	limited := e.addToken("one a minute", withRate(1))
	if resp, body := e.chatWith(limited); resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: status = %d (%s)", resp.StatusCode, body)
	}
	if got := counter(t, reg, rejectionsName, "limit="+limitToken); got != 0 {
		t.Errorf("rejections = %v before the limit", got)
	}
	if resp, body := e.chatWith(limited); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second request: status = %d (%s), want 429", resp.StatusCode, body)
	}
	if got := counter(t, reg, rejectionsName, "limit="+limitToken); got != 1 {
		t.Errorf("rejections = %v, want 1", got)
	}
	if n := len(series(t, reg, rejectionsName)); n != 1 {
		t.Errorf("rejection series = %d, want 1 (no token id in the labels)", n)
	}
}

func TestMetricsStreamCutCountsUpstreamBroken(t *testing.T) {
	e, reg := newMetricsEnv(t, envOptions{creds: []fake.Credential{
		testCred("c1", fake.Behavior{Fault: fake.CutMidStream, CutAfter: 2}),
	}})
	resp, body := e.chat(chatBody(`"stream":true`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s)", resp.StatusCode, body)
	}
	if s := summarize(t, body); s.errorEvent == "" {
		t.Fatalf("no error event:\n%s", body)
	}
	eventually(t, 2*time.Second, "the abort is counted", func() bool {
		return counter(t, reg, abortsName, "reason="+abortUpstreamBroken) == 1
	})
	if got := counter(t, reg, abortsName, "reason="+abortClientGone); got != 0 {
		t.Errorf("client_gone = %v, want 0", got)
	}
	if n := len(series(t, reg, tokensName)); n != 0 {
		t.Errorf("token series = %d after a broken stream, want 0", n)
	}
}

func TestMetricsShutdownAbort(t *testing.T) {
	// Slow events: the abort, always ready, wins the relay's select.
	e, reg := newMetricsEnv(t, envOptions{creds: []fake.Credential{
		testCred("c1", fake.Behavior{EventDelay: 50 * time.Millisecond}),
	}})
	e.api.AbortStreams()
	resp, body := e.chat(chatBody(`"stream":true`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s)", resp.StatusCode, body)
	}
	eventually(t, 2*time.Second, "the abort is counted", func() bool {
		return counter(t, reg, abortsName, "reason="+abortShutdown) == 1
	})
}

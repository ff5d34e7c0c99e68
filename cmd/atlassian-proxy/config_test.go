package main

import (
	"strings"
	"testing"
	"time"
)

func TestLoadConfigDefaults(t *testing.T) {
	c, err := loadConfig("serve", nil, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		Port: 8000, DataDir: "./data", UpstreamURL: "https://api.atlassian.com", LogLevel: "info", LogFormat: "json",
		MaxBodyBytes: 10 << 20, MaxAttempts: 5, RetryDeadline: 60 * time.Second, QueueTimeout: 30 * time.Second,
		QueueMax: 1000, StreamKeepAlive: 15 * time.Second, MaxConcurrency: 4, ShutdownGrace: 25 * time.Second,
		MetricsAddr: ":9090",
	}
	if c != want {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
}

func TestLoadConfigPrecedence(t *testing.T) {
	env := map[string]string{"PORT": "9001", "LOG_LEVEL": "DEBUG", "UPSTREAM_URL": "http://127.0.0.1:9/", "DATA_DIR": "/data"}
	c, err := loadConfig("serve", []string{"--port", "9002"}, mapEnv(env))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 9002 {
		t.Errorf("Port = %d, want the flag's 9002", c.Port)
	}
	if c.LogLevel != "debug" || c.DataDir != "/data" || c.UpstreamURL != "http://127.0.0.1:9" {
		t.Errorf("env not applied: %+v", c)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"port not a number", map[string]string{"PORT": "x"}, nil, "invalid PORT"},
		{"flag wins and is named", nil, []string{"--port", "-1"}, "invalid --port"},
		{"empty data dir flag", nil, []string{"--data-dir", ""}, "invalid --data-dir"},
		{"upstream with query", map[string]string{"UPSTREAM_URL": "https://a.example?x=1"}, nil, "invalid UPSTREAM_URL"},
		{"zero attempts", map[string]string{"MAX_ATTEMPTS": "0"}, nil, "invalid MAX_ATTEMPTS"},
		{"negative duration", map[string]string{"QUEUE_TIMEOUT": "-1s"}, nil, "invalid QUEUE_TIMEOUT"},
		{"bad bool", map[string]string{"SECURE_COOKIES": "perhaps"}, nil, "invalid SECURE_COOKIES"},
		{"stray argument", nil, []string{"extra"}, "unexpected argument"},
		{"unknown flag", nil, []string{"--nope"}, "not defined"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := loadConfig("serve", c.args, mapEnv(c.env))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}

// mapEnv is a lookup function over a map, as os.LookupEnv over the environment.
func mapEnv(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestMetricsAddrEmptyDisables(t *testing.T) {
	c, err := loadConfig("serve", nil, mapEnv(map[string]string{"METRICS_ADDR": ""}))
	if err != nil || c.MetricsAddr != "" {
		t.Errorf("METRICS_ADDR=\"\": addr %q, err %v; want disabled", c.MetricsAddr, err)
	}
	if _, err := loadConfig("serve", nil, mapEnv(map[string]string{"METRICS_ADDR": "9090"})); err == nil || !strings.Contains(err.Error(), "METRICS_ADDR") {
		t.Errorf("METRICS_ADDR=9090: err %v, want one naming METRICS_ADDR", err)
	}
}

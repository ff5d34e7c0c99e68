package main

import (
	"net/netip"
	"reflect"
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
		MetricsAddr: ":9090", ShutdownDelay: 5 * time.Second, RedisPrefix: "atlassian-proxy:",
	}
	if !reflect.DeepEqual(c, want) {
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
		{"redis without a key", map[string]string{"REDIS_URL": "redis://127.0.0.1:6379/0"}, nil, "SECRET_KEY is required when REDIS_URL is set"},
		{"redis scheme", map[string]string{"REDIS_URL": "http://u:hunter2-secret@127.0.0.1:6379", "SECRET_KEY": "k"}, nil, "invalid REDIS_URL: the scheme must be redis://"},
		{"redis without host", map[string]string{"REDIS_URL": "redis://", "SECRET_KEY": "k"}, nil, "invalid REDIS_URL: the URL names no host"},
		{"trusted proxies", map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8, nonsense"}, nil, `invalid TRUSTED_PROXIES: "nonsense"`},
		{"negative shutdown delay", map[string]string{"SHUTDOWN_DELAY": "-1s"}, nil, "invalid SHUTDOWN_DELAY"},
		{"empty redis prefix", nil, []string{"--redis-prefix", ""}, "invalid --redis-prefix"},
		{"short password", map[string]string{"ADMIN_PASSWORD": "hunter2"}, nil, "invalid ADMIN_PASSWORD: password must be at least 12 characters"},
		// 6 characters in 18 bytes: characters are counted, not bytes.
		{"short password in bytes", map[string]string{"ADMIN_PASSWORD": "密码密码密码"}, nil, "invalid ADMIN_PASSWORD: password must be at least 12 characters"},
		{"long password", map[string]string{"ADMIN_PASSWORD": strings.Repeat("hunter2-", 17)}, nil, "invalid ADMIN_PASSWORD: password must be at most 128 characters"},
		{"password with a control character", map[string]string{"ADMIN_PASSWORD": "hunter2-is-long\nenough"}, nil, "invalid ADMIN_PASSWORD: password must not contain control characters"},
		{"password not text", map[string]string{"ADMIN_PASSWORD": "hunter2-is-long\xffenough"}, nil, "invalid ADMIN_PASSWORD: password is not valid text"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := loadConfig("serve", c.args, mapEnv(c.env))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want one containing %q", err, c.want)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error repeats a password from REDIS_URL: %v", err)
			}
		})
	}
}

// ADMIN_PASSWORD is measured in characters, as the admin UI measures it:
// 12 four-byte characters pass, and so do 128 of them (512 bytes).
func TestAdminPasswordCharacters(t *testing.T) {
	for _, pw := range []string{strings.Repeat("🔑", 12), strings.Repeat("🔑", 128), strings.Repeat("é", 12)} {
		c, err := loadConfig("serve", nil, mapEnv(map[string]string{"ADMIN_PASSWORD": pw}))
		if err != nil || c.AdminPassword != pw {
			t.Errorf("a password of %d characters, %d bytes: err %v", len([]rune(pw)), len(pw), err)
		}
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

func TestLoadConfigRedisAndProxies(t *testing.T) {
	c, err := loadConfig("serve", nil, mapEnv(map[string]string{
		"REDIS_URL": "rediss://:pw@redis.internal:6380/2", "SECRET_KEY": "k", "REDIS_PREFIX": "team-a:",
		"TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7,::1", "SHUTDOWN_DELAY": "0s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"), netip.MustParsePrefix("::1/128")}
	if c.RedisURL != "rediss://:pw@redis.internal:6380/2" || c.RedisPrefix != "team-a:" || c.ShutdownDelay != 0 ||
		!reflect.DeepEqual(c.TrustedProxies, want) {
		t.Errorf("got %+v", c)
	}
}

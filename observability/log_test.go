package observability_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/atlassian-proxy/atlassian-proxy/observability"
)

func TestLogConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     observability.LogConfig
		wantErr string // "" = valid
	}{
		{"zero value", observability.LogConfig{}, ""},
		{"debug text", observability.LogConfig{Level: "debug", Format: "text"}, ""},
		{"upper case", observability.LogConfig{Level: "WARN", Format: "JSON"}, ""},
		{"warning alias", observability.LogConfig{Level: "warning"}, ""},
		{"error", observability.LogConfig{Level: "error"}, ""},
		{"bad level", observability.LogConfig{Level: "verbose"}, `"verbose"`},
		{"bad format", observability.LogConfig{Format: "xml"}, `"xml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			_, nerr := observability.NewLogger(&bytes.Buffer{}, tt.cfg)
			if tt.wantErr == "" {
				if err != nil || nerr != nil {
					t.Fatalf("Validate = %v, NewLogger error = %v; want nil", err, nerr)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate = %v, want an error naming %s", err, tt.wantErr)
			}
			if nerr == nil {
				t.Errorf("NewLogger error = nil, want %v", err)
			}
		})
	}
}

func TestLoggerLevelAndFormat(t *testing.T) {
	tests := []struct {
		name       string
		cfg        observability.LogConfig
		wantDebug  bool
		wantInfo   bool
		wantPrefix string
	}{
		{"default is info json", observability.LogConfig{}, false, true, "{"},
		{"debug", observability.LogConfig{Level: "debug"}, true, true, "{"},
		{"warn drops info", observability.LogConfig{Level: "warn"}, false, false, ""},
		{"text", observability.LogConfig{Format: "text"}, false, true, "time="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l, err := observability.NewLogger(&buf, tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			l.Debug("debug-line")
			l.Info("info-line")
			out := buf.String()
			if got := strings.Contains(out, "debug-line"); got != tt.wantDebug {
				t.Errorf("debug logged = %v, want %v", got, tt.wantDebug)
			}
			if got := strings.Contains(out, "info-line"); got != tt.wantInfo {
				t.Errorf("info logged = %v, want %v", got, tt.wantInfo)
			}
			if tt.wantPrefix != "" && !strings.HasPrefix(out, tt.wantPrefix) {
				t.Errorf("output %q does not start with %q", out, tt.wantPrefix)
			}
		})
	}
}

// canary values: none of them may ever appear in a log line.
const (
	canary        = "CANARY-7f3e9a1c-secret"
	canaryAPI     = "sk-ap-CANARYabcdefghijklmnopqrstuvwxyz0123456789AB"
	canaryAtlas   = "ATATT3xFfGF0CANARYatlassianTokenValue0123456789=ABCDEF12"
	canaryDisplay = "sk-ap-CANARY…" // the display prefix may appear
)

var canaryBasic = base64.StdEncoding.EncodeToString([]byte("user@example.com:" + canaryAtlas))

type secretValuer struct{}

func (secretValuer) LogValue() slog.Value {
	return slog.GroupValue(slog.String("password", canary), slog.String("note", "uses "+canaryAPI))
}

type stringer struct{}

func (stringer) String() string { return "credential with " + canaryAtlas }

type wireRequest struct {
	URL    string
	Header map[string]string
}

// TestLoggerRedaction logs canary secrets through every path a secret can
// take into a log line and proves that none reaches the output, in both
// formats, while harmless fields stay readable.
func TestLoggerRedaction(t *testing.T) {
	paths := []struct {
		name string
		log  func(l *slog.Logger)
	}{
		{"key password", func(l *slog.Logger) { l.Info("m", "password", canary) }},
		{"key Authorization", func(l *slog.Logger) { l.Info("m", "Authorization", canary) }},
		{"key token", func(l *slog.Logger) { l.Info("m", "token", canary) }},
		{"key csrf_token", func(l *slog.Logger) { l.Info("m", "csrf_token", canary) }},
		{"key X-CSRF-Token", func(l *slog.Logger) { l.Info("m", "X-CSRF-Token", canary) }},
		{"key apiKey camel case", func(l *slog.Logger) { l.Info("m", "apiKey", canary) }},
		{"key api_key", func(l *slog.Logger) { l.Info("m", "api_key", canary) }},
		{"key APIKEY", func(l *slog.Logger) { l.Info("m", "APIKEY", canary) }},
		{"key secret_key", func(l *slog.Logger) { l.Info("m", "secret_key", canary) }},
		{"key Set-Cookie", func(l *slog.Logger) { l.Info("m", "Set-Cookie", canary) }},
		{"key admin.new_password", func(l *slog.Logger) { l.Info("m", "new_password", canary) }},
		{"int under secret key", func(l *slog.Logger) { l.Info("m", "pin_password", 424242) }},
		{"nested group attr", func(l *slog.Logger) {
			l.Info("m", slog.Group("upstream", slog.Group("headers", slog.String("Authorization", canary))))
		}},
		{"secret group name", func(l *slog.Logger) {
			l.Info("m", slog.Group("password", slog.String("old", canary), slog.String("new", canary)))
		}},
		{"WithGroup and With", func(l *slog.Logger) {
			l.WithGroup("credential").With("token", canary).Info("m", "api_key", canary)
		}},
		{"With secret group", func(l *slog.Logger) { l.WithGroup("secrets").Info("m", "value", canary) }},
		{"message with API token", func(l *slog.Logger) { l.Info("rejected " + canaryAPI) }},
		{"value with API token", func(l *slog.Logger) { l.Info("m", "header", "Bearer "+canaryAPI) }},
		{"value with bare API token", func(l *slog.Logger) { l.Info("m", "detail", "got "+canaryAPI+" from client") }},
		{"value with Basic header", func(l *slog.Logger) { l.Info("m", "sent", "Basic "+canaryBasic) }},
		{"value with lower-case basic", func(l *slog.Logger) { l.Info("m", "sent", "basic "+canaryBasic) }},
		{"value with Atlassian token", func(l *slog.Logger) { l.Info("m", "body", `{"token":"`+canaryAtlas+`"}`) }},
		{"error", func(l *slog.Logger) {
			l.Error("upstream failed", "err", fmt.Errorf("call with %s: %w", "Basic "+canaryBasic, errors.New("401")))
		}},
		{"error with API token", func(l *slog.Logger) { l.Error("m", "error", errors.New("bad token "+canaryAPI)) }},
		{"error in group", func(l *slog.Logger) { l.Error("m", slog.Group("g", "err", errors.New(canaryAtlas))) }},
		{"LogValuer", func(l *slog.Logger) { l.Info("m", "cred", secretValuer{}) }},
		{"Stringer", func(l *slog.Logger) { l.Info("m", "cred", stringer{}) }},
		{"struct", func(l *slog.Logger) {
			l.Info("m", "request", wireRequest{URL: "/x", Header: map[string]string{"Authorization": "Basic " + canaryBasic}})
		}},
		{"map", func(l *slog.Logger) { l.Info("m", "fields", map[string]any{"k": canaryAPI}) }},
		{"map with secret key", func(l *slog.Logger) { l.Info("m", "form", map[string]string{"password": canary}) }},
		{"http.Header", func(l *slog.Logger) {
			l.Info("m", "headers", http.Header{"Cookie": {"session=" + canary}, "X-Api-Key": {canary}, "Accept": {"*/*"}})
		}},
		{"bytes", func(l *slog.Logger) { l.Info("m", "raw", []byte("x "+canaryAPI)) }},
		{"slice of strings", func(l *slog.Logger) { l.Info("m", "list", []string{canaryAtlas}) }},
		{"any string", func(l *slog.Logger) { l.Info("m", slog.Any("v", canaryAPI)) }},
		{"debug level", func(l *slog.Logger) { l.Debug("m", "password", canary) }},
	}
	forbidden := []string{canary, canaryAPI, canaryAtlas, canaryBasic, "CANARYabcdef", "CANARYatlassian"}
	for _, format := range []string{"json", "text"} {
		for _, p := range paths {
			t.Run(format+"/"+p.name, func(t *testing.T) {
				var buf bytes.Buffer
				l, err := observability.NewLogger(&buf, observability.LogConfig{Level: "debug", Format: format})
				if err != nil {
					t.Fatal(err)
				}
				p.log(l)
				out := buf.String()
				if out == "" {
					t.Fatalf("nothing logged")
				}
				for _, f := range forbidden {
					if strings.Contains(out, f) {
						t.Errorf("log line contains the secret %q:\n%s", f, out)
					}
				}
				if !strings.Contains(out, observability.Redacted) {
					t.Errorf("log line shows no %s marker:\n%s", observability.Redacted, out)
				}
				if format == "json" && !json.Valid(bytes.TrimSpace(buf.Bytes())) {
					t.Errorf("not valid JSON: %s", out)
				}
			})
		}
	}
}

func TestLoggerKeepsHarmlessFields(t *testing.T) {
	var buf bytes.Buffer
	l, err := observability.NewLogger(&buf, observability.LogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	l.Info("request",
		"token_id", "tok_0123456789abcdef",
		"token_prefix", canaryDisplay,
		"input_tokens", 123,
		"max_tokens", 456,
		"credential_id", "cred_abc",
		"model", "claude-sonnet-4",
		"note", "basic plan",
		"err", errors.New("upstream 429"),
	)
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("unmarshal %s: %v", buf.String(), err)
	}
	want := map[string]any{
		"msg": "request", "token_id": "tok_0123456789abcdef", "token_prefix": canaryDisplay,
		"input_tokens": 123.0, "max_tokens": 456.0, "credential_id": "cred_abc",
		"model": "claude-sonnet-4", "note": "basic plan", "err": "upstream 429", "level": "INFO",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestRedactString(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "nothing here", "nothing here"},
		{"api token", "token " + canaryAPI + " refused", "token [REDACTED] refused"},
		{"display prefix kept", "token " + canaryDisplay + " refused", "token " + canaryDisplay + " refused"},
		{"bearer", "Authorization: Bearer abcdefghijkl", "Authorization: Bearer [REDACTED]"},
		{"basic", "Authorization: Basic " + canaryBasic + "\nX: y", "Authorization: Basic [REDACTED]\nX: y"},
		{"atlassian", "token=" + canaryAtlas, "token=[REDACTED]"},
		{"two tokens", canaryAPI + " and " + canaryAPI, "[REDACTED] and [REDACTED]"},
		{"short basic word", "basic auth", "basic auth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := observability.RedactString(tt.in); got != tt.want {
				t.Errorf("RedactString(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func BenchmarkLoggerRequestLine(b *testing.B) {
	l, err := observability.NewLogger(io.Discard, observability.LogConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		l.LogAttrs(b.Context(), slog.LevelInfo, "request",
			slog.String("method", "POST"), slog.String("path", "/v1/chat/completions"),
			slog.String("route", "/v1/chat/completions"), slog.Int("status", 200), slog.Int64("bytes", 1234),
			slog.Float64("duration_ms", 12.5), slog.String("request_id", "0123456789abcdef01234567"),
			slog.String("remote", "127.0.0.1"), slog.String("credential_id", "cred_0123456789abcdef"),
			slog.String("token_id", "tok_0123456789abcdef"), slog.Int("attempts", 1), slog.String("outcome", "ok"))
	}
}

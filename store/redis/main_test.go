package redis

import (
	"log/slog"
	"os"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/atlassian-proxy/atlassian-proxy/internal/logtest"
	"github.com/atlassian-proxy/atlassian-proxy/internal/redistest"
)

// libLog collects what go-redis logs during the tests (the failure tests
// make it log every failed dial), instead of the standard error.
var libLog logtest.Buffer

func TestMain(m *testing.M) {
	goredis.SetLogger(Logger{L: slog.New(slog.NewTextHandler(&libLog, nil))})
	os.Exit(m.Run())
}

func TestLogger(t *testing.T) {
	t.Parallel()
	const secret = "pa55-SECRET-word"
	srv := redistest.StartWith(t, redistest.Config{Password: secret})
	s := openStore(t, srv, Options{})
	srv.Stop(t)
	_ = s.Ping(t.Context())
	got := libLog.String()
	for _, want := range []string{"level=WARN", "component=go-redis", "failed to dial", srv.Addr()} {
		if !strings.Contains(got, want) {
			t.Errorf("go-redis log lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, secret) {
		t.Errorf("go-redis log shows the password:\n%s", got)
	}
}

package main

import (
	"context"
	"encoding/base64"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/internal/logtest"
)

func TestCredFlag(t *testing.T) {
	tests := []struct {
		in      string
		want    fake.Credential
		wantErr bool
	}{
		{in: "a@b.c:tok", want: fake.Credential{Email: "a@b.c", Token: "tok"}},
		{in: "a@b.c:tok:rate_limit_daily", want: fake.Credential{Email: "a@b.c", Token: "tok", Default: fake.Behavior{Fault: fake.RateLimitDaily}}},
		{in: "a@b.c:tok:ok", want: fake.Credential{Email: "a@b.c", Token: "tok"}},
		{in: "a@b.c", wantErr: true},
		{in: ":tok", wantErr: true},
		{in: "a@b.c:", wantErr: true},
		{in: "a@b.c::unauthorized", wantErr: true},
		{in: "a@b.c:tok:nonsense", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var c credFlags
			err := c.Set(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Set(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if !tt.wantErr && (len(c) != 1 || c[0].Email != tt.want.Email || c[0].Token != tt.want.Token || c[0].Default.Fault != tt.want.Default.Fault) {
				t.Errorf("Set(%q) = %+v, want %+v", tt.in, c, tt.want)
			}
		})
	}
}

func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var logs logtest.Buffer
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"-addr", "127.0.0.1:0", "-cred", "me@example.com:secret", "-event-delay", "0s"}, &logs)
	}()

	re := regexp.MustCompile(`url=(http://\S+)`)
	var url string
	for deadline := time.Now().Add(5 * time.Second); url == "" && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			url = m[1]
		}
	}
	if url == "" {
		cancel()
		t.Fatalf("no listening line in %q (run: %v)", logs.String(), <-errc)
	}
	enc := base64.StdEncoding.EncodeToString([]byte("me@example.com:secret"))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/rovodev/v3/credits/check", nil)
	req.Header.Set("Authorization", "Basic "+enc)
	req.Header.Set("X-Atlassian-EncodedToken", enc)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("credits/check status = %d, want 200", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("run = %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if strings.Contains(logs.String(), "secret") || strings.Contains(logs.String(), enc) {
		t.Errorf("logs contain the token: %s", logs.String())
	}
}

func TestRunBadFlag(t *testing.T) {
	var logs logtest.Buffer
	if err := run(t.Context(), []string{"-cred", "broken"}, &logs); err == nil {
		t.Error("run with a bad -cred: no error")
	}
}

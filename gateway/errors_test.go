package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// TestDailyLimitCooling: a DAILY_LIMIT_EXCEEDED 429 that names no retry
// time leaves Retry at 0, so that the pool cools the credential for its
// QuotaCooldown (1 h by default), not for a 10 s default. Through the
// client, the fake gateway and a running pool.
func TestDailyLimitCooling(t *testing.T) {
	srv, c := startFake(t)
	m := mustModel(t, "claude-sonnet-4")
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		b         fake.Behavior
		cfg       pool.Config
		wantKind  pool.Outcome
		wantRetry time.Duration // the gateway's Retry
		wantCool  time.Duration // the pool's cooldown
	}{
		{"daily, no retry given: QuotaCooldown", fake.Behavior{Fault: fake.RateLimitDaily, RetryAfterSeconds: -1}, pool.Config{}, pool.OutcomeQuotaExhausted, 0, time.Hour},
		{"daily, no retry given: configured QuotaCooldown", fake.Behavior{Fault: fake.RateLimitDaily, RetryAfterSeconds: -1}, pool.Config{QuotaCooldown: 3 * time.Hour}, pool.OutcomeQuotaExhausted, 0, 3 * time.Hour},
		{"daily with retryAfterSeconds", fake.Behavior{Fault: fake.RateLimitDaily, RetryAfterSeconds: 7200}, pool.Config{}, pool.OutcomeQuotaExhausted, 2 * time.Hour, 2 * time.Hour},
		{"daily with a Retry-After header", fake.Behavior{Fault: fake.RateLimitDaily, RetryAfterSeconds: -1, RetryAfterHeader: "600"}, pool.Config{}, pool.OutcomeQuotaExhausted, 10 * time.Minute, 10 * time.Minute},
		{"minute, no retry given: the 10 s default", fake.Behavior{Fault: fake.RateLimitMinute, RetryAfterSeconds: -1}, pool.Config{}, pool.OutcomeRateLimited, defaultRetry, defaultRetry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.Push(alice.ID, 1, tt.b)
			_, upErr := c.Complete(t.Context(), alice, m, hello("claude-sonnet-4"))
			ge := asError(t, upErr)
			if ge.Kind != tt.wantKind || ge.Retry != tt.wantRetry || pool.RetryAfterOf(upErr) != tt.wantRetry {
				t.Fatalf("got kind %v retry %v, want %v %v (%v)", ge.Kind, ge.Retry, tt.wantKind, tt.wantRetry, upErr)
			}

			p, err := pool.New(tt.cfg, pool.Deps{Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			p.Sync([]pool.Spec{{Credential: alice, Enabled: true}}, nil)
			ctx, cancel := context.WithCancel(t.Context())
			ran := make(chan error, 1)
			go func() { ran <- p.Run(ctx) }()
			defer func() { cancel(); <-ran }()
			lease := acquire(t, p)
			// As dispatch reports an attempt's outcome.
			lease.Finish(pool.Result{Outcome: ge.Outcome(), RetryAfter: pool.RetryAfterOf(upErr), Err: upErr})
			st := p.Status().Credentials[0]
			if st.State != pool.StateCooling || st.Reason != tt.wantKind.String() || !st.CooldownUntil.Equal(now.Add(tt.wantCool)) {
				t.Errorf("credential = state %s reason %s until %v, want cooling %s until %v", st.State, st.Reason, st.CooldownUntil, tt.wantKind, now.Add(tt.wantCool))
			}
		})
	}
}

// acquire leases the pool's credential once Run has started.
func acquire(t *testing.T, p *pool.Pool) *pool.Lease {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := p.Acquire(nil, 1)
		if err == nil {
			return l
		}
		if !errors.Is(err, pool.ErrBusy) || time.Now().After(deadline) {
			t.Fatalf("Acquire: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestClientErrorTextBody: a 4xx whose body is short text keeps the
// upstream's message, with secrets removed; long bodies, markup and
// binary get the generic message.
func TestClientErrorTextBody(t *testing.T) {
	leak := "token " + alice.Token + " of " + strings.ToUpper(alice.Email) + " sent as Authorization: Basic " + basicToken(alice)
	tests := []struct {
		name        string
		status      int
		contentType string
		body        string
		wantMsg     string // exact message; "" with wantSubstr
		wantSubstr  []string
		wantCode    string
	}{
		{"400 plain text", 400, "text/plain", "messages[1].content: field required\n", "messages[1].content: field required", nil, ""},
		{"404 plain text", 404, "text/plain", "Not Found", "Not Found", nil, ""},
		{"413 plain text", 413, "text/plain; charset=utf-8", "Request Entity Too Large", "Request Entity Too Large", nil, ""},
		{"422 JSON string", 422, "application/json", `"temperature must be at most 1"`, "temperature must be at most 1", nil, ""},
		{"400 text without content type", 400, "", "bad request", "bad request", nil, ""},
		{"400 text with secrets", 400, "text/plain", leak, "", []string{"token [redacted]", "sent as Authorization: Basic [redacted]"}, ""},
		{"400 text with control characters", 400, "text/plain", "bad\x1b[31m input\r\nhere", "bad [31m input  here", nil, ""},
		{"400 text overflow", 400, "text/plain", "prompt is too long: 250000 tokens > 200000 maximum", "prompt is too long: 250000 tokens > 200000 maximum", nil, CodeContextLength},
		{"400 long text", 400, "text/plain", strings.Repeat("x", maxTextBody+1), "the upstream rejected the request (status 400)", nil, ""},
		{"404 HTML page", 404, "text/html", "<html><body><h1>404 Not Found</h1></body></html>", "the upstream rejected the request (status 404)", nil, ""},
		{"400 binary", 400, "application/octet-stream", "\x00\x01bad", "the upstream rejected the request (status 400)", nil, ""},
		{"400 invalid UTF-8", 400, "text/plain", "bad \xff\xfe", "the upstream rejected the request (status 400)", nil, ""},
		{"400 empty", 400, "text/plain", "  \n", "the upstream rejected the request (status 400)", nil, ""},
		{"400 JSON without a message", 400, "application/json", `{"code":400}`, "the upstream rejected the request (status 400)", nil, ""},
		{"400 JSON message kept", 400, "application/json", `{"message":"from json"}`, "from json", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := scriptedServer(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.contentType != "" {
					w.Header().Set("Content-Type", tt.contentType)
				} else {
					w.Header()["Content-Type"] = nil
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			_, err := c.Complete(t.Context(), alice, mustModel(t, "gpt-5"), hello("gpt-5"))
			ge := asError(t, err)
			if ge.Kind != pool.OutcomeClientError || ge.Status != tt.status || ge.Code != tt.wantCode {
				t.Errorf("got kind %v status %d code %q, want client_error %d %q", ge.Kind, ge.Status, ge.Code, tt.status, tt.wantCode)
			}
			if tt.wantMsg != "" && ge.Message != tt.wantMsg {
				t.Errorf("message = %q, want %q", ge.Message, tt.wantMsg)
			}
			for _, s := range tt.wantSubstr {
				if !strings.Contains(ge.Message, s) {
					t.Errorf("message = %q, want it to contain %q", ge.Message, s)
				}
			}
			noSecrets(t, ge.Message)
			noSecrets(t, err.Error())
			if strings.Contains(strings.ToLower(ge.Message), alice.Email) {
				t.Errorf("message %q contains the email in another case", ge.Message)
			}
		})
	}
}

func TestTextMessage(t *testing.T) {
	tests := []struct{ body, want string }{
		{"", ""},
		{"plain", "plain"},
		{`"quoted"`, "quoted"},
		{`"unterminated`, `"unterminated`},
		{"<p>markup</p>", ""},
		{"nul\x00byte", ""},
		{strings.Repeat("é", maxTextBody/2+1), ""},
		{strings.Repeat("a", maxTextBody), strings.Repeat("a", maxMessageLen) + "…"},
	}
	for _, tt := range tests {
		if got := textMessage([]byte(tt.body), alice); got != tt.want {
			t.Errorf("textMessage(%.20q) = %.30q, want %.30q", tt.body, got, tt.want)
		}
	}
}

// refReplaceFold is the former replaceFold: a regexp compiled per call.
func refReplaceFold(s, old, repl string) string {
	re, err := regexp.Compile("(?i)" + regexp.QuoteMeta(old))
	if err != nil {
		return strings.ReplaceAll(s, old, repl)
	}
	return re.ReplaceAllLiteralString(s, repl)
}

var replaceFoldSeeds = []struct{ s, old string }{
	{"no match here", "alice@example.com"},
	{"Contact ALICE@Example.COM or alice@example.com, AlIcE@eXaMpLe.CoM!", "alice@example.com"},
	{"alice@example.com", "ALICE@EXAMPLE.COM"},
	{"xalice@example.comx", "Alice@Example.Com"},
	{"alice@example.co", "alice@example.com"},
	{"", "alice@example.com"},
	{"aaaa", "aa"},
	{"AaAaA", "aA"},
	{"\u212Aate@x.io and Kate@X.IO", "kate@x.io"},                  // Kelvin sign, 3 bytes for 1
	{"\u017Fam@x.io and SAM@x.io", "sam@x.io"},                     // long s
	{"ſam@x.io", "ſAM@x.io"},                                       // the other way round
	{"İstanbul@x.io istanbul@x.io ISTANBUL@x.io", "istanbul@x.io"}, // dotted capital I: no simple fold to i
	{"ΣΊΣΥΦΟΣ@x.gr σίσυφος@x.gr σίσυφοσ@x.gr", "σίσυφος@x.gr"},
	{"Ünïcödé@Bücher.de ünïcödé@bücher.DE", "ÜNÏCÖDÉ@bücher.de"},
	{"bad \xffalice@x.io\xfe bytes", "alice@x.io"},
	{"bad \xff bytes", "\uFFFD"},
	{"bad \xff bytes", "\xff"},
	{"emoji 🎉Alice@x.io🎉", "alice@x.io"},
	{"the end: alice@x.io", "ALICE@X.IO"},
	{"a.b*c+d?e(f)g[h]i{j}k|l^m$n\\o", "A.B*C+D?E(F)G[H]I{J}K|L^M$N\\O"},
}

// TestReplaceFoldMatchesRegexp: the loop replaces exactly what the
// case-insensitive regexp it replaced did, mixed case and Unicode
// folding included.
func TestReplaceFoldMatchesRegexp(t *testing.T) {
	for _, tt := range replaceFoldSeeds {
		t.Run(tt.s+"/"+tt.old, func(t *testing.T) {
			got, want := replaceFold(tt.s, tt.old, "[redacted]"), refReplaceFold(tt.s, tt.old, "[redacted]")
			if got != want {
				t.Errorf("replaceFold(%q, %q) = %q, want %q", tt.s, tt.old, got, want)
			}
		})
	}
	t.Run("mixed case email", func(t *testing.T) {
		got := replaceFold("user ALICE@Example.com, again alice@EXAMPLE.COM.", "alice@example.com", "[redacted]")
		if want := "user [redacted], again [redacted]."; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("empty old changes nothing", func(t *testing.T) {
		if got := replaceFold("abc", "", "x"); got != "abc" {
			t.Errorf("got %q, want abc", got)
		}
	})
}

func FuzzReplaceFold(f *testing.F) {
	for _, tt := range replaceFoldSeeds {
		f.Add(tt.s, tt.old)
	}
	f.Fuzz(func(t *testing.T, s, old string) {
		if old == "" {
			t.Skip() // the regexp would insert repl between every rune
		}
		if got, want := replaceFold(s, old, "<R>"), refReplaceFold(s, old, "<R>"); got != want {
			t.Errorf("replaceFold(%q, %q) = %q, want %q", s, old, got, want)
		}
	})
}

// BenchmarkRedactEmail: the email part of sanitize on a 1 KB upstream
// message, with the loop and with the regexp it replaced.
func BenchmarkRedactEmail(b *testing.B) {
	msg := strings.Repeat("The upstream failed for user Alice@Example.com; please retry later. ", 15)
	for _, impl := range []struct {
		name string
		fn   func(s, old, repl string) string
	}{{"loop", replaceFold}, {"regexp", refReplaceFold}} {
		b.Run(impl.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				impl.fn(msg, "alice@example.com", pool.Redacted)
			}
		})
	}
}

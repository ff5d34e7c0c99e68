package pool

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
)

func TestRedactCredential(t *testing.T) {
	c := Credential{Email: "dev@example.com", Token: "ATATT3xFfGF0+tokenWith/Slash=AndMore0123456789=="}
	basic := base64.StdEncoding.EncodeToString([]byte(c.Email + ":" + c.Token))
	cases := []struct{ name, in string }{
		{"verbatim", "bad token " + c.Token + " given"},
		{"query-escaped", "GET /x?token=" + url.QueryEscape(c.Token) + " refused"},
		{"path-escaped", "no such key /keys/" + url.PathEscape(c.Token)},
		{"basic", "Authorization: " + basic},
		{"first 12", "token " + c.Token[:12] + "… is invalid"},
		{"middle 20", "…" + c.Token[10:30] + "…"},
		{"last 13", "ends with " + c.Token[len(c.Token)-13:]},
		{"twice", c.Token + " and again " + c.Token[5:25]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := RedactCredential(tc.in, c)
			if !strings.Contains(out, Redacted) {
				t.Errorf("nothing redacted in %q", out)
			}
			for i := 0; i+redactWindow <= len(c.Token); i++ {
				if strings.Contains(out, c.Token[i:i+redactWindow]) {
					t.Fatalf("a 12-character fragment of the token survived: %q", out)
				}
			}
		})
	}
	keep := "the prompt is too long: 12345 tokens > 8192"
	if out := RedactCredential(keep, c); out != keep {
		t.Errorf("a message without the token changed: %q", out)
	}
	if out := RedactCredential("short", Credential{Token: ""}); out != "short" {
		t.Errorf("no token: %q", out)
	}
	// A test-sized token (under the window) is removed when it occurs whole.
	if out := RedactCredential("key tok-1 rejected", Credential{Token: "tok-1"}); out != "key "+Redacted+" rejected" {
		t.Errorf("short token: %q", out)
	}
}

func BenchmarkRedactCredential(b *testing.B) {
	c := Credential{Email: "dev@example.com", Token: strings.Repeat("ATATT3xFfGF0abcdef", 11)}
	msg := strings.Repeat("The upstream said something long and unhelpful. ", 20)
	for b.Loop() {
		RedactCredential(msg, c)
	}
}

package auth_test

import (
	"crypto/sha256"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
)

var tokenRE = regexp.MustCompile(`^sk-ap-[A-Za-z0-9_-]{43}$`)

func TestNewToken(t *testing.T) {
	seen := make(map[string]bool)
	for i := range 200 {
		token, display, hash, err := auth.NewToken()
		if err != nil {
			t.Fatalf("NewToken: %v", err)
		}
		if !tokenRE.MatchString(token) {
			t.Fatalf("token %d = %q, want sk-ap- and 43 base64url characters", i, token)
		}
		if len(token) != auth.TokenLength {
			t.Errorf("len(token) = %d, want %d", len(token), auth.TokenLength)
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(token, auth.TokenPrefix))
		if err != nil || len(raw) != 32 {
			t.Errorf("token body decodes to %d bytes (err %v), want 32", len(raw), err)
		}
		if want := token[:12] + "…"; display != want {
			t.Errorf("display = %q, want %q", display, want)
		}
		if want := sha256.Sum256([]byte(token)); string(hash) != string(want[:]) {
			t.Errorf("hash = %x, want SHA-256 %x", hash, want)
		}
		if seen[token] {
			t.Fatalf("token repeated after %d tokens", i)
		}
		seen[token] = true
	}
}

// TestNewTokenEntropy checks that every position of the token body takes
// many values: a crude guard against a constant or low-entropy source.
func TestNewTokenEntropy(t *testing.T) {
	const n = 256
	var chars [43]map[byte]bool
	for i := range chars {
		chars[i] = make(map[byte]bool)
	}
	for range n {
		token, _, _, err := auth.NewToken()
		if err != nil {
			t.Fatal(err)
		}
		body := token[len(auth.TokenPrefix):]
		for i := range len(body) {
			chars[i][body[i]] = true
		}
	}
	for i, m := range chars[:42] { // the last char carries only 4 bits
		if len(m) < 32 {
			t.Errorf("position %d took %d distinct values in %d tokens, want ≥ 32", i, len(m), n)
		}
	}
}

func TestHashToken(t *testing.T) {
	tests := []struct {
		name, token string
	}{
		{"empty", ""},
		{"token", "sk-ap-abc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := sha256.Sum256([]byte(tt.token))
			if got := auth.HashToken(tt.token); string(got) != string(want[:]) {
				t.Errorf("HashToken(%q) = %x, want %x", tt.token, got, want)
			}
		})
	}
	if string(auth.HashToken("a")) == string(auth.HashToken("b")) {
		t.Errorf("different tokens hash equal")
	}
}

func TestDisplayToken(t *testing.T) {
	tests := []struct{ in, want string }{
		{"sk-ap-abcdefghijklmnop", "sk-ap-abcdef…"},
		{"short", "short…"},
	}
	for _, tt := range tests {
		if got := auth.DisplayToken(tt.in); got != tt.want {
			t.Errorf("DisplayToken(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNewID(t *testing.T) {
	tests := []struct {
		prefix string
		re     *regexp.Regexp
	}{
		{"cred", regexp.MustCompile(`^cred_[0-9a-f]{16}$`)},
		{"tok", regexp.MustCompile(`^tok_[0-9a-f]{16}$`)},
		{"", regexp.MustCompile(`^[0-9a-f]{16}$`)},
	}
	for _, tt := range tests {
		t.Run("prefix "+tt.prefix, func(t *testing.T) {
			a, err := auth.NewID(tt.prefix)
			if err != nil {
				t.Fatal(err)
			}
			b, err := auth.NewID(tt.prefix)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.re.MatchString(a) {
				t.Errorf("NewID(%q) = %q, want match of %s", tt.prefix, a, tt.re)
			}
			if a == b {
				t.Errorf("two ids are equal: %q", a)
			}
		})
	}
}

func TestGeneratePassword(t *testing.T) {
	const ambiguous = "0Oo1lI5S2Z8B6G"
	seen := make(map[string]bool)
	counts := make(map[rune]int)
	for range 500 {
		pw, err := auth.GeneratePassword()
		if err != nil {
			t.Fatal(err)
		}
		if len(pw) != 20 {
			t.Fatalf("len(%q) = %d, want 20", pw, len(pw))
		}
		if strings.ContainsAny(pw, ambiguous) {
			t.Errorf("password %q has an ambiguous character", pw)
		}
		for _, r := range pw {
			counts[r]++
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				t.Errorf("password %q has a non-alphanumeric character %q", pw, r)
			}
		}
		if seen[pw] {
			t.Fatalf("password repeated: %q", pw)
		}
		seen[pw] = true
	}
	if len(counts) < 45 {
		t.Errorf("10000 characters used %d distinct ones, want about 48", len(counts))
	}
}

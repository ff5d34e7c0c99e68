package auth_test

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/argon2"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
)

var phcRE = regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)

// Argon2id with the real parameters takes about a second under the race
// detector: the tests compute it only a few times and run in parallel.

const testPassword = "correct horse battery staple"

var goodHash = sync.OnceValues(func() (string, error) { return auth.HashPassword(testPassword) })

func TestHashPassword(t *testing.T) {
	t.Parallel()
	a, err := goodHash()
	if err != nil {
		t.Fatal(err)
	}
	b, err := auth.HashPassword(testPassword)
	if err != nil {
		t.Fatal(err)
	}
	if !phcRE.MatchString(a) {
		t.Errorf("HashPassword = %q, want PHC argon2id m=19456,t=2,p=1 with 16-byte salt and 32-byte hash", a)
	}
	if a == b {
		t.Errorf("two hashes of one password are equal; want random salts")
	}
	if strings.Contains(a, "horse") {
		t.Errorf("hash contains the password")
	}
	if auth.PasswordNeedsRehash(a) {
		t.Errorf("PasswordNeedsRehash(fresh hash) = true, want false")
	}
}

// phc builds an encoded hash with explicit parameters, as another version
// of the program (or another tool) would have written it. An empty pw
// gives a dummy key, for tests that only parse.
func phc(pw string, m, tm uint32, p uint8, saltLen, keyLen int) string {
	salt := []byte(strings.Repeat("s", saltLen))
	key := make([]byte, keyLen)
	if pw != "" {
		key = argon2.IDKey([]byte(pw), salt, tm, m, p, uint32(keyLen))
	}
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", m, tm, p,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
}

func TestVerifyPassword(t *testing.T) {
	t.Parallel()
	const pw = testPassword
	good, err := goodHash()
	if err != nil {
		t.Fatal(err)
	}
	cheap := phc(pw, 64, 1, 2, 16, 32) // other (weak) parameters: fast to verify
	parts := strings.Split(good, "$")
	with := func(i int, v string) string {
		p := append([]string(nil), parts...)
		p[i] = v
		return strings.Join(p, "$")
	}
	tests := []struct {
		name    string
		encoded string
		pw      string
		want    bool
	}{
		{"right password", good, pw, true},
		{"wrong password", good, pw + "!", false},
		{"other parameters verify", cheap, pw, true},
		{"other parameters wrong password", cheap, "nope", false},
		{"other parameters empty password", cheap, "", false},
		{"other parameters case differs", cheap, strings.ToUpper(pw), false},
		{"longer key and salt verify", phc(pw, 128, 3, 1, 32, 64), pw, true},
		{"empty encoded", "", pw, false},
		{"garbage", "not a hash", pw, false},
		{"argon2i", with(1, "argon2i"), pw, false},
		{"bcrypt", "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy", pw, false},
		{"other version", with(2, "v=16"), pw, false},
		{"missing param", with(3, "m=19456,t=2"), pw, false},
		{"duplicate param", with(3, "m=19456,m=19456,p=1"), pw, false},
		{"unknown param", with(3, "m=19456,t=2,x=1"), pw, false},
		{"zero time", with(3, "m=19456,t=0,p=1"), pw, false},
		{"zero threads", with(3, "m=19456,t=2,p=0"), pw, false},
		{"huge memory", with(3, "m=4294967295,t=2,p=1"), pw, false},
		{"huge time", with(3, "m=19456,t=100000,p=1"), pw, false},
		{"negative", with(3, "m=-1,t=2,p=1"), pw, false},
		{"memory below lanes", with(3, "m=8,t=2,p=4"), pw, false},
		{"bad salt base64", with(4, "!!!"), pw, false},
		{"short salt", with(4, "c2FsdA"), pw, false},
		{"bad hash base64", with(5, "###"), pw, false},
		{"padded hash", with(5, parts[5]+"="), pw, false},
		{"short hash", with(5, "AAAA"), pw, false},
		{"truncated", good[:len(good)-5], pw, false},
		{"extra field", good + "$x", pw, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := auth.VerifyPassword(tt.encoded, tt.pw); got != tt.want {
				t.Errorf("VerifyPassword(%q) = %v, want %v", tt.encoded, got, tt.want)
			}
		})
	}
}

func TestPasswordNeedsRehash(t *testing.T) {
	tests := []struct {
		name    string
		encoded string
		want    bool
	}{
		{"current", phc("", 19456, 2, 1, 16, 32), false},
		{"weaker memory", phc("", 8192, 2, 1, 16, 32), true},
		{"other time", phc("", 19456, 3, 1, 16, 32), true},
		{"other threads", phc("", 19456, 2, 2, 16, 32), true},
		{"other key length", phc("", 19456, 2, 1, 16, 64), true},
		{"other salt length", phc("", 19456, 2, 1, 8, 32), true},
		{"malformed", "nope", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := auth.PasswordNeedsRehash(tt.encoded); got != tt.want {
				t.Errorf("PasswordNeedsRehash = %v, want %v", got, tt.want)
			}
		})
	}
}

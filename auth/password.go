package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters of HashPassword: the OWASP minimum for argon2id
// (19 MiB, 2 iterations, 1 lane), a 16-byte salt and a 32-byte key.
const (
	argonMemoryKiB = 19 * 1024
	argonTime      = 2
	argonThreads   = 1
	argonSaltLen   = 16
	argonKeyLen    = 32
)

// Bounds on parameters read from an encoded hash, so that a crafted or
// corrupted hash cannot make VerifyPassword allocate gigabytes or spin.
const (
	maxArgonMemoryKiB = 1 << 20 // 1 GiB
	maxArgonTime      = 64
	minSaltLen        = 8
	minKeyLen         = 16
	maxKeyLen         = 128
)

type argonParams struct {
	memory  uint32
	time    uint32
	threads uint8
}

var defaultArgon = argonParams{memory: argonMemoryKiB, time: argonTime, threads: argonThreads}

// HashPassword hashes pw with argon2id and a random salt and returns the PHC
// string "$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>" (unpadded base64).
func HashPassword(pw string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: hash password: salt: %w", err)
	}
	p := defaultArgon
	key := argon2.IDKey([]byte(pw), salt, p.time, p.memory, p.threads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.memory, p.time, p.threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// VerifyPassword reports whether pw matches the encoded hash made by
// HashPassword. The parameters are read from encoded, so hashes made with
// other parameters still verify. The final comparison is constant time. A
// malformed encoded hash gives false.
func VerifyPassword(encoded, pw string) bool {
	p, salt, want, ok := parsePHC(encoded)
	if !ok {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, p.time, p.memory, p.threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// PasswordNeedsRehash reports whether encoded is malformed or was made with
// parameters other than HashPassword's current ones, so that a caller can
// re-hash the password after a successful login.
func PasswordNeedsRehash(encoded string) bool {
	p, salt, key, ok := parsePHC(encoded)
	return !ok || p != defaultArgon || len(salt) != argonSaltLen || len(key) != argonKeyLen
}

// parsePHC parses "$argon2id$v=19$m=M,t=T,p=P$salt$hash".
func parsePHC(encoded string) (p argonParams, salt, key []byte, ok bool) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, false
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, false
	}
	var seen [3]bool
	fields := strings.Split(parts[3], ",")
	if len(fields) != 3 {
		return p, nil, nil, false
	}
	for _, f := range fields {
		name, val, found := strings.Cut(f, "=")
		if !found {
			return p, nil, nil, false
		}
		n, err := strconv.ParseUint(val, 10, 32)
		if err != nil {
			return p, nil, nil, false
		}
		switch name {
		case "m":
			if seen[0] || n < 8 || n > maxArgonMemoryKiB {
				return p, nil, nil, false
			}
			seen[0], p.memory = true, uint32(n)
		case "t":
			if seen[1] || n < 1 || n > maxArgonTime {
				return p, nil, nil, false
			}
			seen[1], p.time = true, uint32(n)
		case "p":
			if seen[2] || n < 1 || n > 255 {
				return p, nil, nil, false
			}
			seen[2], p.threads = true, uint8(n)
		default:
			return p, nil, nil, false
		}
	}
	// argon2 requires at least 8 KiB of memory per lane.
	if p.memory < 8*uint32(p.threads) {
		return p, nil, nil, false
	}
	salt, err := base64.RawStdEncoding.Strict().DecodeString(parts[4])
	if err != nil || len(salt) < minSaltLen {
		return p, nil, nil, false
	}
	key, err = base64.RawStdEncoding.Strict().DecodeString(parts[5])
	if err != nil || len(key) < minKeyLen || len(key) > maxKeyLen {
		return p, nil, nil, false
	}
	return p, salt, key, true
}

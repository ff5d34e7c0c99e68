package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
)

// TokenPrefix starts every client API token, so that a token is
// recognisable (by people, log redaction and secret scanners).
const TokenPrefix = "sk-ap-"

const (
	tokenRandomBytes = 32 // 256 bits
	// TokenLength is the length of a token: the prefix and the 43-character
	// unpadded base64url form of 32 random bytes.
	TokenLength = len(TokenPrefix) + 43
	// displayChars is how much of a token is kept for display: the prefix
	// and 6 characters (36 bits), enough to tell tokens apart in a list.
	displayChars = 12
)

// NewToken mints a client API token: TokenPrefix followed by 32 random
// bytes in unpadded base64url. It returns the token (shown once, never
// stored), its display prefix (the first 12 characters and "…") and its
// SHA-256 hash (what the store keeps).
func NewToken() (token, display string, hash []byte, err error) {
	var b [tokenRandomBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", nil, fmt.Errorf("auth: new token: %w", err)
	}
	token = TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, DisplayToken(token), HashToken(token), nil
}

// DisplayToken returns the part of a token that may be shown and logged:
// its first 12 characters followed by "…".
func DisplayToken(token string) string {
	if len(token) <= displayChars {
		return token + "…"
	}
	return token[:displayChars] + "…"
}

// HashToken returns the SHA-256 of token, the form kept by the store.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// NewID returns prefix + "_" + 16 random hex characters (64 bits), for
// example "cred_3f9a0c1d2e4b5a69". An empty prefix gives the hex alone.
func NewID(prefix string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("auth: new id: %w", err)
	}
	if prefix == "" {
		return hex.EncodeToString(b[:]), nil
	}
	return prefix + "_" + hex.EncodeToString(b[:]), nil
}

// passwordAlphabet has no characters that are easily confused when read
// from a console: no 0/O/o, 1/l/I, 5/S, 2/Z, 8/B, 6/G. 48 characters: a
// generated password of 20 carries about 111 bits.
const passwordAlphabet = "abcdefghijkmnpqrstuvwxyzACDEFHJKLMNPQRTUVWXY3479"

// GeneratedPasswordLength is the length of GeneratePassword's passwords.
const GeneratedPasswordLength = 20

// GeneratePassword returns a random password of 20 characters from an
// alphabet without ambiguous characters, drawn from crypto/rand without
// modulo bias.
func GeneratePassword() (string, error) {
	const n = len(passwordAlphabet)
	const limit = 256 - 256%n // reject bytes ≥ limit: no modulo bias
	out := make([]byte, 0, GeneratedPasswordLength)
	var buf [32]byte
	for len(out) < GeneratedPasswordLength {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("auth: generate password: %w", err)
		}
		for _, b := range buf {
			if int(b) >= limit || len(out) == GeneratedPasswordLength {
				continue
			}
			out = append(out, passwordAlphabet[int(b)%n])
		}
	}
	return string(out), nil
}

package auth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the length in bytes of the secret key (AES-256).
const KeySize = 32

// sealVersion1 is the leading byte of the sealed format:
// version(1) || nonce(12) || AES-256-GCM ciphertext and tag(16).
// A future format (another algorithm, key rotation with a key id) gets a
// new version byte, and Open keeps reading the old ones.
const sealVersion1 byte = 1

// ErrOpen is returned by Cipher.Open when sealed data cannot be opened:
// a wrong key, a wrong credential id, or tampered or truncated data. The
// three are indistinguishable by design.
var ErrOpen = errors.New("auth: cannot open sealed data (wrong key, wrong id or tampered)")

// Cipher seals and opens small secrets (Atlassian API tokens) with
// AES-256-GCM. The id given to Seal is the associated data and must be
// given again to Open. A Cipher is safe for concurrent use.
type Cipher struct {
	aead cipher.AEAD
}

// NewCipher returns a Cipher for a 32-byte key.
func NewCipher(key []byte) (*Cipher, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("auth: key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("auth: new cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("auth: new cipher: %w", err)
	}
	return &Cipher{aead: aead}, nil
}

// Seal encrypts plaintext with a random nonce, binding it to id.
func (c *Cipher) Seal(id string, plaintext []byte) ([]byte, error) {
	ns := c.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(plaintext)+c.aead.Overhead())
	out[0] = sealVersion1
	if _, err := rand.Read(out[1 : 1+ns]); err != nil {
		return nil, fmt.Errorf("auth: seal: nonce: %w", err)
	}
	return c.aead.Seal(out, out[1:1+ns], plaintext, []byte(id)), nil
}

// Open decrypts data made by Seal with the same key and id. It returns
// ErrOpen when the key or the id differs or the data was changed.
func (c *Cipher) Open(id string, sealed []byte) ([]byte, error) {
	if len(sealed) == 0 {
		return nil, fmt.Errorf("auth: open: empty sealed data: %w", ErrOpen)
	}
	if sealed[0] != sealVersion1 {
		return nil, fmt.Errorf("auth: open: unsupported sealed format version %d", sealed[0])
	}
	ns := c.aead.NonceSize()
	if len(sealed) < 1+ns+c.aead.Overhead() {
		return nil, fmt.Errorf("auth: open: sealed data too short: %w", ErrOpen)
	}
	pt, err := c.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], []byte(id))
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// ParseKey decodes a secret key given as base64 (standard or URL alphabet,
// padded or not; surrounding white space ignored) of exactly 32 bytes. The
// error never contains s.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("auth: key is empty")
	}
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding,
	} {
		key, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("auth: key must be base64 of exactly %d bytes, got %d bytes", KeySize, len(key))
		}
		return key, nil
	}
	// The base64 error is not wrapped: it could quote part of the input.
	return nil, fmt.Errorf("auth: key is not valid base64 (want %d random bytes, e.g. from `openssl rand -base64 32`)", KeySize)
}

// EncodeKey returns the standard padded base64 form of key, the form
// LoadOrCreateKeyFile writes and ParseKey reads.
func EncodeKey(key []byte) string {
	return base64.StdEncoding.EncodeToString(key)
}

// LoadOrCreateKeyFile returns the key stored in the file at path. When the
// file does not exist, it generates a random key and writes it (base64 and a
// newline) with mode 0600, creating the directory with mode 0700 if needed.
// An existing file that does not hold a valid key is an error: it is never
// overwritten, since the secrets sealed with the old key would be lost.
// Two processes starting at once end up with the same key.
func LoadOrCreateKeyFile(path string) ([]byte, error) {
	key, err := readKeyFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: create key directory: %w", err)
	}
	key = make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("auth: generate key: %w", err)
	}
	created, err := createExclusive(path, []byte(EncodeKey(key)+"\n"))
	if err != nil {
		return nil, fmt.Errorf("auth: write key file %s: %w", path, err)
	}
	if !created { // another process won the race: use its key
		return readKeyFile(path)
	}
	return key, nil
}

func readKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: read key file: %w", err)
	}
	key, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("auth: key file %s is malformed (it is never overwritten; fix or remove it, "+
			"knowing that stored credentials sealed with the old key cannot be opened without it): %w", path, err)
	}
	return key, nil
}

// createExclusive writes data to path only if path does not exist yet, so
// that a reader never sees a partly written file: the data goes to a
// temporary file that is then hard-linked into place. It reports whether it
// created the file. On file systems without hard links it falls back to an
// exclusive create.
func createExclusive(path string, data []byte) (bool, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".key-*") // mode 0600
	if err != nil {
		return false, err
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)
	if err := writeSync(tmp, data); err != nil {
		return false, err
	}
	err = os.Link(tmpName, path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrExist):
		return false, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := writeSync(f, data); err != nil {
		os.Remove(path)
		return false, err
	}
	return true, nil
}

func writeSync(f *os.File, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReplaceKeyFile writes key to the file at path (mode 0600), replacing the
// key there in one rename: a reader sees the old key or the new one. Used
// by key rotation once every secret is sealed with the new key.
func ReplaceKeyFile(path string, key []byte) error {
	if len(key) != KeySize {
		return fmt.Errorf("auth: key must be %d bytes", KeySize)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".key-*") // mode 0600
	if err != nil {
		return fmt.Errorf("auth: replace key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := writeSync(tmp, []byte(EncodeKey(key)+"\n")); err != nil {
		return fmt.Errorf("auth: replace key file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("auth: replace key file: %w", err)
	}
	return nil
}

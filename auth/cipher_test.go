package auth_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
)

func newKey(t *testing.T, fill byte) []byte {
	t.Helper()
	return bytes.Repeat([]byte{fill}, auth.KeySize)
}

func newCipher(t *testing.T, key []byte) *auth.Cipher {
	t.Helper()
	c, err := auth.NewCipher(key)
	if err != nil {
		t.Fatalf("NewCipher: %v", err)
	}
	return c
}

func TestCipherRoundTrip(t *testing.T) {
	c := newCipher(t, newKey(t, 7))
	tests := []struct {
		name      string
		id        string
		plaintext []byte
	}{
		{"atlassian token", "cred_0123456789abcdef", []byte("ATATT3xFfGF0-some-long-token-value=ABCD1234")},
		{"empty plaintext", "cred_1", []byte{}},
		{"empty id", "", []byte("secret")},
		{"binary", "cred_2", []byte{0, 1, 2, 255, 254}},
		{"large", "cred_3", bytes.Repeat([]byte("x"), 64<<10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sealed, err := c.Seal(tt.id, tt.plaintext)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if len(tt.plaintext) >= 8 && bytes.Contains(sealed, tt.plaintext) {
				t.Fatalf("sealed data contains the plaintext")
			}
			if sealed[0] != 1 {
				t.Errorf("version byte = %d, want 1", sealed[0])
			}
			if got, want := len(sealed), 1+12+len(tt.plaintext)+16; got != want {
				t.Errorf("len(sealed) = %d, want %d", got, want)
			}
			got, err := c.Open(tt.id, sealed)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, tt.plaintext) {
				t.Errorf("Open = %q, want %q", got, tt.plaintext)
			}
		})
	}
}

func TestCipherSealIsRandomized(t *testing.T) {
	c := newCipher(t, newKey(t, 7))
	a, err := c.Seal("cred_1", []byte("same"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Seal("cred_1", []byte("same"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) {
		t.Errorf("two seals of the same plaintext are equal; want distinct nonces")
	}
}

func TestCipherOpenFailures(t *testing.T) {
	key := newKey(t, 7)
	c := newCipher(t, key)
	const id = "cred_0123456789abcdef"
	sealed, err := c.Seal(id, []byte("ATATT3xFfGF0-canary-secret"))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 0x01
		return b
	}
	tests := []struct {
		name    string
		cipher  *auth.Cipher
		id      string
		sealed  []byte
		wantErr error // nil: any error
	}{
		{"wrong id", c, "cred_other", sealed, auth.ErrOpen},
		{"id differs by case", c, strings.ToUpper(id), sealed, auth.ErrOpen},
		{"wrong key", newCipher(t, newKey(t, 8)), id, sealed, auth.ErrOpen},
		{"tampered nonce", c, id, flip(1), auth.ErrOpen},
		{"tampered ciphertext", c, id, flip(14), auth.ErrOpen},
		{"tampered tag", c, id, flip(len(sealed) - 1), auth.ErrOpen},
		{"truncated", c, id, sealed[:len(sealed)-1], auth.ErrOpen},
		{"too short", c, id, sealed[:10], auth.ErrOpen},
		{"empty", c, id, nil, auth.ErrOpen},
		{"unknown version", c, id, append([]byte{2}, sealed[1:]...), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cipher.Open(tt.id, tt.sealed)
			if err == nil {
				t.Fatalf("Open = %q, nil; want an error", got)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Open error = %v, want %v", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "canary") {
				t.Errorf("error %q contains the plaintext", err)
			}
		})
	}
}

func TestNewCipherKeyLength(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		if _, err := auth.NewCipher(make([]byte, n)); err == nil {
			t.Errorf("NewCipher(%d bytes) = nil error, want an error", n)
		}
	}
}

func TestParseKey(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i*7 + 250) // includes bytes that encode to + / - _
	}
	tests := []struct {
		name    string
		in      string
		want    []byte // nil: want an error
		wantMsg string
	}{
		{"std padded", base64.StdEncoding.EncodeToString(key), key, ""},
		{"std raw", base64.RawStdEncoding.EncodeToString(key), key, ""},
		{"url padded", base64.URLEncoding.EncodeToString(key), key, ""},
		{"url raw", base64.RawURLEncoding.EncodeToString(key), key, ""},
		{"trailing newline", base64.StdEncoding.EncodeToString(key) + "\n", key, ""},
		{"surrounding spaces", "  " + base64.StdEncoding.EncodeToString(key) + "\r\n", key, ""},
		{"empty", "", nil, "empty"},
		{"blank", " \n", nil, "empty"},
		{"16 bytes", base64.StdEncoding.EncodeToString(key[:16]), nil, "got 16 bytes"},
		{"33 bytes", base64.StdEncoding.EncodeToString(append(key, 1)), nil, "got 33 bytes"},
		{"not base64", "this-is-not*base64!secretcanary", nil, "not valid base64"},
		{"hex of 32 bytes", strings.Repeat("ab", 32), nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := auth.ParseKey(tt.in)
			if tt.want != nil {
				if err != nil {
					t.Fatalf("ParseKey: %v", err)
				}
				if !bytes.Equal(got, tt.want) {
					t.Errorf("ParseKey = %x, want %x", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseKey = %x, nil; want an error", got)
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", err, tt.wantMsg)
			}
			if s := strings.TrimSpace(tt.in); len(s) > 3 && strings.Contains(err.Error(), s) {
				t.Errorf("error %q echoes the input", err)
			}
			if strings.Contains(err.Error(), "canary") {
				t.Errorf("error %q echoes part of the input", err)
			}
		})
	}
}

func TestLoadOrCreateKeyFile(t *testing.T) {
	t.Run("creates with 0600 in a 0700 directory and reuses", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "data", "nested", "secret.key")
		key, err := auth.LoadOrCreateKeyFile(path)
		if err != nil {
			t.Fatalf("LoadOrCreateKeyFile: %v", err)
		}
		if len(key) != auth.KeySize {
			t.Fatalf("len(key) = %d, want %d", len(key), auth.KeySize)
		}
		fileMode(t, path, 0o600)
		fileMode(t, filepath.Dir(path), 0o700)
		again, err := auth.LoadOrCreateKeyFile(path)
		if err != nil {
			t.Fatalf("second LoadOrCreateKeyFile: %v", err)
		}
		if !bytes.Equal(again, key) {
			t.Errorf("second call returned another key")
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(b), auth.EncodeKey(key)+"\n"; got != want {
			t.Errorf("file content = %q, want %q", got, want)
		}
		entries, err := os.ReadDir(filepath.Dir(path))
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 {
			t.Errorf("directory holds %d entries, want only the key file (temporary files removed)", len(entries))
		}
	})
	t.Run("two keys differ", func(t *testing.T) {
		dir := t.TempDir()
		a, err := auth.LoadOrCreateKeyFile(filepath.Join(dir, "a.key"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := auth.LoadOrCreateKeyFile(filepath.Join(dir, "b.key"))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(a, b) {
			t.Errorf("two generated keys are equal")
		}
	})

	existing := newKey(t, 9)
	tests := []struct {
		name    string
		content string
		want    []byte // nil: want an error
	}{
		{"existing padded with newline", auth.EncodeKey(existing) + "\n", existing},
		{"existing raw url without newline", base64.RawURLEncoding.EncodeToString(existing), existing},
		{"existing CRLF", auth.EncodeKey(existing) + "\r\n", existing},
		{"malformed", "not a key canary\n", nil},
		{"empty", "", nil},
		{"short key", base64.StdEncoding.EncodeToString(existing[:16]) + "\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "secret.key")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := auth.LoadOrCreateKeyFile(path)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("LoadOrCreateKeyFile = %x, nil; want an error", got)
				}
				if !strings.Contains(err.Error(), "malformed") || !strings.Contains(err.Error(), path) {
					t.Errorf("error %q should name the file and say it is malformed", err)
				}
				if strings.Contains(err.Error(), "canary") {
					t.Errorf("error %q echoes the file content", err)
				}
				b, _ := os.ReadFile(path)
				if string(b) != tt.content {
					t.Errorf("malformed key file was changed to %q", b)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadOrCreateKeyFile: %v", err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("key = %x, want %x", got, tt.want)
			}
		})
	}

	t.Run("concurrent creators agree", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "secret.key")
		const n = 8
		keys := make([][]byte, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { keys[i], errs[i] = auth.LoadOrCreateKeyFile(path) })
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("caller %d: %v", i, errs[i])
			}
			if !bytes.Equal(keys[i], keys[0]) {
				t.Errorf("caller %d got another key than caller 0", i)
			}
		}
	})
}

func fileMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("mode of %s = %o, want %o", path, got, want)
	}
}

func TestReplaceKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret.key")
	if _, err := auth.LoadOrCreateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	key := newKey(t, 7)
	if err := auth.ReplaceKeyFile(path, key); err != nil {
		t.Fatalf("ReplaceKeyFile: %v", err)
	}
	got, err := auth.LoadOrCreateKeyFile(path)
	if err != nil || !bytes.Equal(got, key) {
		t.Errorf("the key file holds %x (%v), want the new key", got, err)
	}
	fileMode(t, path, 0o600)
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 1 {
		t.Errorf("directory holds %d entries (%v), want only the key file (temporary files removed)", len(entries), err)
	}

	// Failures leave the key file as it was.
	if err := auth.ReplaceKeyFile(path, key[:16]); err == nil {
		t.Error("a 16-byte key was written")
	}
	if err := auth.ReplaceKeyFile(filepath.Join(dir, "missing", "secret.key"), key); err == nil {
		t.Error("a key was written into a directory that does not exist")
	}
	if err := auth.ReplaceKeyFile(dir, newKey(t, 8)); err == nil { // a directory cannot be renamed over
		t.Error("a key file replaced a directory")
	}
	if got, err := auth.LoadOrCreateKeyFile(path); err != nil || !bytes.Equal(got, key) {
		t.Errorf("after failed replacements the key file holds %x (%v), want the last key", got, err)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 1 {
		t.Errorf("directory holds %d entries (%v) after failures, want only the key file", len(entries), err)
	}
}

package pool

import (
	"encoding/base64"
	"net/url"
	"strings"
)

// redactWindow is the shortest fragment of a secret that is redacted: an
// upstream message quoting 12 characters of a token leaks too much of it.
const redactWindow = 12

// Redacted is what replaces a secret (or a fragment of it) in text.
const Redacted = "[redacted]"

// RedactCredential removes from s every fragment of redactWindow or more
// characters of c's token, in the forms an upstream message may quote it:
// as is, URL-encoded (query or path), and inside the Basic value of the
// email and token. Whole secrets shorter than the window (test tokens) are
// removed when they occur in full.
func RedactCredential(s string, c Credential) string {
	if s == "" || c.Token == "" {
		return s
	}
	forms := []string{c.Token, url.QueryEscape(c.Token), url.PathEscape(c.Token),
		base64.StdEncoding.EncodeToString([]byte(c.Email + ":" + c.Token))}
	return redactFragments(s, forms)
}

// redactFragments replaces each run of s covered by an occurrence of any
// redactWindow-long fragment of one of secrets (or of a whole secret
// shorter than that) with Redacted.
func redactFragments(s string, secrets []string) string {
	var covered []bool
	mark := func(frag string) {
		for i := 0; ; {
			j := strings.Index(s[i:], frag)
			if j < 0 {
				return
			}
			if covered == nil {
				covered = make([]bool, len(s))
			}
			for k := i + j; k < i+j+len(frag); k++ {
				covered[k] = true
			}
			i += j + 1
		}
	}
	for _, sec := range secrets {
		if len(sec) < redactWindow {
			if len(sec) >= 3 {
				mark(sec)
			}
			continue
		}
		for i := 0; i+redactWindow <= len(sec); i++ {
			mark(sec[i : i+redactWindow])
		}
	}
	if covered == nil {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if !covered[i] {
			b.WriteByte(s[i])
			i++
			continue
		}
		for i < len(s) && covered[i] {
			i++
		}
		b.WriteString(Redacted)
	}
	return b.String()
}

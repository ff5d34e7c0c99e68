package pool

import (
	"log/slog"
	"time"
)

// Credential is one Atlassian account as the pool hands it to an upstream
// call. Token is the plaintext API token: it never appears in a log line, an
// error or a Status (String, GoString and LogValue show the ID only).
type Credential struct {
	ID, Email, Token, CloudID, Label string
}

// String identifies the credential without its secret.
func (c Credential) String() string { return "credential " + c.ID }

// GoString keeps %#v from printing the token.
func (c Credential) GoString() string { return "pool.Credential{ID:" + c.ID + "}" }

// LogValue keeps slog from printing the token.
func (c Credential) LogValue() slog.Value { return slog.StringValue(c.ID) }

// Spec is the desired configuration of one credential, as read from the store.
type Spec struct {
	Credential
	Enabled bool
	// MaxConcurrency is the in-flight limit; 0 (or less) means Config.DefaultMaxConcurrency.
	MaxConcurrency int
}

// Usage is the token usage of one request, reported with its outcome.
type Usage struct {
	InputTokens, OutputTokens int64
}

// Result is the full report of one attempt, for Lease.Finish. Lease.Done
// reports an Outcome and Usage alone.
type Result struct {
	Outcome Outcome
	Usage   Usage
	// RetryAfter is how long the upstream asked to wait (429; also a 5xx or
	// 529, whose cooldown it lengthens up to 5 minutes), zero when unknown.
	RetryAfter time.Duration
	// Err is the attempt's error, if any. Only a redacted, shortened form of its
	// text is kept (as the credential's last error).
	Err error
}

// maxErrorText bounds the last-error text kept per credential.
const maxErrorText = 240

// safeErrorText turns err into a short string with the credential's secrets
// removed, as a defence in depth: upstream errors must not carry them anyway.
func safeErrorText(err error, c Credential) string {
	if err == nil {
		return ""
	}
	s := RedactCredential(err.Error(), c)
	if len(s) > maxErrorText {
		cut := maxErrorText
		for cut > 0 && !utf8Start(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

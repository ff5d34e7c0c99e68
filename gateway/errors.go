package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// Codes set in Error.Code besides the upstream's own status strings.
const (
	// CodeMinuteLimit and CodeDailyLimit are the 429 body statuses.
	CodeMinuteLimit = "MINUTE_LIMIT_EXCEEDED"
	CodeDailyLimit  = "DAILY_LIMIT_EXCEEDED"
	// CodeUserBlocked is credits/check's status for a blocked user.
	CodeUserBlocked = "USER_BLOCKED"
	// CodeContextLength marks a 400 that reports a context-window overflow
	// (OpenAI's own code for it, so api can pass it through).
	CodeContextLength = "context_length_exceeded"
)

const (
	// maxErrorBody bounds how much of an error response is read.
	maxErrorBody = 64 << 10
	// maxMessageLen bounds Error.Message taken from an upstream body.
	maxMessageLen = 500
	// defaultRetry is the cooldown of a minute-limit 429 that names no
	// retry time. A daily-limit 429 without one leaves Retry at 0, so that
	// the pool's QuotaCooldown applies (a daily quota is not back in 10 s).
	defaultRetry = 10 * time.Second
	// maxTextBody bounds a non-JSON client-error body that is used as the
	// message (longer ones are pages, not messages).
	maxTextBody = 2 << 10
)

// Error is a classified upstream failure. Message is safe to show a client:
// it never contains the credential's email, token or Authorization header.
type Error struct {
	Status  int           // HTTP status; 0 when no response arrived
	Kind    pool.Outcome  // the classification the pool acts on (read it through Outcome())
	Retry   time.Duration // how long to leave the credential alone; 0 = not given
	Code    string        // upstream status string (e.g. MINUTE_LIMIT_EXCEEDED) or a Code* constant
	Message string        // safe for the client
	Err     error         // underlying cause (transport error, ctx error), may be nil
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("gateway: ")
	b.WriteString(e.Kind.String())
	if e.Status != 0 {
		fmt.Fprintf(&b, " (status %d", e.Status)
		if e.Code != "" {
			b.WriteString(", ")
			b.WriteString(e.Code)
		}
		b.WriteString(")")
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Outcome returns Kind (the dispatcher's classification interface).
func (e *Error) Outcome() pool.Outcome { return e.Kind }

// RetryAfter returns Retry (the dispatcher's classification interface).
func (e *Error) RetryAfter() time.Duration { return e.Retry }

// errorBody is every field the gateway is known or guessed to put in an
// error body. All are optional.
type errorBody struct {
	Status       string          `json:"status"`
	Code         json.RawMessage `json:"code"`
	Message      string          `json:"message"`
	ErrorMessage string          `json:"errorMessage"`
	Detail       string          `json:"detail"`
	Error        json.RawMessage `json:"error"`
	Errors       []struct {
		Message string `json:"message"`
		Title   string `json:"title"`
	} `json:"errors"`
	RetryAfterSeconds json.RawMessage `json:"retryAfterSeconds"`
}

// message returns the most specific human-readable message in the body.
func (b *errorBody) message() string {
	if b.Message != "" {
		return b.Message
	}
	if len(b.Error) > 0 {
		var s string
		if json.Unmarshal(b.Error, &s) == nil && s != "" {
			return s
		}
		var o struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(b.Error, &o) == nil && o.Message != "" {
			return o.Message
		}
	}
	if b.ErrorMessage != "" {
		return b.ErrorMessage
	}
	if b.Detail != "" {
		return b.Detail
	}
	for _, e := range b.Errors {
		if e.Message != "" {
			return e.Message
		}
		if e.Title != "" {
			return e.Title
		}
	}
	return ""
}

// classify turns a non-2xx response into an *Error. body is at most
// maxErrorBody bytes of the response body.
func classify(resp *http.Response, body []byte, cred pool.Credential, now time.Time) *Error {
	e := &Error{Status: resp.StatusCode}
	var eb errorBody
	parsed := json.Unmarshal(body, &eb) == nil
	if parsed {
		e.Code = safeCode(eb.Status)
		e.Message = sanitize(eb.message(), cred)
	}
	switch s := resp.StatusCode; {
	case s == http.StatusTooManyRequests:
		e.Kind = pool.OutcomeRateLimited
		if e.Code == CodeDailyLimit {
			e.Kind = pool.OutcomeQuotaExhausted
		}
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), now); ok {
			e.Retry = d
		} else if d, ok := parseSeconds(eb.RetryAfterSeconds); ok {
			e.Retry = d
			if e.Code == CodeMinuteLimit {
				e.Retry += time.Second
			}
		} else if e.Kind == pool.OutcomeRateLimited {
			e.Retry = defaultRetry
		}
		if e.Message == "" {
			e.Message = "the upstream rate limit was reached"
		}
	case s == http.StatusUnauthorized:
		e.Kind = pool.OutcomeUnauthorized
		if e.Message == "" {
			e.Message = "the upstream rejected the credential"
		}
	case s == http.StatusForbidden:
		e.Kind = pool.OutcomeForbidden
		if e.Message == "" {
			e.Message = "the upstream refused the request"
		}
	case s >= 500 || s < 400:
		e.Kind = pool.OutcomeServerError
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), now); ok {
			e.Retry = d
		}
		if e.Message == "" || s < 400 {
			e.Message = fmt.Sprintf("the upstream failed (status %d)", s)
		}
	default: // 400, 404, 413, 422 and every other 4xx
		e.Kind = pool.OutcomeClientError
		if !parsed {
			e.Message = textMessage(body, cred)
		}
		if isContextOverflow(body) {
			e.Code = CodeContextLength
			if e.Message == "" {
				e.Message = "the request exceeds the model's context window"
			}
		}
		if e.Message == "" {
			e.Message = fmt.Sprintf("the upstream rejected the request (status %d)", s)
		}
	}
	return e
}

// textMessage is the message of a short non-JSON body (plain text, or a
// JSON string): the text, sanitized. It is "" for an empty or long body,
// for markup (an HTML error page) and for binary data.
func textMessage(body []byte, cred pool.Credential) string {
	b := bytes.TrimSpace(body)
	if len(b) == 0 || len(b) > maxTextBody || b[0] == '<' || !utf8.Valid(b) {
		return ""
	}
	if b[0] == '"' {
		var s string
		if json.Unmarshal(b, &s) == nil {
			return sanitize(s, cred)
		}
	}
	for _, c := range b {
		if c == 0 {
			return "" // binary
		}
	}
	return sanitize(string(b), cred)
}

// isContextOverflow recognises the gateway's context-window 400s.
func isContextOverflow(body []byte) bool {
	l := bytes.ToLower(body)
	return bytes.Contains(l, []byte("exceed context limit")) ||
		bytes.Contains(l, []byte("'statuscode': 413")) ||
		bytes.Contains(l, []byte(`"statuscode": 413`)) ||
		bytes.Contains(l, []byte("context length")) ||
		bytes.Contains(l, []byte("context window")) ||
		bytes.Contains(l, []byte("prompt is too long"))
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		return secondsDuration(float64(n)), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// parseSeconds reads retryAfterSeconds: a number or a numeric string.
func parseSeconds(raw json.RawMessage) (time.Duration, bool) {
	if len(raw) == 0 {
		return 0, false
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, false
		}
		if f, err = strconv.ParseFloat(strings.TrimSpace(s), 64); err != nil {
			return 0, false
		}
	}
	if f < 0 || f != f {
		return 0, false
	}
	return secondsDuration(f), true
}

// secondsDuration converts seconds to a Duration, saturating at a year.
func secondsDuration(s float64) time.Duration {
	const maxSeconds = 366 * 24 * 3600
	if s > maxSeconds {
		s = maxSeconds
	}
	return time.Duration(s * float64(time.Second))
}

// safeCode keeps an upstream status string only when it looks like a code.
func safeCode(s string) string {
	if len(s) == 0 || len(s) > 64 {
		return ""
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r == '.' || unicode.IsLetter(r) || unicode.IsDigit(r)) || r > unicode.MaxASCII {
			return ""
		}
	}
	return s
}

// sanitize makes an upstream message safe for a client: credential secrets
// are removed, control characters replaced, and the length bounded.
func sanitize(msg string, cred pool.Credential) string {
	if msg == "" {
		return ""
	}
	msg = redact(msg, cred)
	if utf8.RuneCountInString(msg) > maxMessageLen {
		r := []rune(msg)
		msg = string(r[:maxMessageLen]) + "…"
	}
	return msg
}

// redact removes from msg the credential's token (every form and fragment
// pool.RedactCredential knows), its email (in any letter case) and any
// Basic or Bearer value, replaces control characters and invalid UTF-8,
// and trims spaces. It does not bound the length: see sanitize.
func redact(msg string, cred pool.Credential) string {
	if msg == "" {
		return ""
	}
	if !utf8.ValidString(msg) {
		msg = strings.ToValidUTF8(msg, "\uFFFD")
	}
	msg = pool.RedactCredential(msg, cred)
	if len(cred.Email) >= 3 {
		msg = replaceFold(msg, cred.Email, pool.Redacted)
	}
	msg = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, msg)
	return basicAuthRE.ReplaceAllString(strings.TrimSpace(msg), "$1 [redacted]")
}

// replaceFold replaces every occurrence of old in s, matched without
// regard to letter case, with repl: left to right, without overlaps, rune
// by rune under Unicode simple case folding (as strings.EqualFold and a
// regexp's (?i) match, so "K" also matches the Kelvin sign and a match
// may differ from old in length). An empty old changes nothing; an old
// that is not valid UTF-8 is matched byte for byte.
func replaceFold(s, old, repl string) string {
	if old == "" {
		return s
	}
	if !utf8.ValidString(old) {
		return strings.ReplaceAll(s, old, repl)
	}
	var b strings.Builder
	done := 0 // s[:done] is written to b (or needs no change)
	first := asciiLower(old[0])
	for i := 0; i < len(s); {
		// Fast path: two ASCII bytes fold alike only as ASCII letters.
		if c := s[i]; c < utf8.RuneSelf && first < utf8.RuneSelf && asciiLower(c) != first {
			i++
			continue
		}
		if n := foldPrefix(s[i:], old); n > 0 {
			if done == 0 {
				b.Grow(len(s))
			}
			b.WriteString(s[done:i])
			b.WriteString(repl)
			i += n
			done = i
			continue
		}
		if s[i] < utf8.RuneSelf {
			i++
		} else {
			_, w := utf8.DecodeRuneInString(s[i:])
			i += w
		}
	}
	if done == 0 {
		return s
	}
	b.WriteString(s[done:])
	return b.String()
}

func asciiLower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// foldPrefix returns the length of the prefix of s that matches old rune
// by rune under simple case folding, or 0 when none does. old is valid
// UTF-8 and not empty.
func foldPrefix(s, old string) int {
	i := 0
	for _, r := range old {
		if i >= len(s) {
			return 0
		}
		c, w := rune(s[i]), 1
		if c >= utf8.RuneSelf {
			c, w = utf8.DecodeRuneInString(s[i:])
		}
		if c != r && !equalFoldRune(c, r) {
			return 0
		}
		i += w
	}
	return i
}

// equalFoldRune reports whether a and b are in the same simple case
// folding orbit (unicode.SimpleFold), as strings.EqualFold compares runes.
func equalFoldRune(a, b rune) bool {
	if a < utf8.RuneSelf && b < utf8.RuneSelf {
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		return a == b
	}
	for f := unicode.SimpleFold(a); f != a; f = unicode.SimpleFold(f) {
		if f == b {
			return true
		}
	}
	return false
}

// basicAuthRE matches an Authorization header value in a message.
var basicAuthRE = regexp.MustCompile(`(?i)\b(basic|bearer)\s+[A-Za-z0-9+/=._~-]{6,}`)

// transportError classifies a failure to get a response at all.
func transportError(ctx context.Context, err error) *Error {
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return &Error{Kind: pool.OutcomeCanceled, Message: "the request was canceled", Err: context.Canceled}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &Error{Kind: pool.OutcomeTimeout, Message: "the upstream did not answer in time", Err: context.DeadlineExceeded}
	case errors.Is(err, context.Canceled):
		return &Error{Kind: pool.OutcomeCanceled, Message: "the request was canceled", Err: err}
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, http.ErrHandlerTimeout):
		return &Error{Kind: pool.OutcomeTimeout, Message: "the upstream did not answer in time", Err: err}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &Error{Kind: pool.OutcomeTimeout, Message: "the upstream did not answer in time", Err: err}
	}
	return &Error{Kind: pool.OutcomeTransport, Message: "the upstream could not be reached", Err: err}
}

// streamError classifies a failure while reading a 200 response body.
func streamError(ctx context.Context, err error, msg string) *Error {
	if ctx.Err() != nil {
		return transportError(ctx, err)
	}
	return &Error{Status: http.StatusOK, Kind: pool.OutcomeStreamBroken, Message: msg, Err: err}
}

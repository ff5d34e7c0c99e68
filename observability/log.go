package observability

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// LogConfig configures NewLogger. The zero value means level info, JSON.
type LogConfig struct {
	Level  string // debug | info | warn | error; "" = info; case-insensitive
	Format string // json | text; "" = json
}

// Validate reports an invalid level or format, naming the value.
func (c LogConfig) Validate() error {
	if _, err := c.level(); err != nil {
		return err
	}
	switch strings.ToLower(c.Format) {
	case "", "json", "text":
		return nil
	}
	return fmt.Errorf("observability: invalid log format %q (want json or text)", c.Format)
}

func (c LogConfig) level() (slog.Level, error) {
	switch strings.ToLower(c.Level) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("observability: invalid log level %q (want debug, info, warn or error)", c.Level)
}

// Redacted replaces every redacted value.
const Redacted = "[REDACTED]"

// NewLogger returns a logger writing to w in the configured format, with
// redaction of secrets: an attribute whose key (or one of whose enclosing
// groups) names a secret — token, password, secret, authorization, api key,
// cookie, csrf — has its value replaced by "[REDACTED]", and in every other
// string value (the message and errors included) client API tokens
// ("sk-ap-…"), Atlassian API tokens and Basic/Bearer credentials are
// replaced. Keys that name a harmless property of a secret (token_id,
// token_prefix, input_tokens) are kept.
func NewLogger(w io.Writer, cfg LogConfig) (*slog.Logger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lvl, _ := cfg.level()
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: redactAttr}
	if strings.ToLower(cfg.Format) == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}

// redactAttr is the slog ReplaceAttr of NewLogger. slog calls it for every
// non-group attribute, with the names of its enclosing groups.
func redactAttr(groups []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindGroup {
		return a // slog recurses into groups itself
	}
	for _, g := range groups {
		if secretKey(g) {
			return slog.String(a.Key, Redacted)
		}
	}
	if secretKey(a.Key) {
		return slog.String(a.Key, Redacted)
	}
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); hasSecretMarker(s) {
			return slog.String(a.Key, RedactString(s))
		}
	case slog.KindAny:
		return slog.Attr{Key: a.Key, Value: redactAny(a.Value)}
	}
	return a
}

// redactAny scrubs the string form of an arbitrary value: an error (which
// the handlers print with Error), a fmt.Stringer, or anything else through
// its JSON form. The value is kept as is when nothing needs redacting.
func redactAny(v slog.Value) slog.Value {
	switch x := v.Any().(type) {
	case nil:
		return v
	case http.Header:
		return mapGroup(x)
	case map[string][]string:
		return mapGroup(x)
	case map[string]string:
		return mapGroup(x)
	case map[string]any:
		return mapGroup(x)
	case error:
		// Handlers print an error as its Error text: same output, scrubbed.
		return slog.StringValue(RedactString(x.Error()))
	case fmt.Stringer:
		if s := x.String(); hasSecretMarker(s) {
			return slog.StringValue(RedactString(s))
		}
		return v
	case []byte:
		if hasSecretMarker(string(x)) {
			return slog.StringValue(RedactString(string(x)))
		}
		return v
	default:
		b, err := json.Marshal(x)
		if err != nil {
			s := fmt.Sprintf("%+v", x)
			if hasSecretMarker(s) {
				return slog.StringValue(RedactString(s))
			}
			return v
		}
		if hasSecretMarker(string(b)) {
			return slog.StringValue(RedactString(string(b)))
		}
		return v
	}
}

// mapGroup turns a string-keyed map (HTTP headers, say) into a group,
// sorted by key, so that slog passes each entry through redactAttr with
// its own key: a "Cookie" or "Authorization" header is redacted by name.
func mapGroup[M ~map[string]V, V any](m M) slog.Value {
	attrs := make([]slog.Attr, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		attrs = append(attrs, slog.Any(k, m[k]))
	}
	return slog.GroupValue(attrs...)
}

// secretWords are the key words whose presence makes a key secret.
var secretWords = map[string]bool{
	"token": true, "password": true, "passwd": true, "pwd": true, "passphrase": true,
	"secret": true, "authorization": true, "apikey": true, "cookie": true, "csrf": true,
	"xsrf": true, "bearer": true, "sealed": true,
	"secrets": true, "passwords": true, "cookies": true, "apikeys": true,
}

// harmlessLast are last words that turn a secret-sounding key into the name
// of a harmless property of the secret: token_id, token_prefix, password_set.
var harmlessLast = map[string]bool{
	"id": true, "ids": true, "prefix": true, "name": true, "count": true, "len": true, "length": true,
	"type": true, "kind": true, "set": true, "expires": true, "expiry": true, "at": true, "age": true,
	"changed": true, "hint": true, "source": true,
}

// secretKey reports whether an attribute key names a secret. The key is
// split into lower-case words at any non-alphanumeric character and at
// camel-case boundaries ("apiKey" → api, key). It is secret when a word is
// one of secretWords (or "api" is followed by "key"), unless the last word
// is one of harmlessLast. "tokens" (a count, as in input_tokens) is not
// "token", and so is not secret.
func secretKey(key string) bool {
	if key == "" || key == slog.MessageKey || key == slog.TimeKey || key == slog.LevelKey {
		return false
	}
	var words [8]string
	ws := splitWords(key, words[:0])
	if len(ws) == 0 {
		return false
	}
	found := false
	for i, w := range ws {
		if secretWords[w] || (w == "api" && i+1 < len(ws) && ws[i+1] == "key") {
			found = true
			break
		}
	}
	return found && !(len(ws) > 1 && harmlessLast[ws[len(ws)-1]])
}

func splitWords(s string, dst []string) []string {
	start := -1
	flush := func(end int) {
		if start >= 0 {
			dst = append(dst, strings.ToLower(s[start:end]))
			start = -1
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		isUpper := c >= 'A' && c <= 'Z'
		isAlnum := isUpper || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
		switch {
		case !isAlnum:
			flush(i)
		case start < 0:
			start = i
		case isUpper && i > 0 && s[i-1] >= 'a' && s[i-1] <= 'z':
			flush(i)
			start = i
		}
	}
	flush(len(s))
	return dst
}

// secretValue matches credentials inside free text: client API tokens
// (the 12-character display prefix "sk-ap-abcdef…" is kept), Atlassian API
// tokens, and Basic or Bearer authorization values.
var secretValue = regexp.MustCompile(`sk-ap-[A-Za-z0-9_\-]{7,}` +
	`|ATAT[A-Za-z0-9_\-=]{16,}` +
	`|(?i:\b(?:basic|bearer)\s+)[A-Za-z0-9+/_\-.~=]{8,}`)

// RedactString replaces every credential found in s (see NewLogger) by
// "[REDACTED]". Use it for text that leaves the process by another way than
// the logger, such as an upstream error message shown to a client.
func RedactString(s string) string {
	if !hasSecretMarker(s) {
		return s
	}
	return secretValue.ReplaceAllStringFunc(s, func(m string) string {
		// Keep the scheme word of an authorization value for the reader.
		if i := strings.IndexAny(m, " \t\r\n"); i > 0 && !strings.HasPrefix(m, "sk-ap-") && !strings.HasPrefix(m, "ATAT") {
			return m[:i+1] + Redacted
		}
		return Redacted
	})
}

// hasSecretMarker is a cheap test for what secretValue may match, so that
// the regular expression runs only on the rare strings that need it.
func hasSecretMarker(s string) bool {
	return strings.Contains(s, "sk-ap-") || strings.Contains(s, "ATAT") ||
		containsFold(s, "basic") || containsFold(s, "bearer")
}

// containsFold reports whether s contains the lower-case ASCII word sub,
// ignoring ASCII case, without allocating.
func containsFold(s, sub string) bool {
	n := len(sub)
	for i := 0; i+n <= len(s); i++ {
		if s[i]|0x20 != sub[0] {
			continue
		}
		j := 1
		for ; j < n; j++ {
			if s[i+j]|0x20 != sub[j] {
				break
			}
		}
		if j == n {
			return true
		}
	}
	return false
}

package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// This file is the protocol log: the upstream's protocol is only partly
// known (see the protocol page), so the client logs, at info level and once
// per distinct variant, what it met that the page leaves open: unknown
// finish reasons and content-part types, events without a payload, where
// usage came, and the bodies of 401, 403 and 5xx answers (whose shape was
// never captured). Secrets never reach it: error bodies are redacted with
// the credential's token, email and any Authorization value removed, and
// the other values logged are bounded protocol tokens.

const (
	// maxVariants bounds the distinct variants remembered (and so logged);
	// after that nothing new is logged, which the log says once.
	maxVariants = 64
	// maxLoggedBody bounds the part of an error body that is logged.
	maxLoggedBody = 1 << 10
	// maxVariantValue bounds an upstream value (a finish reason, a part
	// type, a key) in a variant and in the log.
	maxVariantValue = 64
	// maxVariantKeys bounds the keys listed for an event or error body.
	maxVariantKeys = 12
)

// Modes of a response, as the protocol log names them.
const (
	modeStream = "stream" // an SSE stream
	modeJSON   = "json"   // one JSON body
)

// protocolLog logs protocol variants once each. A nil *protocolLog logs
// nothing. Safe for concurrent use.
type protocolLog struct {
	log *slog.Logger

	mu   sync.Mutex
	seen map[variant]struct{}
	full bool // maxVariants reached and said so
}

// variant is one protocol variant, the key the log remembers it by: a
// comparable struct, so that a variant already seen (the common case, met
// on every event) is looked up without building a string.
type variant struct {
	kind  string // "finish", "part", "nopayload", "error" or "usage"
	value string // the finish reason, part type, event keys, error body shape; usage: where it is
	mode  string // usage: modeStream or modeJSON
	n     int    // error: the status; usage: the count fields present (usageFieldMask)
	// usage: whether the event had a payload and a finish reason
	payload, finish bool
}

// newProtocolLog returns a log writing to l, or nil when l is nil.
func newProtocolLog(l *slog.Logger) *protocolLog {
	if l == nil {
		return nil
	}
	return &protocolLog{log: l, seen: make(map[variant]struct{})}
}

// enabled reports whether the log would write an info record.
func (p *protocolLog) enabled(ctx context.Context) bool {
	return p != nil && p.log.Enabled(ctx, slog.LevelInfo)
}

// first reports whether v is new and remembers it. Once maxVariants
// are remembered it reports false and, the first time, logs that.
func (p *protocolLog) first(ctx context.Context, v variant) bool {
	p.mu.Lock()
	if _, ok := p.seen[v]; ok {
		p.mu.Unlock()
		return false
	}
	if len(p.seen) >= maxVariants {
		announce := !p.full
		p.full = true
		p.mu.Unlock()
		if announce {
			p.log.LogAttrs(ctx, slog.LevelInfo, "gateway: protocol variants: limit reached, new variants are no longer logged",
				slog.Int("limit", maxVariants))
		}
		return false
	}
	p.seen[v] = struct{}{}
	p.mu.Unlock()
	return true
}

// saturated reports that no new variant will be logged: the limit was
// reached and announced.
func (p *protocolLog) saturated() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.full
}

// response notes the variants of one decoded response or event: where its
// usage is, unknown finish reasons and non-text content parts.
func (p *protocolLog) response(ctx context.Context, r *unifiedResponse, mode string) {
	if !p.enabled(ctx) {
		return
	}
	hasFinish := false
	if r.ResponsePayload != nil {
		for _, ch := range r.ResponsePayload.Choices {
			if ch.FinishReason != nil && *ch.FinishReason != "" {
				hasFinish = true
				if _, known := mapFinishReason(*ch.FinishReason); !known {
					v := boundValue(*ch.FinishReason)
					if p.first(ctx, variant{kind: "finish", value: v}) {
						p.log.LogAttrs(ctx, slog.LevelInfo, "gateway: unknown finish_reason",
							slog.String("finish_reason", v), slog.String("mapped_to", "stop"), slog.String("mode", mode))
					}
				}
			}
			if m := ch.body(); m != nil && m.Content.other != "" {
				v := boundValue(m.Content.other)
				if p.first(ctx, variant{kind: "part", value: v}) {
					p.log.LogAttrs(ctx, slog.LevelInfo, "gateway: unknown content part type",
						slog.String("type", v), slog.String("mode", mode))
				}
			}
		}
	}
	if u, where := r.usageSource(); u != nil {
		mask := u.fieldMask()
		withPayload := !r.noPayload
		if p.first(ctx, variant{kind: "usage", value: where, mode: mode, n: int(mask), payload: withPayload, finish: hasFinish}) {
			fields := usageFieldNames(mask)
			p.log.LogAttrs(ctx, slog.LevelInfo, "gateway: upstream usage found",
				slog.String("mode", mode), slog.String("location", where), slog.String("fields", fields),
				slog.Bool("event_has_payload", withPayload), slog.Bool("event_has_finish_reason", hasFinish))
		}
	}
}

// noPayload notes an event without response_payload: its top-level keys.
func (p *protocolLog) noPayload(ctx context.Context, data []byte) {
	if !p.enabled(ctx) {
		return
	}
	keys := jsonKeys(data)
	if p.first(ctx, variant{kind: "nopayload", value: keys}) {
		p.log.LogAttrs(ctx, slog.LevelInfo, "gateway: upstream event without payload",
			slog.String("keys", keys), slog.String("mode", modeStream))
	}
}

// errorAnswer notes a 401, 403 or 5xx answer: its status and the first
// maxLoggedBody bytes of its body, secrets removed. The variant is the
// status and the body's shape (its JSON keys, or html, text, empty). The
// cheap checks come first: the status, whether the log is on and whether
// it still takes new variants; only then is the body's shape read (one
// scan, no decoding of values).
func (p *protocolLog) errorAnswer(ctx context.Context, status int, contentType string, body []byte, cred pool.Credential) {
	if status != 401 && status != 403 && status < 500 {
		return
	}
	if !p.enabled(ctx) || p.saturated() {
		return
	}
	if !p.first(ctx, variant{kind: "error", value: bodyShape(body), n: status}) {
		return
	}
	p.log.LogAttrs(ctx, slog.LevelInfo, "gateway: upstream error answer",
		slog.Int("status", status), slog.String("content_type", boundValue(contentType)),
		slog.String("credential", cred.ID), slog.String("body", redactedPrefix(body, cred, maxLoggedBody)))
}

// redactedPrefix is the first limit bytes (cut at a rune boundary) of body
// with the credential's secrets and any Authorization value removed and
// control characters replaced. The whole body is redacted before it is
// cut, so that no fragment of a secret survives at the cut.
func redactedPrefix(body []byte, cred pool.Credential, limit int) string {
	return truncate(redact(string(body), cred), limit)
}

// truncate cuts s to at most limit bytes, at a rune boundary, marking a
// cut with "…".
func truncate(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// bodyShape names the shape of an error body for its variant.
func bodyShape(body []byte) string {
	b := bytes.TrimSpace(body)
	switch {
	case len(b) == 0:
		return "empty"
	case b[0] == '{':
		if !json.Valid(b) {
			return "text"
		}
		return "json{" + objectKeys(b) + "}"
	case b[0] == '<':
		return "html"
	}
	return "text"
}

// jsonKeys lists the sorted top-level keys of a JSON object (at most
// maxVariantKeys, each bounded); "" for anything else.
func jsonKeys(data []byte) string {
	b := bytes.TrimSpace(data)
	if len(b) == 0 || b[0] != '{' || !json.Valid(b) {
		return ""
	}
	return objectKeys(b)
}

// objectKeys is jsonKeys of b, a valid JSON object without surrounding
// space. It walks the top level once, decoding only the keys (as
// encoding/json would: a repeated key counts once), never the values.
func objectKeys(b []byte) string {
	var keys []string
	i := skipSpace(b, 1) // b[0] == '{'
	for i < len(b) && b[i] == '"' {
		end := skipString(b, i)
		k, _ := unquote(b[i:end])
		keys = append(keys, k)
		i = skipSpace(b, end) // at ':'
		i = skipValue(b, skipSpace(b, i+1))
		i = skipSpace(b, i) // at ',' or '}'
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	for i, k := range keys {
		keys[i] = boundValue(k)
	}
	slices.Sort(keys)
	if len(keys) > maxVariantKeys {
		keys = append(keys[:maxVariantKeys], "…")
	}
	return strings.Join(keys, ",")
}

// boundValue makes an upstream value fit for a variant and a log line:
// valid UTF-8, no control characters, at most maxVariantValue bytes.
func boundValue(v string) string {
	v = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(v, "?"))
	return truncate(v, maxVariantValue)
}

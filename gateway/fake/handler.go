package fake

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Routes of the protocol page that the fake serves.
const (
	pathChat    = "/rovodev/v2/proxy/ai/v2/beta/chat"
	pathCredits = "/rovodev/v3/credits/check"
	pathSites   = "/rovodev/v3/sites"
)

// allowedPayload is every request_payload key the fake accepts; the real
// gateway may refuse unknown fields, so the fake does.
var allowedPayload = map[string]bool{
	"messages": true, "temperature": true, "max_tokens": true, "top_p": true, "stop": true,
	"tools": true, "tool_choice": true, "stream": true, "user": true,
}

// ServeHTTP implements the unified chat route, credits/check and sites.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case pathChat:
		if r.Method != http.MethodPost {
			writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"message": "method not allowed"})
			return
		}
		g.chat(w, r)
	case pathCredits, pathSites:
		if r.Method != http.MethodGet {
			writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"message": "method not allowed"})
			return
		}
		g.serveAccount(w, r)
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{"message": "no route " + r.URL.Path})
	}
}

// record appends a request and returns its sequence number.
func (g *Gateway) record(r *http.Request, body []byte, a *account) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	req := Request{
		Time:   g.opts.Now(),
		Method: r.Method,
		Path:   r.URL.Path,
		Header: r.Header.Clone(),
		Body:   body,
	}
	if a != nil {
		req.CredentialID, req.Email = a.cred.ID, a.cred.Email
	}
	g.requests = append(g.requests, req)
	seq := g.dropped + len(g.requests) - 1
	if k := g.opts.KeepRequests; k > 0 && len(g.requests) >= 2*k {
		n := len(g.requests) - k
		g.requests = append(g.requests[:0:0], g.requests[n:]...)
		g.dropped += n
	}
	return seq
}

// update changes a recorded request, if still kept, under the lock.
func (g *Gateway) update(seq int, f func(*Request)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if i := seq - g.dropped; i >= 0 && i < len(g.requests) {
		f(&g.requests[i])
	}
}

// authenticate checks Basic auth and X-Atlassian-EncodedToken against the
// registered credentials. g.mu must not be held.
func (g *Gateway) authenticate(r *http.Request) *account {
	enc, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Basic ")
	if !ok || enc == "" || r.Header.Get("X-Atlassian-EncodedToken") != enc {
		return nil
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil
	}
	email, token, ok := strings.Cut(string(raw), ":")
	if !ok {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	a, found := g.accounts[email]
	if !found || subtle.ConstantTimeCompare([]byte(a.cred.Token), []byte(token)) != 1 {
		return nil
	}
	return a
}

// sleep waits d, or until the request or the gateway ends; false if cut short.
func (g *Gateway) sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
	case <-g.closed:
	}
	return false
}

// chat serves the unified chat route.
func (g *Gateway) chat(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, g.opts.MaxBody+1))
	if err != nil {
		return
	}
	a := g.authenticate(r)
	idx := g.record(r, body, a)
	status := 0
	defer func() { g.update(idx, func(q *Request) { q.Status = status }) }()
	if a == nil {
		status = http.StatusUnauthorized
		writeJSON(w, status, map[string]any{"code": 401, "message": "Unauthorized"})
		return
	}

	g.mu.Lock()
	b := a.next()
	a.stats.Requests++
	a.stats.InFlight++
	a.stats.MaxInFlight = max(a.stats.MaxInFlight, a.stats.InFlight)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		a.stats.InFlight--
		g.mu.Unlock()
	}()
	g.update(idx, func(q *Request) { q.Fault = b.Fault })

	if !g.sleep(r, g.opts.Latency) {
		return
	}
	if int64(len(body)) > g.opts.MaxBody {
		status = http.StatusRequestEntityTooLarge
		writeJSON(w, status, map[string]any{"message": "request body too large"})
		return
	}
	model, stream, msg := g.validate(body)
	g.update(idx, func(q *Request) { q.Model, q.Stream = model, stream })
	if msg != "" {
		status = http.StatusBadRequest
		writeJSON(w, status, map[string]any{"code": 400, "message": msg})
		return
	}
	status = g.respond(w, r, a, b, model, stream, len(body))
}

// validate checks a unified-chat body the way the protocol page describes
// it. It returns the model and stream flag, and a message when invalid.
func (g *Gateway) validate(body []byte) (model string, stream bool, msg string) {
	var env map[string]json.RawMessage
	if err := json.Unmarshal(body, &env); err != nil {
		return "", false, "request body is not a JSON object: " + err.Error()
	}
	for k := range env {
		if k != "request_payload" && k != "platform_attributes" {
			return "", false, fmt.Sprintf("unknown top-level field %q", k)
		}
	}
	var attrs map[string]json.RawMessage
	if err := json.Unmarshal(env["platform_attributes"], &attrs); err != nil || attrs == nil {
		return "", false, "platform_attributes must be an object"
	}
	if err := json.Unmarshal(attrs["model"], &model); err != nil || model == "" {
		return "", false, "platform_attributes.model is required"
	}
	var payload map[string]json.RawMessage
	if err := json.Unmarshal(env["request_payload"], &payload); err != nil || payload == nil {
		return model, false, "request_payload must be an object"
	}
	if _, ok := payload["model"]; ok {
		return model, false, "request_payload must not contain model"
	}
	for k := range payload {
		if !allowedPayload[k] {
			return model, false, fmt.Sprintf("unknown field request_payload.%s", k)
		}
	}
	if raw, ok := payload["stream"]; ok {
		if err := json.Unmarshal(raw, &stream); err != nil {
			return model, false, "request_payload.stream must be a boolean"
		}
	}
	var msgs []map[string]json.RawMessage
	if err := json.Unmarshal(payload["messages"], &msgs); err != nil || len(msgs) == 0 {
		return model, stream, "request_payload.messages must be a non-empty array of objects"
	}
	for i, m := range msgs {
		var role string
		if json.Unmarshal(m["role"], &role) != nil || role == "" {
			return model, stream, fmt.Sprintf("request_payload.messages[%d].role is required", i)
		}
		if c, ok := m["content"]; ok {
			c = bytes.TrimSpace(c)
			if len(c) > 0 && c[0] != '"' && c[0] != '[' && string(c) != "null" {
				return model, stream, fmt.Sprintf("request_payload.messages[%d].content must be a string or a list of parts", i)
			}
		}
	}
	if !g.opts.AnyModel && !g.models[model] {
		return model, stream, fmt.Sprintf("unknown model %q", model)
	}
	return model, stream, ""
}

// serveAccount serves credits/check and sites.
func (g *Gateway) serveAccount(w http.ResponseWriter, r *http.Request) {
	a := g.authenticate(r)
	idx := g.record(r, nil, a)
	status := 0
	defer func() { g.update(idx, func(q *Request) { q.Status = status }) }()
	if a == nil {
		status = http.StatusUnauthorized
		writeJSON(w, status, map[string]any{"code": 401, "message": "Unauthorized"})
		return
	}
	g.mu.Lock()
	b, cred, used := a.cred.Default, a.cred, a.stats.Requests
	g.mu.Unlock()
	g.update(idx, func(q *Request) { q.Fault = b.Fault })
	if !g.sleep(r, g.opts.Latency) {
		return
	}
	if r.URL.Path == pathSites {
		status = g.sites(w, b, cred)
		return
	}
	status = g.credits(w, r, b, used)
}

func balance(used int, daily bool) map[string]any {
	b := map[string]any{
		"monthlyTotal": 2000, "monthlyUsed": used, "monthlyRemaining": max(2000-used, 0),
		"dailyTotal": 5000000, "dailyUsed": used * 100, "dailyRemaining": max(5000000-used*100, 0),
	}
	if daily {
		b["dailyUsed"], b["dailyRemaining"] = 5000000, 0
	}
	return b
}

// credits answers credits/check from the credential's permanent behaviour.
func (g *Gateway) credits(w http.ResponseWriter, r *http.Request, b Behavior, used int) int {
	switch b.Fault {
	case Unauthorized:
		writeJSON(w, http.StatusUnauthorized, map[string]any{"code": 401, "message": "Unauthorized"})
		return http.StatusUnauthorized
	case UserBlocked:
		writeJSON(w, http.StatusForbidden, map[string]any{"status": "USER_BLOCKED", "message": "The user is blocked from using Rovo Dev", "balance": balance(used, false)})
		return http.StatusForbidden
	case RateLimitMinute, RateLimitDaily:
		v := map[string]any{"status": "RATE_LIMITED", "balance": balance(used, b.Fault == RateLimitDaily)}
		if ra := retryAfter(b); ra >= 0 {
			v["retryAfterSeconds"] = ra
		}
		writeJSON(w, http.StatusOK, v)
		return http.StatusOK
	case Hang:
		g.sleep(r, time.Hour)
		return 0
	case InternalError, BadGateway, Unavailable, Overloaded:
		return g.fail(w, r, b)
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "OK", "balance": balance(used, false)})
	return http.StatusOK
}

// sites answers the sites route.
func (g *Gateway) sites(w http.ResponseWriter, b Behavior, cred Credential) int {
	if b.Fault == Unauthorized {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"code": 401, "message": "Unauthorized"})
		return http.StatusUnauthorized
	}
	site := cred.CloudID
	if site == "" {
		site = "00000000-0000-4000-8000-000000000000"
	}
	writeJSON(w, http.StatusOK, map[string]any{"sites": []map[string]any{{
		"siteId": site, "siteUrl": "https://fake-site.atlassian.net", "hasActiveRovoDevSKU": true,
		"hasActiveRovoDevEverywhereEligibleSKU": false, "isTrial": false,
	}}})
	return http.StatusOK
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// retryAfter is the 429 body's retryAfterSeconds for b.
func retryAfter(b Behavior) int {
	if b.RetryAfterSeconds != 0 {
		return b.RetryAfterSeconds
	}
	if b.Fault == RateLimitDaily {
		return 3600
	}
	return 30
}

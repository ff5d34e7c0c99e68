package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/fake"
	"github.com/atlassian-proxy/atlassian-proxy/internal/logtest"
)

// loggingClient returns a client of h that logs (JSON, info) to the
// returned buffer.
func loggingClient(t *testing.T, h http.HandlerFunc) (*Client, *logtest.Buffer) {
	t.Helper()
	var buf logtest.Buffer
	c := scriptedServer(t, h)
	c.obs = newProtocolLog(slog.New(slog.NewJSONHandler(&buf, nil)))
	return c, &buf
}

// answer serves status, contentType and body.
func answer(status int, contentType, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// call sends one request the way the test case says: streamed or not.
func call(t *testing.T, c *Client, stream bool) error {
	t.Helper()
	m := mustModel(t, "gpt-5")
	if !stream {
		_, err := c.Complete(t.Context(), alice, m, hello("gpt-5"))
		return err
	}
	s, err := c.Stream(t.Context(), alice, m, hello("gpt-5"))
	if err != nil {
		return err
	}
	_, err = drain(t, s)
	return err
}

// noLoggedSecrets fails if the log holds any of alice's secrets (the email
// in any letter case).
func noLoggedSecrets(t *testing.T, log string) {
	t.Helper()
	noSecrets(t, log)
	if strings.Contains(strings.ToLower(log), strings.ToLower(alice.Email)) {
		t.Errorf("the log holds the email: %s", log)
	}
}

func TestProtocolLog(t *testing.T) {
	const sse, js = "text/event-stream", "application/json"
	tests := []struct {
		name    string
		h       http.HandlerFunc
		stream  bool
		wantErr bool
		msg     string            // the record expected once; "" = no record at all
		attrs   map[string]string // attributes it must carry (string form)
	}{
		{"unknown finish_reason, body", answer(200, js, `{"response_payload":{"choices":[{"message":{"content":"x"},"finish_reason":"PAUSE_TURN"}]}}`), false, false,
			"gateway: unknown finish_reason", map[string]string{"finish_reason": "PAUSE_TURN", "mapped_to": "stop", "mode": "json"}},
		{"unknown finish_reason, stream", serveBody(roleEvent + textEvent("a") + finishEvent("MALFORMED_FUNCTION_CALL")), true, false,
			"gateway: unknown finish_reason", map[string]string{"finish_reason": "MALFORMED_FUNCTION_CALL", "mode": "stream"}},
		{"known finish_reason", answer(200, js, `{"response_payload":{"choices":[{"message":{"content":"x"},"finish_reason":"SAFETY"}]}}`), false, false, "", nil},
		{"unknown content part, body", answer(200, js, `{"response_payload":{"choices":[{"message":{"content":[{"type":"thinking","thinking":"hm"},{"type":"text","text":"x"}]},"finish_reason":"end_turn"}]}}`), false, false,
			"gateway: unknown content part type", map[string]string{"type": "thinking", "mode": "json"}},
		{"unknown content part, stream", serveBody(roleEvent + sseEv(`{"response_payload":{"choices":[{"message":{"content":[{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"a"}]}}]}}`) + finishEvent("end_turn")), true, false,
			"gateway: unknown content part type", map[string]string{"type": "image_url", "mode": "stream"}},
		{"unknown content part with escapes", answer(200, js, `{"response_payload":{"choices":[{"message":{"content":[{"type":"redacted\u005fthinking"},{"text":"x","type":"text"}]}}]}}`), false, false,
			"gateway: unknown content part type", map[string]string{"type": "redacted_thinking"}},
		{"event without payload", serveBody(sseEv(`{"ping":true}`) + roleEvent + textEvent("a") + finishEvent("end_turn")), true, false,
			"gateway: upstream event without payload", map[string]string{"keys": "ping", "mode": "stream"}},
		{"usage in metrics, body", answer(200, js, `{"response_payload":{"choices":[{"message":{"content":"x"},"finish_reason":"end_turn"}]},"platform_attributes":{"metrics":{"usage":{"input_tokens":1,"output_tokens":2}}}}`), false, false,
			"gateway: upstream usage found", map[string]string{"mode": "json", "location": usageInMetrics, "fields": "input_tokens,output_tokens", "event_has_finish_reason": "true"}},
		{"usage in payload, body", answer(200, js, `{"response_payload":{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}}`), false, false,
			"gateway: upstream usage found", map[string]string{"location": usageInPayload, "fields": "total_tokens,prompt_tokens,completion_tokens", "event_has_finish_reason": "false"}},
		{"usage in an event of its own", serveBody(roleEvent + textEvent("a") + finishEvent("end_turn") + usageEvent(`{"input_tokens":1}`)), true, false,
			"gateway: upstream usage found", map[string]string{"mode": "stream", "location": usageInMetrics, "fields": "input_tokens", "event_has_payload": "false", "event_has_finish_reason": "false"}},
		{"401", answer(401, js, `{"code":401,"message":"Unauthorized"}`), false, true,
			"gateway: upstream error answer", map[string]string{"status": "401", "content_type": js, "credential": alice.ID, "body": `{"code":401,"message":"Unauthorized"}`}},
		{"403 text", answer(403, "text/plain", "Forbidden"), true, true,
			"gateway: upstream error answer", map[string]string{"status": "403", "body": "Forbidden"}},
		{"500 html", answer(500, "text/html", "<html>oops</html>"), false, true,
			"gateway: upstream error answer", map[string]string{"status": "500", "body": "<html>oops</html>"}},
		{"529", answer(529, js, `{"type":"error","error":{"type":"overloaded_error"}}`), false, true,
			"gateway: upstream error answer", map[string]string{"status": "529"}},
		{"400 is not logged", answer(400, js, `{"message":"bad"}`), false, true, "", nil},
		{"429 is not logged", answer(429, js, `{"status":"MINUTE_LIMIT_EXCEEDED"}`), false, true, "", nil},
		{"plain answer logs nothing", answer(200, js, `{"response_payload":{"choices":[{"message":{"content":"x"},"finish_reason":"end_turn"}]}}`), false, false, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, buf := loggingClient(t, tt.h)
			for i := range 3 { // the same variant three times: logged once
				if err := call(t, c, tt.stream); (err != nil) != tt.wantErr {
					t.Fatalf("request %d: error %v, want error %v", i, err, tt.wantErr)
				}
			}
			recs := buf.Records(t)
			if tt.msg == "" {
				if len(recs) != 0 {
					t.Errorf("log = %v, want nothing", recs)
				}
				return
			}
			got := buf.Messages(t, tt.msg)
			if len(got) != 1 {
				t.Fatalf("%d records %q in %v, want 1", len(got), tt.msg, recs)
			}
			if got[0]["level"] != "INFO" {
				t.Errorf("level = %v, want INFO", got[0]["level"])
			}
			for k, want := range tt.attrs {
				if v := fmt.Sprint(got[0][k]); v != want {
					t.Errorf("%s = %q, want %q", k, v, want)
				}
			}
			noLoggedSecrets(t, buf.String())
		})
	}
}

// TestProtocolLogDistinctVariants: each distinct variant is logged once;
// an error status is a variant per status and body shape.
func TestProtocolLogDistinctVariants(t *testing.T) {
	bodies := []struct {
		status int
		ct     string
		body   string
	}{
		{503, "application/json", `{"message":"Service Unavailable","requestId":"a"}`},
		{503, "application/json", `{"message":"Service Unavailable","requestId":"b"}`}, // same shape
		{503, "text/plain", "upstream connect error"},
		{502, "text/plain", "upstream connect error"},
		{503, "application/json", `{"error":"x"}`},
	}
	i := 0
	c, buf := loggingClient(t, func(w http.ResponseWriter, r *http.Request) {
		b := bodies[i]
		i++
		answer(b.status, b.ct, b.body)(w, r)
	})
	for range bodies {
		if err := call(t, c, false); err == nil {
			t.Fatal("no error")
		}
	}
	got := buf.Messages(t, "gateway: upstream error answer")
	var seen []string
	for _, r := range got {
		seen = append(seen, fmt.Sprint(r["status"], " ", r["body"]))
	}
	want := []string{
		`503 {"message":"Service Unavailable","requestId":"a"}`,
		"503 upstream connect error",
		"502 upstream connect error",
		`503 {"error":"x"}`,
	}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Errorf("logged:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}

// TestProtocolLogNoSecrets: error bodies that quote the credential are
// logged without its token, email or Authorization value, bounded to 1 KB,
// also when a secret straddles the cut.
func TestProtocolLogNoSecrets(t *testing.T) {
	b64 := basicToken(alice)
	leak := "token=" + alice.Token + " user=" + strings.ToUpper(alice.Email) + " Authorization: Basic " + b64 + " enc=" + b64 + " bearer: Bearer sk-abcdefghijkl"
	tests := []struct {
		name   string
		status int
		body   string
	}{
		{"401 quoting everything", 401, leak},
		{"403 JSON quoting everything", 403, `{"message":"` + leak + `","email":"` + alice.Email + `"}`},
		{"500 token across the 1 KB cut", 500, strings.Repeat("x", maxLoggedBody-10) + alice.Token + " " + leak},
		{"502 base64 across the 1 KB cut", 502, strings.Repeat("y", maxLoggedBody-5) + b64},
		{"503 email across the 1 KB cut", 503, strings.Repeat("z", maxLoggedBody-4) + alice.Email},
		{"504 long body", 504, strings.Repeat(leak+" ", 200)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, buf := loggingClient(t, answer(tt.status, "text/plain", tt.body))
			err := call(t, c, false)
			if err == nil {
				t.Fatal("no error")
			}
			got := buf.Messages(t, "gateway: upstream error answer")
			if len(got) != 1 {
				t.Fatalf("records = %v, want one error answer", buf.Records(t))
			}
			body, _ := got[0]["body"].(string)
			if len(body) > maxLoggedBody+len("…") {
				t.Errorf("logged body has %d bytes, want at most %d", len(body), maxLoggedBody)
			}
			if tt.status < 502 && !strings.Contains(body, "[redacted]") {
				t.Errorf("body = %q, want the secrets replaced", body)
			}
			for _, frag := range []string{alice.Token[:12], b64[:12], b64[len(b64)-12:], "sk-abcdefghijkl"} {
				if strings.Contains(body, frag) {
					t.Errorf("logged body holds %q: %s", frag, body)
				}
			}
			noLoggedSecrets(t, buf.String())
			noSecrets(t, err.Error())
		})
	}
}

// TestProtocolLogThroughFake: the fake gateway's 401 and 500 answers and a
// normal answer, through a client configured with a Logger.
func TestProtocolLogThroughFake(t *testing.T) {
	srv := fake.Start(t, fake.Options{Credentials: []fake.Credential{{ID: alice.ID, Email: alice.Email, Token: alice.Token}}})
	var buf logtest.Buffer
	c, err := NewClient(Config{BaseURL: srv.URL, UserAgent: testUA, Logger: slog.New(slog.NewJSONHandler(&buf, nil))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := mustModel(t, "claude-sonnet-4")
	srv.Push(alice.ID, 1, fake.Behavior{Fault: fake.Unauthorized})
	srv.Push(alice.ID, 1, fake.Behavior{Fault: fake.InternalError})
	srv.Push(alice.ID, 1, fake.Behavior{Fault: fake.BadRequest, Message: "bad " + alice.Token})
	for range 3 {
		if _, err := c.Complete(t.Context(), alice, m, hello("claude-sonnet-4")); err == nil {
			t.Fatal("no error")
		}
	}
	s, err := c.Stream(t.Context(), alice, m, hello("claude-sonnet-4"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := drain(t, s); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range buf.Records(t) {
		got = append(got, fmt.Sprintf("%v status=%v location=%v", r["msg"], r["status"], r["location"]))
	}
	want := []string{
		"gateway: upstream error answer status=401 location=<nil>",
		"gateway: upstream error answer status=500 location=<nil>",
		"gateway: upstream usage found status=<nil> location=" + usageInMetrics,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	noLoggedSecrets(t, buf.String())
	if auth := srv.Requests()[0].Header.Get("Authorization"); auth == "" || strings.Contains(buf.String(), strings.TrimPrefix(auth, "Basic ")) {
		t.Errorf("the log holds the Authorization value (or none was sent: %q)", auth)
	}
}

// TestProtocolLogBounded: at most maxVariants variants are remembered;
// the first one refused says so, once, and later ones are not logged.
func TestProtocolLogBounded(t *testing.T) {
	var buf logtest.Buffer
	p := newProtocolLog(slog.New(slog.NewJSONHandler(&buf, nil)))
	ctx := context.Background()
	for i := range maxVariants + 10 {
		reason := fmt.Sprintf("reason_%d", i)
		r := &unifiedResponse{ResponsePayload: &responsePayload{Choices: []unifiedChoice{{FinishReason: &reason}}}}
		p.response(ctx, r, modeJSON)
		p.response(ctx, r, modeJSON)
	}
	p.noPayload(ctx, []byte(`{"new":1}`))
	if n := len(buf.Messages(t, "gateway: unknown finish_reason")); n != maxVariants {
		t.Errorf("%d finish_reason records, want %d", n, maxVariants)
	}
	if n := len(buf.Messages(t, "gateway: protocol variants: limit reached, new variants are no longer logged")); n != 1 {
		t.Errorf("%d limit records, want 1", n)
	}
	if n := len(buf.Messages(t, "gateway: upstream event without payload")); n != 0 {
		t.Errorf("a variant past the limit was logged")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.seen) != maxVariants {
		t.Errorf("%d variants remembered, want %d", len(p.seen), maxVariants)
	}
}

func TestProtocolLogValuesBounded(t *testing.T) {
	var buf logtest.Buffer
	p := newProtocolLog(slog.New(slog.NewJSONHandler(&buf, nil)))
	long := strings.Repeat("é", 100) + "\x1b\n"
	p.response(context.Background(), &unifiedResponse{ResponsePayload: &responsePayload{Choices: []unifiedChoice{{FinishReason: &long}}}}, modeJSON)
	recs := buf.Messages(t, "gateway: unknown finish_reason")
	if len(recs) != 1 {
		t.Fatalf("records = %v", buf.Records(t))
	}
	v, _ := recs[0]["finish_reason"].(string)
	if len(v) > maxVariantValue+len("…") || strings.ContainsAny(v, "\x1b\n") || !strings.HasPrefix(v, "éé") {
		t.Errorf("finish_reason logged as %q", v)
	}
}

// TestProtocolLogOff: no logger, or one above info, logs nothing and
// costs nothing.
func TestProtocolLogOff(t *testing.T) {
	if newProtocolLog(nil) != nil {
		t.Error("a nil logger gives a protocol log")
	}
	var nilLog *protocolLog
	reason := "weird"
	r := &unifiedResponse{ResponsePayload: &responsePayload{Choices: []unifiedChoice{{FinishReason: &reason}}}}
	nilLog.response(context.Background(), r, modeJSON) // must not panic
	nilLog.noPayload(context.Background(), []byte(`{}`))
	nilLog.errorAnswer(context.Background(), 500, "", []byte("x"), alice)

	var buf logtest.Buffer
	warn := newProtocolLog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	warn.response(context.Background(), r, modeJSON)
	warn.errorAnswer(context.Background(), 500, "", []byte("x"), alice)
	if buf.String() != "" || len(warn.seen) != 0 {
		t.Errorf("a warn-level logger got %q and remembered %d variants", buf.String(), len(warn.seen))
	}
}

// refJSONKeys is the former jsonKeys: the whole object decoded into a map.
func refJSONKeys(data []byte) string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) != nil {
		return ""
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, boundValue(k))
	}
	slices.Sort(keys)
	if len(keys) > maxVariantKeys {
		keys = append(keys[:maxVariantKeys], "…")
	}
	return strings.Join(keys, ",")
}

// refBodyShape is the former bodyShape, on refJSONKeys.
func refBodyShape(body []byte) string {
	b := bytes.TrimSpace(body)
	switch {
	case len(b) == 0:
		return "empty"
	case b[0] == '{':
		if keys := refJSONKeys(b); keys != "" || json.Valid(b) {
			return "json{" + keys + "}"
		}
		return "text"
	case b[0] == '<':
		return "html"
	}
	return "text"
}

var keySeeds = []string{
	``, `null`, `[]`, `"x"`, `5`, `{}`, ` { } `, `{"message":"Service Unavailable","requestId":"a"}`,
	`{"b":1,"a":[1,{"c":"}"}],"d":{"e":"]"},"f":null,"g":true,"h":-1.5e3,"i":"\"}"}`,
	`{"a":1,"a":2}`, `{"\u0061":1,"a":2}`, `{"k\n":1}`, `{"` + strings.Repeat("é", 40) + `x":1,"` + strings.Repeat("é", 40) + `y":2}`,
	`{"bad ` + "\xff" + `":1}`, `{"a":1,}`, `{"a":1`, `{"a" 1}`, `{not json`, `<html>`, `upstream connect error`,
	"{\n\t\"spaced\" :\t\"v\" ,\r\n \"k\":[ ]\n}", `{"1":1,"2":2,"3":3,"4":4,"5":5,"6":6,"7":7,"8":8,"9":9,"10":10,"11":11,"12":12,"13":13}`,
}

// TestBodyShapeMatchesDecoding: the one-scan key reading names the same
// shapes and keys as decoding the body into a map did.
func TestBodyShapeMatchesDecoding(t *testing.T) {
	for _, seed := range keySeeds {
		t.Run(seed, func(t *testing.T) { checkKeys(t, []byte(seed)) })
	}
}

func FuzzBodyShape(f *testing.F) {
	for _, s := range keySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkKeys)
}

func checkKeys(t *testing.T, b []byte) {
	if got, want := bodyShape(b), refBodyShape(b); got != want {
		t.Errorf("bodyShape(%q) = %q, want %q", b, got, want)
	}
	if got, want := jsonKeys(b), refJSONKeys(b); got != want {
		t.Errorf("jsonKeys(%q) = %q, want %q", b, got, want)
	}
}

// TestProtocolLogErrorPastTheLimit: once the variant limit is reached, an
// error answer of a new shape is not logged.
func TestProtocolLogErrorPastTheLimit(t *testing.T) {
	var buf logtest.Buffer
	p := newProtocolLog(slog.New(slog.NewJSONHandler(&buf, nil)))
	ctx := context.Background()
	for i := range maxVariants + 1 {
		p.errorAnswer(ctx, 500, "application/json", fmt.Appendf(nil, `{"key_%d":1}`, i), alice)
	}
	p.errorAnswer(ctx, 503, "text/plain", []byte("new"), alice)
	if n := len(buf.Messages(t, "gateway: upstream error answer")); n != maxVariants {
		t.Errorf("%d error records, want %d", n, maxVariants)
	}
	if !p.saturated() {
		t.Error("the log is not saturated past its limit")
	}
}

// BenchmarkBodyShape: the shape of a 5xx JSON body of about 4 KB, read in
// one scan and (the former way) decoded into a map.
func BenchmarkBodyShape(b *testing.B) {
	body := []byte(`{"message":"Internal server error","requestId":"0f6c","details":{"trace":"` + strings.Repeat("frame ", 700) + `"},"status":"ERROR"}`)
	for _, impl := range []struct {
		name string
		fn   func([]byte) string
	}{{"scan", bodyShape}, {"decode", refBodyShape}} {
		b.Run(impl.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				impl.fn(body)
			}
		})
	}
}

// BenchmarkProtocolLogSeen: noting an event whose variants were all seen
// already (every event of a stream after the first) allocates nothing.
func BenchmarkProtocolLogSeen(b *testing.B) {
	p := newProtocolLog(slog.New(slog.NewJSONHandler(io.Discard, nil)))
	ctx := context.Background()
	in, out := flexInt(10), flexInt(3)
	reason := "weird"
	r := &unifiedResponse{
		ResponsePayload: &responsePayload{Choices: []unifiedChoice{{
			Message:      &unifiedMessage{Content: unifiedContent{other: "thinking", some: true}},
			FinishReason: &reason,
		}}},
		PlatformAttributes: &responseAttributes{Metrics: &struct {
			Usage *unifiedUsage `json:"usage"`
		}{Usage: &unifiedUsage{InputTokens: &in, OutputTokens: &out}}},
	}
	p.response(ctx, r, modeStream)
	b.ReportAllocs()
	for b.Loop() {
		p.response(ctx, r, modeStream)
	}
}

package gateway

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// The one-pass readers of response.go (contentText, unquote, flexInt)
// must decode exactly as the encoding/json code they replaced. These tests
// hold them to that reference.

// refContentText is the former contentText: encoding/json all the way.
func refContentText(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", false
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	case '[':
		var parts []struct {
			Type string  `json:"type"`
			Text *string `json:"text"`
		}
		if json.Unmarshal(raw, &parts) != nil {
			return "", false
		}
		var b strings.Builder
		ok := false
		for _, p := range parts {
			if p.Text != nil && (p.Type == "" || p.Type == "text") {
				b.WriteString(*p.Text)
				ok = true
			}
		}
		return b.String(), ok
	}
	return "", false
}

// refContentSome is whether a content value holds anything (what commits
// a stream), with encoding/json: non-empty text, a part of a type other
// than text, or a value that is not null, a string or a list of parts.
func refContentSome(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return false
	}
	switch raw[0] {
	case '"':
		var s string
		return json.Unmarshal(raw, &s) != nil || s != ""
	case '[':
		var parts []struct {
			Type string  `json:"type"`
			Text *string `json:"text"`
		}
		if json.Unmarshal(raw, &parts) != nil {
			return true // unreadable: something the proxy cannot tell is empty
		}
		for _, p := range parts {
			if p.Type != "" && p.Type != "text" {
				return true
			}
			if p.Text != nil && *p.Text != "" {
				return true
			}
		}
		return false
	}
	return true
}

// refFlexInt is the former flexInt decoding.
func refFlexInt(b []byte) int64 {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if json.Unmarshal(b, &s) != nil {
			return 0
		}
		b = []byte(strings.TrimSpace(s))
	}
	if n, err := strconv.ParseInt(string(b), 10, 64); err == nil {
		return n
	}
	if x, err := strconv.ParseFloat(string(b), 64); err == nil && x == x && x < 1<<62 && x > -(1<<62) {
		return int64(x)
	}
	return 0
}

var contentSeeds = []string{
	`"plain"`, `"esc\"aped\n\t\\ \/ \u00e9 \ud83d\ude00 \ud800 x \udc00"`, `"bad utf8 ` + "\xff\xfe" + `"`, `null`, `[]`, ` [ ] `,
	`[{"type":"text","text":"a"}]`,
	`[{"type":"text","text":"a"},{"type":"text","text":"b\nc"}]`,
	`[{"text":"no type"},{"type":"image_url","image_url":{"url":"x"}},{"type":null,"text":"null type"}]`,
	`[{"type":"text","text":null}]`, `[{"type":"text","text":"a","text":null}]`, `[{"type":"image","type":null,"text":"t"}]`,
	`[{"Type":"image","text":"folded key"}]`, `[{"TEXT":"folded text"}]`, `[{"typ\u0065":"image","text":"escaped key"}]`,
	`[{"type":"text","text":5}]`, `[{"type":5,"text":"x"}]`, `["x"]`, `[null,{"text":"after null"}]`, `[1]`,
	`[{"type":"text","text":"a","extra":{"nested":["]","}",{"x":"\"}"}]},"n":-1.5e3,"t":true}]`,
	"[ {\"type\" : \"text\" ,\n\t\"text\" : \"spaced\" } , {\"text\":\"\"} ]",
	`[{"type":"te\u0078t","text":"escaped type"}]`, `[{"type":"","text":"empty type"}]`, `{"text":"object"}`, `5`, `true`,
	`""`, `" "`, `[{"type":"text","text":""}]`, `[{"type":"text"},{"text":""},{}]`, `[{"type":"thinking","thinking":"hm"}]`,
	`[{"type":"thinking","thinking":""},{"type":"text","text":""}]`, `[{"type":"reasoning"}]`, `[null]`,
	`{"type":"thinking","thinking":"an object, not a list"}`,
}

func TestContentTextMatchesEncodingJSON(t *testing.T) {
	for _, seed := range contentSeeds {
		t.Run(seed, func(t *testing.T) { checkContentText(t, []byte(seed)) })
	}
}

func FuzzContentText(f *testing.F) {
	for _, s := range contentSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			t.Skip()
		}
		checkContentText(t, raw)
	})
}

func checkContentText(t *testing.T, raw []byte) {
	t.Helper()
	if !json.Valid(raw) {
		t.Fatalf("seed %q is not valid JSON", raw)
	}
	gotText, gotOK := contentText(raw)
	wantText, wantOK := refContentText(raw)
	if gotText != wantText || gotOK != wantOK {
		t.Errorf("contentText(%q) = %q, %v; want %q, %v", raw, gotText, gotOK, wantText, wantOK)
	}
	// The same through the decoder, as part of a message.
	var m unifiedMessage
	if err := json.Unmarshal([]byte(`{"content":`+string(raw)+`}`), &m); err != nil {
		t.Fatalf("decode message with content %q: %v", raw, err)
	}
	if m.Content.text != wantText || m.Content.ok != wantOK {
		t.Errorf("decoded content %q = %q, %v; want %q, %v", raw, m.Content.text, m.Content.ok, wantText, wantOK)
	}
	if want := refContentSome(raw); m.Content.some != want {
		t.Errorf("decoded content %q: some = %v, want %v", raw, m.Content.some, want)
	}
}

// TestContentCommits pins which contents commit a stream (the rule the
// docs state): anything beyond nothing, of any part type; not an empty
// text.
func TestContentCommits(t *testing.T) {
	tests := []struct {
		name, content string
		want          bool
	}{
		{"absent", ``, false},
		{"null", `null`, false},
		{"empty string", `""`, false},
		{"empty list", `[]`, false},
		{"an empty text part", `[{"type":"text","text":""}]`, false},
		{"text parts without text", `[{"type":"text"},{"text":null}]`, false},
		{"text", `[{"type":"text","text":"a"}]`, true},
		{"a string", `"a"`, true},
		{"a space", `" "`, true},
		{"a thinking part", `[{"type":"thinking","thinking":"let me see"}]`, true},
		{"an empty thinking part", `[{"type":"thinking","thinking":""}]`, true},
		{"a part of an unknown type", `[{"type":"x-future","data":1}]`, true},
		{"an empty text, then an image", `[{"type":"text","text":""},{"type":"image_url","image_url":{"url":"u"}}]`, true},
		{"a single part, not in a list", `{"type":"thinking","thinking":"hm"}`, true},
		{"an unreadable list", `["x"]`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := `{"role":"assistant"}`
			if tt.content != "" {
				msg = `{"role":"assistant","content":` + tt.content + `}`
			}
			var m unifiedMessage
			if err := json.Unmarshal([]byte(msg), &m); err != nil {
				t.Fatal(err)
			}
			if m.Content.some != tt.want {
				t.Errorf("content %s: commits = %v, want %v", tt.content, m.Content.some, tt.want)
			}
		})
	}
}

func FuzzFlexInt(f *testing.F) {
	for _, s := range []string{`1`, `-12`, `+3`, `"42"`, `" 7 "`, `1.9`, `1e3`, `"1e3"`, `99999999999999999999`, `123456789012345678`,
		`1234567890123456789`, `null`, `"x"`, `true`, `"\u0031\u0032"`, `-0`, `"-"`, `""`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			t.Skip()
		}
		var got flexInt
		if err := got.UnmarshalJSON(raw); err != nil {
			t.Fatalf("UnmarshalJSON(%q) = %v, want nil", raw, err)
		}
		if want := refFlexInt(raw); int64(got) != want {
			t.Errorf("flexInt(%q) = %d, want %d", raw, got, want)
		}
	})
}

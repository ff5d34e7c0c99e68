package gateway

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// decodeAll returns every event's data and the terminating error.
func decodeAll(r io.Reader) ([]string, error) {
	d := newSSEDecoder(r)
	var out []string
	for {
		data, err := d.Next()
		if err != nil {
			return out, err
		}
		out = append(out, string(data))
	}
}

func TestSSEDecoder(t *testing.T) {
	big := strings.Repeat("x", 3<<20) // several MB in one line
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"one event", "data: {\"a\":1}\n\n", []string{`{"a":1}`}},
		{"two events", "data: a\n\ndata: b\n\n", []string{"a", "b"}},
		{"no space after colon", "data:a\n\n", []string{"a"}},
		{"only one space stripped", "data:  a\n\n", []string{" a"}},
		{"multi-line data joined", "data: a\ndata: b\n\n", []string{"a\nb"}},
		{"comments ignored", ": keep-alive\n\ndata: a\n: mid\n\n", []string{"a"}},
		{"other fields ignored", "event: message\nid: 7\nretry: 100\ndata: a\n\n", []string{"a"}},
		{"unknown field ignored", "foo: bar\ndata: a\n\n", []string{"a"}},
		{"event without data skipped", "event: ping\n\ndata: a\n\n", []string{"a"}},
		{"empty data field", "data\n\n", []string{""}},
		{"empty data value", "data:\n\n", []string{""}},
		{"CRLF", "data: a\r\n\r\ndata: b\r\n\r\n", []string{"a", "b"}},
		{"mixed line endings", "data: a\r\ndata: b\n\r\n", []string{"a\nb"}},
		{"done sentinel passed through", "data: a\n\ndata: [DONE]\n\n", []string{"a", "[DONE]"}},
		{"extra blank lines", "\n\n\ndata: a\n\n\n\n", []string{"a"}},
		{"EOF without blank line", "data: a\n", []string{"a"}},
		{"EOF without newline", "data: a", []string{"a"}},
		{"empty stream", "", nil},
		{"only comments", ": hi\n: there\n", nil},
		{"colon in value", "data: {\"t\":\"a:b\"}\n\n", []string{`{"t":"a:b"}`}},
		{"big line", "data: " + big + "\n\n", []string{big}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, mode := range []string{"whole", "byte by byte"} {
				var r io.Reader = strings.NewReader(tt.in)
				if mode == "byte by byte" {
					if len(tt.in) > 1<<16 {
						continue
					}
					r = iotest.OneByteReader(r)
				}
				got, err := decodeAll(r)
				if !errors.Is(err, io.EOF) {
					t.Fatalf("%s: error %v, want io.EOF", mode, err)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("%s: got %d events, want %d", mode, len(got), len(tt.want))
				}
				for i := range got {
					if got[i] != tt.want[i] {
						t.Errorf("%s: event %d = %.80q, want %.80q", mode, i, got[i], tt.want[i])
					}
				}
			}
		})
	}
}

func TestSSEDecoderErrors(t *testing.T) {
	t.Run("read error passed through", func(t *testing.T) {
		r := io.MultiReader(strings.NewReader("data: a\n\ndata: b"), iotest.ErrReader(io.ErrUnexpectedEOF))
		got, err := decodeAll(r)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("error = %v, want io.ErrUnexpectedEOF", err)
		}
		if len(got) != 1 || got[0] != "a" {
			t.Errorf("events = %q, want [a]", got)
		}
	})
	small := func(in string) error {
		d := newSSEDecoder(strings.NewReader(in))
		d.max = 200 << 10
		for {
			if _, err := d.Next(); err != nil {
				return err
			}
		}
	}
	t.Run("event too large", func(t *testing.T) {
		line := "data: " + strings.Repeat("y", 100<<10) + "\n"
		err := small(line + line + line + "\n")
		if !errors.Is(err, errEventTooLarge) {
			t.Errorf("error = %v, want errEventTooLarge", err)
		}
	})
	t.Run("line too large", func(t *testing.T) {
		err := small("data: " + strings.Repeat("z", 300<<10) + "\n\n")
		if !errors.Is(err, errEventTooLarge) {
			t.Errorf("error = %v, want errEventTooLarge", err)
		}
	})
}

// encodeSSE writes events the way a server would, one data line per line of data.
func encodeSSE(events []string, crlf bool) []byte {
	eol := "\n"
	if crlf {
		eol = "\r\n"
	}
	var b bytes.Buffer
	for _, e := range events {
		for _, line := range strings.Split(e, "\n") {
			b.WriteString("data: " + line + eol)
		}
		b.WriteString(eol)
	}
	return b.Bytes()
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("data: {\"a\":1}\n\n"), false)
	f.Add([]byte("data: a\r\ndata: b\r\n\r\n: c\n\ndata: [DONE]\n\n"), true)
	f.Add([]byte("data"), false)
	f.Add([]byte("\r\r\n\n::data: \n"), false)
	f.Fuzz(func(t *testing.T, in []byte, crlf bool) {
		// Arbitrary input: never panics, always terminates, bounded events.
		d := newSSEDecoder(bytes.NewReader(in))
		for n := 0; ; n++ {
			data, err := d.Next()
			if err != nil {
				break
			}
			if len(data) > len(in) {
				t.Fatalf("event of %d bytes from %d bytes of input", len(data), len(in))
			}
			if n > len(in) {
				t.Fatalf("more events (%d) than input bytes (%d)", n, len(in))
			}
		}
		// Round trip: events without CR round-trip through an encoder.
		if bytes.ContainsRune(in, '\r') {
			return
		}
		events := strings.Split(string(in), "\n\n")
		enc := encodeSSE(events, crlf)
		got, err := decodeAll(bytes.NewReader(enc))
		if !errors.Is(err, io.EOF) {
			t.Fatalf("round trip error %v", err)
		}
		if len(got) != len(events) {
			t.Fatalf("round trip: %d events, want %d", len(got), len(events))
		}
		for i := range got {
			if got[i] != events[i] {
				t.Fatalf("round trip event %d = %q, want %q", i, got[i], events[i])
			}
		}
	})
}

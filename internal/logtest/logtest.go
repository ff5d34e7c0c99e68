// Package logtest holds what tests need to read the logs of the code they
// run: a buffer that log handlers on other goroutines may write to while
// the test reads it, and the decoding of JSON log lines.
package logtest

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
)

// Buffer is a bytes.Buffer safe for concurrent writes and reads.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Records decodes the JSON log lines written so far; a line that is not a
// JSON object fails the test.
func (b *Buffer) Records(tb testing.TB) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for line := range strings.Lines(b.String()) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			tb.Fatalf("log line %q is not a JSON object: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// Messages returns the records whose msg is msg.
func (b *Buffer) Messages(tb testing.TB, msg string) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for _, rec := range b.Records(tb) {
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

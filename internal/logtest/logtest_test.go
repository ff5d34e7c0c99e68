package logtest

import (
	"log/slog"
	"sync"
	"testing"
)

// A logger writing from several goroutines while the test reads: every
// record arrives whole and Messages picks them by message.
func TestBufferConcurrentLogger(t *testing.T) {
	var b Buffer
	log := slog.New(slog.NewJSONHandler(&b, nil))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				log.Info("tick", "g", i, "j", j)
				_ = b.String()
			}
		})
	}
	log.Warn("other")
	wg.Wait()
	if n := len(b.Records(t)); n != 8*50+1 {
		t.Errorf("%d records, want %d", n, 8*50+1)
	}
	if n := len(b.Messages(t, "tick")); n != 8*50 {
		t.Errorf("%d tick records, want %d", n, 8*50)
	}
	if got := b.Messages(t, "other"); len(got) != 1 || got[0]["level"] != "WARN" {
		t.Errorf("other: %v", got)
	}
}

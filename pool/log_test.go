package pool

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// gatedHandler is a log sink that, once closed, blocks every write until
// it opens again, like a stderr nobody reads.
type gatedHandler struct {
	mu   sync.Mutex
	gate chan struct{} // nil: open
	msgs []string
	attr map[string]int64 // "dropped" values of the warnings
}

func (h *gatedHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *gatedHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *gatedHandler) WithGroup(string) slog.Handler                { return h }

func (h *gatedHandler) close() {
	h.mu.Lock()
	h.gate = make(chan struct{})
	h.mu.Unlock()
}

func (h *gatedHandler) open() {
	h.mu.Lock()
	close(h.gate)
	h.gate = nil
	h.mu.Unlock()
}

func (h *gatedHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	gate := h.gate
	h.mu.Unlock()
	if gate != nil {
		<-gate
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "dropped" {
			h.attr["dropped"] += a.Value.Int64()
		}
		return true
	})
	return nil
}

func (h *gatedHandler) count(prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

// TestBlockedLogDoesNotStallDone: a log sink that does not take writes
// must not hold up Lease.Done (which waits for the actor): actors hand
// their log lines to a bounded queue that drops, counted, when full.
func TestBlockedLogDoesNotStallDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &gatedHandler{attr: map[string]int64{}}
		p := newPool(t, Config{}, Deps{Logger: slog.New(h)})
		p.Sync([]Spec{spec("a", 1)}, nil)
		start(t, p)
		synctest.Wait()
		h.close()

		const cycles = 300 // each logs "invalid" then "ready": 600 records
		for range cycles {
			mustAcquire(t, p).Finish(Result{Outcome: OutcomeUnauthorized, Err: errBoom}) // would block before the fix
			if err := p.Reset("a"); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		dropped := p.LogsDropped()
		// One record is in the handler, logQueueSize wait in the queue.
		if want := int64(2*cycles - logQueueSize - 1); dropped != want {
			t.Errorf("dropped %d records, want %d", dropped, want)
		}
		h.open()
		synctest.Wait()
		written := h.count("pool: credential invalid") + h.count("pool: credential ready")
		if int64(written)+dropped != 2*cycles {
			t.Errorf("%d written + %d dropped, want %d records in all", written, dropped, 2*cycles)
		}
		if h.count("pool: the log queue was full") == 0 || h.attr["dropped"] != dropped {
			t.Errorf("drop warnings: %d reporting %d dropped, want them to report %d",
				h.count("pool: the log queue was full"), h.attr["dropped"], dropped)
		}
	})
}

// TestLogsBeforeRunAreWritten: a credential restored as invalid before Run
// is logged by Sync itself (no actor runs yet), not queued.
func TestLogsBeforeRunAreWritten(t *testing.T) {
	h := &gatedHandler{attr: map[string]int64{}}
	p := newPool(t, Config{}, Deps{Logger: slog.New(h)})
	p.Sync([]Spec{spec("a", 1)}, []store.CredentialState{{CredentialID: "a", State: store.StateInvalid,
		Reason: OutcomeUnauthorized.String(), UpdatedAt: time.Now()}})
	if l := len(p.bg.logs); l != 0 {
		t.Errorf("%d records queued before Run, want them written at once", l)
	}
	if n := h.count("pool: credential invalid"); n != 1 {
		t.Errorf("%d lines say the credential is invalid, want 1", n)
	}
}

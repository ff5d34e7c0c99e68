package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"time"
)

// lossReason is the reason recorded with a data loss noticed by Marker.
const lossReason = "the marker key was gone: Redis restarted without its data, was flushed, " +
	"or failed over to a replica without it"

// LossRecord tells that Redis lost the proxy's data. It is kept in Redis
// (the hash <prefix>lost) from the moment a process noticed the loss until
// ClearLoss removes it (an import, or the operator), so that every process,
// also one started after the loss, reports it.
type LossRecord struct {
	At     time.Time // when it was noticed, by the noticing process's clock; zero if unreadable
	By     string    // the host name of the process that noticed it
	Reason string
}

// String describes the record for a log line or a message.
func (r *LossRecord) String() string {
	at := "at an unknown time"
	if !r.At.IsZero() {
		at = "at " + r.At.Format(time.RFC3339)
	}
	by := r.By
	if by == "" {
		by = "an unknown host"
	}
	return fmt.Sprintf("noticed %s by %s (%s)", at, by, r.Reason)
}

// Marker tells whether Redis lost the proxy's data, and records it when
// this call is the first to notice.
//
// The key <prefix>marker holds a random value, set by the first call that
// finds it absent. A process remembers the value it saw last: when a later
// call finds another value (the key was gone, so this call or another
// process set it anew), Redis lost its data since (a restart without
// persistence, a flush, a failover to an empty replica), and the call
// writes the loss record unless one is there. A process's first call has
// nothing to compare with: a brand-new deployment (no marker, no record)
// is not a loss.
//
// Marker returns the loss record in Redis, or nil when there is none:
// every process, including one that started after the loss, sees it until
// ClearLoss removes it. The check, the record and the read are one script;
// writing the record publishes a notice (Watch).
func (s *Store) Marker(ctx context.Context) (*LossRecord, error) {
	s.markerMu.Lock()
	defer s.markerMu.Unlock()
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	var (
		v   string
		rec *LossRecord
	)
	err := s.run(ctx, "marker", func(ctx context.Context) error {
		reply, err := markerCheck.Run(ctx, s.client, []string{s.k.marker, s.k.lost},
			hex.EncodeToString(b[:]), s.marker, strconv.FormatInt(time.Now().UnixNano(), 10), s.host, lossReason,
			s.k.events).Slice()
		if err != nil {
			return err
		}
		var ok bool
		if len(reply) != 2 {
			return fmt.Errorf("unexpected reply of %d elements", len(reply))
		}
		if v, ok = reply[0].(string); !ok {
			return fmt.Errorf("unexpected reply element %T", reply[0])
		}
		rec, err = toLossRecord(reply[1])
		return err
	})
	if err != nil {
		return nil, err
	}
	s.marker = v
	return rec, nil
}

// Loss returns the loss record (see Marker), or nil when there is none,
// without touching the marker.
func (s *Store) Loss(ctx context.Context) (*LossRecord, error) {
	var rec *LossRecord
	err := s.run(ctx, "read the loss record", func(ctx context.Context) error {
		m, err := s.client.HGetAll(ctx, s.k.lost).Result()
		if err != nil {
			return err
		}
		rec = lossFromMap(m)
		return nil
	})
	return rec, err
}

// ClearLoss removes the loss record, once the data is back (an import) or
// the operator says the store is whole again, and returns the record it
// removed, or nil when there was none. Removing it publishes a notice, so
// the processes stop reporting the loss at once.
func (s *Store) ClearLoss(ctx context.Context) (*LossRecord, error) {
	var rec *LossRecord
	err := s.run(ctx, "clear the loss record", func(ctx context.Context) error {
		v, err := lossClear.Run(ctx, s.client, []string{s.k.lost}, s.k.events).Result()
		if err != nil {
			return err
		}
		rec, err = toLossRecord(v)
		return err
	})
	return rec, err
}

// toLossRecord reads a flat HGETALL reply: nil when it is empty.
func toLossRecord(v any) (*LossRecord, error) {
	r, err := toRecord(v)
	if err != nil {
		return nil, err
	}
	return lossFromMap(r), nil
}

// lossFromMap reads a record's fields; nil for an empty hash. A damaged
// time reads as the zero time: the record still means a loss.
func lossFromMap(m map[string]string) *LossRecord {
	if len(m) == 0 {
		return nil
	}
	rec := &LossRecord{By: m["by"], Reason: m["reason"]}
	if at, err := record(m).time("at"); err == nil {
		rec.At = at
	}
	if rec.Reason == "" {
		rec.Reason = "no reason recorded"
	}
	return rec
}

// hostname names this process's machine (a pod's name) in a loss record.
func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "unknown"
	}
	return h
}

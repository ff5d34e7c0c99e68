// Package usage counts what the proxy serves: requests, failures and tokens
// per day, credential, API token and model (kept in the store, shared by
// replicas when the store is Redis), plus a per-minute view of the last
// hour and the latest upstream errors of this process, for the admin
// dashboard.
//
// Record is called on every request's path: it only adds to in-memory
// counters under a mutex. Run writes the accumulated rows to the store in
// batches, so traffic costs the store one write per flush interval.
package usage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// DayLayout is the layout of store.Usage.Day (store.DayLayout).
const DayLayout = store.DayLayout

// Window is how many minutes Minutes can look back.
const Window = 60

// recentErrors is how many upstream errors RecentErrors keeps.
const recentErrors = 20

// DefaultFlushInterval is how often Run writes the pending rows.
const DefaultFlushInterval = 2 * time.Second

// Sink is where rows go (store.Store implements it).
type Sink interface {
	AddUsage(ctx context.Context, rows []store.Usage) error
}

// Event is one answered request.
type Event struct {
	CredentialID string // "" when no credential served it
	TokenID      string
	Model        string // a catalog model id
	InputTokens  int64
	OutputTokens int64
	Failed       bool
	// Error describes a failure for the dashboard: an error kind and the
	// message the client got (never a secret). Empty for successes.
	Error string
}

// Minute is the traffic of one minute of this process.
type Minute struct {
	Start        time.Time `json:"start"`
	Requests     int64     `json:"requests"`
	Failures     int64     `json:"failures"`
	InputTokens  int64     `json:"input_tokens"`
	OutputTokens int64     `json:"output_tokens"`
	// AttemptFailures counts upstream attempts that failed on a credential
	// (RecordAttemptFailure), whether or not failover then served the
	// request: the upstream's trouble that clients may never see.
	AttemptFailures int64 `json:"attempt_failures"`
}

// ErrorEvent is one recent upstream failure.
type ErrorEvent struct {
	At           time.Time `json:"at"`
	CredentialID string    `json:"credential_id,omitempty"`
	Model        string    `json:"model,omitempty"`
	Error        string    `json:"error"`
	// Attempt is true for one failed attempt (RecordAttemptFailure): the
	// request went on to another credential, or ended with an error of its
	// own, recorded apart. False: what the client was told.
	Attempt bool `json:"attempt,omitempty"`
}

// Config tunes a Recorder. Zero values take defaults.
type Config struct {
	FlushInterval time.Duration
	FlushTimeout  time.Duration // per write; default 5 s
	Now           func() time.Time
	Logger        *slog.Logger
}

type key struct {
	day, cred, token, model string
}

// Recorder accumulates usage. Its methods are safe for concurrent use.
type Recorder struct {
	sink Sink
	cfg  Config

	mu      sync.Mutex
	pending map[key]*store.Usage
	minutes [Window]Minute // ring, indexed by unix minute % Window
	// Recent errors: requests that failed, and failed attempts, in rings
	// of their own, so that a storm of attempts failing over never pushes
	// out what clients were told.
	errs, attempts     [recentErrors]ErrorEvent
	errSeq, attemptSeq [recentErrors]uint64 // the order of recording, to merge the two
	nerrs, nattempts   int                  // totals recorded (ring positions)
	seq                uint64

	// day is the UTC day starting at dayStart in DayLayout (see dayOf).
	dayStart time.Time
	day      string
}

// New returns a Recorder writing to sink (nil: keep only the in-memory views).
func New(sink Sink, cfg Config) *Recorder {
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.FlushTimeout <= 0 {
		cfg.FlushTimeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Recorder{sink: sink, cfg: cfg, pending: map[key]*store.Usage{}}
}

// Record counts one answered request.
func (r *Recorder) Record(e Event) {
	now := r.cfg.Now().UTC()
	var failed int64
	if e.Failed {
		failed = 1
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sink != nil {
		k := key{day: r.dayOf(now), cred: e.CredentialID, token: e.TokenID, model: e.Model}
		row := r.pending[k]
		if row == nil {
			row = &store.Usage{Day: k.day, CredentialID: k.cred, TokenID: k.token, Model: k.model}
			r.pending[k] = row
		}
		row.Requests++
		row.Failures += failed
		row.InputTokens += e.InputTokens
		row.OutputTokens += e.OutputTokens
	}
	m := r.minute(now)
	m.Requests++
	m.Failures += failed
	m.InputTokens += e.InputTokens
	m.OutputTokens += e.OutputTokens
	if e.Failed && e.Error != "" {
		r.addError(ErrorEvent{At: now, CredentialID: e.CredentialID, Model: e.Model, Error: e.Error})
	}
}

// RecordAttemptFailure counts one upstream attempt that failed on a
// credential (rate limited, refused, failing, unreachable), for the
// dashboard: the minute's AttemptFailures and the recent errors, marked
// Attempt. msg must hold no secret. It writes no usage row: the request is
// counted once, by Record, when it ends.
func (r *Recorder) RecordAttemptFailure(credentialID, model, msg string) {
	now := r.cfg.Now().UTC()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.minute(now).AttemptFailures++
	r.seq++
	r.attempts[r.nattempts%recentErrors] = ErrorEvent{At: now, CredentialID: credentialID, Model: model, Error: msg, Attempt: true}
	r.attemptSeq[r.nattempts%recentErrors] = r.seq
	r.nattempts++
}

// addError puts e in the ring of recent request failures; r.mu is held.
func (r *Recorder) addError(e ErrorEvent) {
	r.seq++
	r.errs[r.nerrs%recentErrors] = e
	r.errSeq[r.nerrs%recentErrors] = r.seq
	r.nerrs++
}

// dayOf returns now's day in DayLayout, formatted once per day rather
// than on every request; r.mu is held.
func (r *Recorder) dayOf(now time.Time) string {
	// A UTC day is 24 h from the zero time's midnight: Truncate finds it.
	if start := now.Truncate(24 * time.Hour); r.day == "" || !start.Equal(r.dayStart) {
		r.dayStart, r.day = start, now.Format(DayLayout)
	}
	return r.day
}

// minute returns the ring slot of now's minute, cleared when it held an
// older minute; r.mu is held.
func (r *Recorder) minute(now time.Time) *Minute {
	start := now.Truncate(time.Minute)
	m := &r.minutes[(start.Unix()/60)%Window]
	if !m.Start.Equal(start) {
		*m = Minute{Start: start}
	}
	return m
}

// Minutes returns the last n minutes (at most Window) of this process,
// oldest first, the current minute last; minutes without traffic are
// present with zero counts.
func (r *Recorder) Minutes(n int) []Minute {
	n = min(max(n, 0), Window)
	now := r.cfg.Now().UTC().Truncate(time.Minute)
	out := make([]Minute, n)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range n {
		start := now.Add(-time.Duration(n-1-i) * time.Minute)
		m := r.minutes[(start.Unix()/60)%Window]
		if !m.Start.Equal(start) {
			m = Minute{Start: start}
		}
		out[i] = m
	}
	return out
}

// RecentErrors returns up to n of the latest failures, newest first: the
// latest requests that failed and the latest failed attempts (each kind
// keeps its own last 20), in the order they were recorded.
func (r *Recorder) RecentErrors(n int) []ErrorEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	reqs, atts := min(r.nerrs, recentErrors), min(r.nattempts, recentErrors)
	n = min(max(n, 0), reqs+atts)
	out := make([]ErrorEvent, 0, n)
	i, j := 0, 0 // taken from each ring, newest first
	for len(out) < n {
		if j >= atts || (i < reqs && r.errSeq[(r.nerrs-1-i)%recentErrors] > r.attemptSeq[(r.nattempts-1-j)%recentErrors]) {
			out = append(out, r.errs[(r.nerrs-1-i)%recentErrors])
			i++
		} else {
			out = append(out, r.attempts[(r.nattempts-1-j)%recentErrors])
			j++
		}
	}
	return out
}

// Run flushes the pending rows every FlushInterval until ctx ends, then
// once more (within FlushTimeout) so that a clean shutdown loses nothing.
func (r *Recorder) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := r.Flush(context.WithoutCancel(ctx)); err != nil {
				r.cfg.Logger.Warn("usage: final flush failed; some usage counts are lost", "err", err)
			}
			return nil
		case <-t.C:
			switch err := r.Flush(ctx); {
			case err == nil || ctx.Err() != nil:
			case errors.Is(err, ErrRowsDropped):
				r.cfg.Logger.Warn("usage: flush failed; the rows were dropped, not retried (the store may have applied them)", "err", err)
			default:
				r.cfg.Logger.Warn("usage: flush failed; will retry", "err", err)
			}
		}
	}
}

// Flush writes the pending rows. Rows that could not be written are kept
// for the next flush (added to what accumulated meanwhile) unless the
// store may have applied them (a failure other than ErrUnavailable), in
// which case the chunk that failed is dropped rather than counted twice
// (the error then wraps ErrRowsDropped) and the chunks after it are kept.
func (r *Recorder) Flush(ctx context.Context) error {
	if r.sink == nil {
		return nil
	}
	r.mu.Lock()
	if len(r.pending) == 0 {
		r.mu.Unlock()
		return nil
	}
	batch := r.pending
	r.pending = make(map[key]*store.Usage, len(batch))
	r.mu.Unlock()

	rows := make([]store.Usage, 0, len(batch))
	for _, row := range batch {
		rows = append(rows, *row)
	}
	// In a fixed order, so that which rows share a chunk does not depend
	// on map iteration.
	slices.SortFunc(rows, func(a, b store.Usage) int {
		return cmp.Or(cmp.Compare(a.Day, b.Day), cmp.Compare(a.CredentialID, b.CredentialID),
			cmp.Compare(a.TokenID, b.TokenID), cmp.Compare(a.Model, b.Model))
	})
	// In chunks that a backend applies in one go, so that a failure
	// requeues only what was not written.
	for start := 0; start < len(rows); start += flushChunk {
		if err := ctx.Err(); err != nil { // nothing of this chunk was sent
			r.requeue(rows[start:])
			return fmt.Errorf("usage: write %d rows: %w", len(rows)-start, err)
		}
		chunk := rows[start:min(start+flushChunk, len(rows))]
		wctx, cancel := context.WithTimeout(ctx, r.cfg.FlushTimeout)
		err := r.sink.AddUsage(wctx, chunk)
		cancel()
		if err == nil {
			continue
		}
		if errors.Is(err, store.ErrUnavailable) {
			r.requeue(rows[start:])
			return fmt.Errorf("usage: write %d rows: %w", len(rows)-start, err)
		}
		// Only this chunk may have been applied; the ones after it were
		// never sent and wait for the next flush.
		r.requeue(rows[start+len(chunk):])
		return fmt.Errorf("usage: write %d rows: %w (%w)", len(chunk), err, ErrRowsDropped)
	}
	return nil
}

// ErrRowsDropped marks a Flush error after which the failed rows were
// dropped rather than kept for the next flush: the store failed in a way
// that may have applied them, and writing them again could count them twice.
var ErrRowsDropped = errors.New("rows dropped: the store may have applied them")

// flushChunk is the most rows one AddUsage call carries (the Redis store
// applies up to 256 in one script).
const flushChunk = 200

func (r *Recorder) requeue(rows []store.Usage) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, old := range rows {
		k := key{day: old.Day, cred: old.CredentialID, token: old.TokenID, model: old.Model}
		row := r.pending[k]
		if row == nil {
			cp := old
			r.pending[k] = &cp
			continue
		}
		row.Requests += old.Requests
		row.Failures += old.Failures
		row.InputTokens += old.InputTokens
		row.OutputTokens += old.OutputTokens
	}
}

package pool

import (
	"errors"
	"sync/atomic"
	"time"
)

// maxRefusals bounds the admissions one Acquire asks for before it reports
// ErrBusy (each refusal means the snapshot was stale or a mailbox full).
const maxRefusals = 8

// Acquire leases one request slot on the best credential: ready, below its
// limit, least in flight, ties round robin, none of exclude (the ids a
// request has tried already). attempt is the request's attempt number,
// reported by Lease.Attempts. It never blocks for long: the pick reads the
// lock-free snapshot and the chosen actor answers one admission message.
//
// Errors: ErrBusy (usable credentials exist but all are at their limit, or
// Run has not started yet: wait for OnCapacity), ErrUnavailable (see
// Availability), ErrClosed (Run has returned).
func (p *Pool) Acquire(exclude []string, attempt int) (*Lease, error) {
	switch p.phase.Load() {
	case phaseIdle:
		return nil, ErrBusy
	case phaseStopped:
		return nil, ErrClosed
	}
	s := p.snap.Load()
	var buf [maxRefusals]*entry
	skip := buf[:0]
	for len(skip) < maxRefusals {
		e := s.pick(int(p.cursor.Load()%uint64(max(1, len(s.slots)))), exclude, skip)
		if e == nil {
			break
		}
		p.cursor.Store(uint64(e.slot + 1))
		if e.a.admit() {
			p.inFlight.Add(1)
			return &Lease{p: p, e: e, cred: *e.cred.Load(), attempts: attempt}, nil
		}
		skip = append(skip, e)
	}
	if len(skip) > 0 || s.busy(exclude) || p.readyExists(s, exclude) {
		return nil, ErrBusy
	}
	return nil, ErrUnavailable
}

// readyExists is the slow check behind ErrUnavailable: a ready, enabled,
// not excluded credential whose bit a concurrent move hid from the pick.
func (p *Pool) readyExists(s *snapshot, exclude []string) bool {
	now := p.now()
	for _, e := range s.list {
		v := e.view.Load()
		if v.enabled && (v.health == healthReady || (v.health == healthCooling && !now.Before(v.until))) &&
			!skipped(e, exclude, nil) {
			return true
		}
	}
	return false
}

// Lease is one request slot on one credential. Exactly one of Done or
// Finish must be called when the attempt (or, once committed, the whole
// request) ends; later calls are ignored. A nil *Lease ignores them too.
type Lease struct {
	p        *Pool
	e        *entry
	cred     Credential
	attempts int
	finished atomic.Bool
}

// Credential is the leased credential (with its plaintext token).
func (l *Lease) Credential() Credential { return l.cred }

// Attempts is the number of upstream attempts the request made, this one included.
func (l *Lease) Attempts() int { return l.attempts }

// Done reports the outcome and token usage and releases the slot.
func (l *Lease) Done(o Outcome, u Usage) { l.Finish(Result{Outcome: o, Usage: u}) }

// Finish is Done with a retry-after (for 429s) and the attempt's error (kept,
// redacted and shortened, as the credential's last error).
func (l *Lease) Finish(r Result) {
	if l == nil || !l.finished.CompareAndSwap(false, true) {
		return
	}
	l.p.inFlight.Add(-1)
	m := outcomeMsg{outcome: r.Outcome, retryAfter: r.RetryAfter, usage: r.Usage}
	if penalty(r.Outcome) {
		m.err = safeErrorText(r.Err, l.cred)
	}
	a := l.e.a
	m.ack, _ = l.p.acks.Get().(chan struct{})
	if m.ack == nil {
		m.ack = make(chan struct{}, 1)
	}
	select {
	case a.outcomes <- m:
	case <-a.done: // the actor has stopped: nothing to release
		l.p.acks.Put(m.ack)
		return
	}
	select {
	case <-m.ack:
		l.p.acks.Put(m.ack)
	case <-a.done:
	}
}

// Untried counts the enabled, not invalid credentials outside exclude: those
// a failing-over request could still try, now or after a cooldown. It scans
// every credential: for the failure path only.
func (p *Pool) Untried(exclude []string) int {
	n := 0
	for _, e := range p.snap.Load().list {
		if v := e.view.Load(); v.enabled && v.health != healthInvalid && !skipped(e, exclude, nil) {
			n++
		}
	}
	return n
}

// RetryAfterOf returns the retry-after an error carries (an error in its
// chain with a RetryAfter() time.Duration method), or zero.
func RetryAfterOf(err error) time.Duration {
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) {
		return max(0, ra.RetryAfter())
	}
	return 0
}

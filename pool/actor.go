package pool

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// entry is the shared face of one credential: written by its actor only
// (atomics), read by pickers, Status and metrics. It never holds a lock.
type entry struct {
	id   string
	slot int
	a    *actor

	cred     atomic.Pointer[Credential]
	level    atomic.Int32 // its bit in the index: levelNone, 0..numLevels-1, levelFull
	attached bool         // its bits live in the index; guarded by Pool.idxMu
	inFlight atomic.Int32
	view     atomic.Pointer[view]

	requests, failures, tokensIn, tokensOut atomic.Int64
}

// view is the part of an actor's state that Status shows, republished (copy
// on write) when it changes.
type view struct {
	enabled   bool
	health    health
	until     time.Time
	reason    Outcome
	failures  int
	limit     int
	lastErr   string
	lastErrAt time.Time
}

type msgKind uint8

const (
	msgAdmit   msgKind = iota // reply: buffered(1)
	msgControl                // ev (+cred, +restore); ack, if set: buffered(1)
	msgRemove
)

// message is kept small (three words): every actor's mailbox buffer is
// allocated up front and scanned by the garbage collector.
type message struct {
	kind  msgKind
	reply chan bool // msgAdmit
	ctl   *control  // msgControl
}

type control struct {
	ev      event
	cred    *Credential            // with evUpdate: the new credential
	restore *store.CredentialState // with evUpdate: a stored state to apply
	ack     chan struct{}          // if set: signalled once handled, buffered(1)
}

type outcomeMsg struct {
	outcome    Outcome
	retryAfter time.Duration
	usage      Usage
	err        string
	ack        chan struct{} // buffered(1): signalled once the outcome is applied
}

// actor owns one credential's state. Its goroutine is the only writer of st
// and of its entry. Mailbox policy:
//   - mailbox (bounded, Config.MailboxSize): admissions are sent without
//     blocking (full = busy, the picker tries another credential); control
//     messages (Sync, Reset, check results) block until received or the
//     actor stops. Replies and acks are buffered(1).
//   - outcomes (buffered, at least the limit): never dropped, and taken
//     before admissions. Lease.Finish blocks until the actor has applied the
//     outcome (an ack); the actor never blocks on anything but its own
//     select (no I/O: persistence, credits checks and even its log lines are
//     handed to the pool's loops without blocking), so this is one short
//     round trip, and the pool's state is exact once Done returns. Once the
//     actor has stopped (pool stopped, or the credential removed and
//     drained) the send is abandoned: there is nothing to release.
type actor struct {
	p        *Pool
	e        *entry
	mailbox  chan message
	outcomes chan outcomeMsg
	done     chan struct{} // closed when the goroutine exits
	// started is set under Pool.mu before the goroutine starts and never
	// changes after, so the goroutine may read it too.
	started bool

	// Guarded by Pool.mu (Sync's bookkeeping, never read by the goroutine).
	spec      Spec      // the last spec sent, MaxConcurrency resolved
	stateAt   time.Time // UpdatedAt of the last stored state offered
	stateSent bool      // a stored state was offered
	syncGen   uint64    // the last Sync that listed this credential

	// Owned by the goroutine (or by the pool, under Pool.mu, before start).
	st      state
	removed bool
	timer   *time.Timer
	armed   time.Time
	counter attemptCounters
}

func (p *Pool) newActor(s Spec, slot int) *actor {
	e := &entry{id: s.ID, slot: slot}
	e.level.Store(levelNone)
	cred := s.Credential
	e.cred.Store(&cred)
	a := &actor{
		p:        p,
		e:        e,
		mailbox:  make(chan message, p.cfg.MailboxSize),
		outcomes: make(chan outcomeMsg, max(16, s.MaxConcurrency)),
		done:     make(chan struct{}),
		st:       state{enabled: s.Enabled, limit: s.MaxConcurrency},
		spec:     s,
	}
	e.a = a
	a.counter.init(p.m, s.ID)
	a.publishView()
	return a
}

// run is the actor's goroutine. ctx is the pool's lifetime.
func (a *actor) run(ctx context.Context) {
	defer close(a.done)
	a.timer = time.NewTimer(time.Hour)
	a.timer.Stop()
	defer a.timer.Stop()
	a.arm(a.p.now())
	for {
		// Outcomes first: a freed slot is counted before the next admission.
		select {
		case o := <-a.outcomes:
			a.finish(o)
			if a.removed && a.st.inFlight == 0 {
				return
			}
			continue
		default:
		}
		select {
		case <-ctx.Done():
			return
		case m := <-a.mailbox:
			a.handle(m)
		case o := <-a.outcomes:
			a.finish(o)
		case <-a.timer.C:
			a.armed = time.Time{}
			a.apply(event{kind: evTick})
		}
		if a.removed && a.st.inFlight == 0 {
			return
		}
	}
}

// send delivers a control message, blocking until the actor takes it; false
// when the actor has stopped. Before the actor starts (under Pool.mu), the
// message is handled at once.
func (a *actor) send(m message) bool {
	if !a.started {
		a.handle(m)
		return true
	}
	select {
	case a.mailbox <- m:
		return true
	case <-a.done:
		return false
	}
}

// admit asks for one slot without blocking on a full mailbox.
func (a *actor) admit() bool {
	reply, _ := a.p.replies.Get().(chan bool)
	if reply == nil {
		reply = make(chan bool, 1)
	}
	select {
	case a.mailbox <- message{kind: msgAdmit, reply: reply}:
	default:
		a.p.replies.Put(reply)
		return false // mailbox full: busy
	}
	select {
	case ok := <-reply:
		a.p.replies.Put(reply)
		return ok
	case <-a.done:
		return false // stopped: a grant, if any, died with it (reply not reused)
	}
}

// update applies a Spec (and maybe a stored state) from Sync; ack is
// signalled once it is applied. It reports whether the actor took it (false:
// it has stopped).
func (a *actor) update(s Spec, st *store.CredentialState, ack chan struct{}) bool {
	cred := s.Credential
	return a.send(message{kind: msgControl, ctl: &control{cred: &cred, restore: st, ack: ack,
		ev: event{kind: evUpdate, enabled: s.Enabled, limit: s.MaxConcurrency}}})
}

func (a *actor) handle(m message) {
	switch m.kind {
	case msgAdmit:
		m.reply <- !a.removed && a.apply(event{kind: evAdmit}).admitted
	case msgControl:
		c := m.ctl
		ev := c.ev
		if c.cred != nil {
			old := a.e.cred.Load()
			ev.secret = old.Email != c.cred.Email || old.Token != c.cred.Token || old.CloudID != c.cred.CloudID
			a.e.cred.Store(c.cred)
		}
		a.apply(ev)
		if c.restore != nil {
			a.apply(event{kind: evRestore, stored: *c.restore})
		}
		if c.ack != nil {
			c.ack <- struct{}{}
		}
	case msgRemove:
		a.removed = true
		a.st.enabled = false
		a.publishView()
	}
}

func (a *actor) finish(o outcomeMsg) {
	e := a.e
	e.requests.Add(1)
	if penalty(o.outcome) {
		e.failures.Add(1)
	}
	e.tokensIn.Add(o.usage.InputTokens)
	e.tokensOut.Add(o.usage.OutputTokens)
	a.counter.inc(o.outcome)
	a.apply(event{kind: evOutcome, outcome: o.outcome, retryAfter: o.retryAfter, err: o.err})
	if o.ack != nil {
		o.ack <- struct{}{}
	}
}

// apply runs the transition function and carries out its effects.
func (a *actor) apply(ev event) effects {
	p := a.p
	now := p.now()
	if ev.kind == evOutcome {
		ev.jitter = rand.Float64()*2 - 1
	}
	var fx effects
	before := a.st.level()
	a.st, fx = transition(p.rules, a.st, ev, now)
	lost := before != levelNone && a.st.level() == levelNone
	a.e.inFlight.Store(int32(a.st.inFlight))
	if !a.removed {
		p.setLevel(a.e, a.st.level()) // before notify: a woken waiter must see it
	}
	a.publishView()
	a.effects(fx)
	if !a.removed {
		switch {
		case fx.freed > 0:
			p.notify(fx.freed)
		case lost:
			p.notify(0) // waiters for it may have nothing left to wait for
		}
	}
	a.arm(now)
	return fx
}

func (a *actor) effects(fx effects) {
	p, id := a.p, a.e.id
	switch {
	case p.deps.States == nil:
	case fx.persist == persistSet:
		p.bg.persist(persistJob{id: id, rec: a.st.record(id)})
	case fx.persist == persistReady:
		// Written, not deleted: other replicas sharing the store learn
		// of the recovery from it.
		p.bg.persist(persistJob{id: id, rec: store.CredentialState{
			CredentialID: id, State: store.StateReady, Reason: OutcomeSuccess.String(), UpdatedAt: a.st.changedAt,
		}})
	}
	if fx.check && p.deps.Checker != nil {
		p.bg.check(checkJob{a: a, gen: a.st.checkGen})
	}
	if fx.cooldown {
		p.m.cooldown(a.st.reason)
		level := slog.LevelInfo
		if !persisted(healthCooling, a.st.reason) {
			level = slog.LevelDebug // a short back-off after a 5xx or transport error
		}
		a.log(level, "pool: credential cooling down", slog.String("credential", id),
			slog.String("reason", a.st.reason.String()), slog.Time("until", a.st.until),
			slog.Int("consecutive_failures", a.st.failures))
	}
	if fx.invalid {
		a.log(slog.LevelWarn, "pool: credential invalid", slog.String("credential", id),
			slog.String("reason", a.st.reason.String()), slog.String("last_error", a.st.lastErr))
	}
	if fx.recovered && a.st.health == healthReady {
		a.log(slog.LevelInfo, "pool: credential ready", slog.String("credential", id))
	}
}

// log writes a line about the credential. A running actor does no I/O: it
// hands the record to the pool's log loop without blocking (see
// Pool.enqueueLog). Before the actor starts, apply runs on the caller of
// Sync or Reset, which may write at once.
func (a *actor) log(level slog.Level, msg string, attrs ...slog.Attr) {
	if !a.started {
		a.p.log.LogAttrs(context.Background(), level, msg, attrs...)
		return
	}
	a.p.enqueueLog(level, msg, attrs...)
}

// arm points the timer at the state's next wake-up.
func (a *actor) arm(now time.Time) {
	if a.timer == nil {
		return // not started yet: run arms it
	}
	wake := a.st.wakeAt()
	switch {
	case wake.Equal(a.armed):
	case wake.IsZero():
		a.timer.Stop()
		a.armed = time.Time{}
	default:
		a.timer.Reset(max(0, wake.Sub(now)))
		a.armed = wake
	}
}

func (a *actor) publishView() {
	s := &a.st
	v := view{enabled: s.enabled && !a.removed, health: s.health, until: s.until, reason: s.reason,
		failures: s.failures, limit: s.limit, lastErr: s.lastErr, lastErrAt: s.lastErrAt}
	if old := a.e.view.Load(); old == nil || *old != v {
		nv := new(view) // allocated only on a change
		*nv = v
		a.e.view.Store(nv)
	}
}

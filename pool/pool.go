package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// Errors of the pool.
var (
	// ErrUnknownCredential: no credential has that id.
	ErrUnknownCredential = errors.New("pool: unknown credential")
	// ErrBusy: every usable credential is at its concurrency limit; a slot
	// frees up when a lease ends (see OnCapacity).
	ErrBusy = errors.New("pool: every usable credential is busy")
	// ErrUnavailable: no credential that is not excluded can serve now
	// (none configured, or all disabled, cooling or invalid); see Availability.
	ErrUnavailable = errors.New("pool: no credential can serve")
	// ErrClosed: the pool has stopped (Run returned).
	ErrClosed = errors.New("pool: stopped")
)

// Config tunes the pool. The zero value means the documented defaults.
type Config struct {
	// DefaultMaxConcurrency is the in-flight limit of a credential whose
	// Spec.MaxConcurrency is 0. Default 4.
	DefaultMaxConcurrency int
	// BackoffBase and BackoffMax bound a credential's own back-off after
	// 5xx, transport errors, timeouts and broken streams: BackoffBase doubling
	// per consecutive failure up to BackoffMax. Defaults 0.5 s and 16 s.
	// A Retry-After that comes with such a failure (a 503 or 529 that said
	// when to come back) lengthens the cooldown to it, up to 5 minutes.
	BackoffBase, BackoffMax time.Duration
	// BackoffJitter is the ± fraction applied to each back-off. Default 0.2.
	BackoffJitter float64
	// RateLimitCooldown applies to a 429 that gave no retry-after. Default 10 s.
	RateLimitCooldown time.Duration
	// QuotaCooldown applies to an exhausted quota that gave no retry-after. Default 1 h.
	QuotaCooldown time.Duration
	// ForbiddenCooldown applies after a 403, until the credits check answers. Default 1 min.
	ForbiddenCooldown time.Duration
	// RecheckInterval is the minimum time between credits checks of an
	// invalid credential. Default 5 min.
	RecheckInterval time.Duration
	// CheckTimeout bounds one credits check. Default 30 s.
	CheckTimeout time.Duration
	// CheckConcurrency bounds the credits checks running at once. Default 4.
	CheckConcurrency int
	// MailboxSize is each actor's admission/control mailbox. Default 32.
	MailboxSize int
}

// Validate reports a setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.DefaultMaxConcurrency < 0:
		return errors.New("pool: DefaultMaxConcurrency must not be negative")
	case c.BackoffBase < 0 || c.BackoffMax < 0:
		return errors.New("pool: back-off durations must not be negative")
	case c.BackoffBase > 0 && c.BackoffMax > 0 && c.BackoffMax < c.BackoffBase:
		return errors.New("pool: BackoffMax must not be below BackoffBase")
	case c.BackoffJitter < 0 || c.BackoffJitter >= 1:
		return errors.New("pool: BackoffJitter must be in [0, 1)")
	case c.RateLimitCooldown < 0 || c.QuotaCooldown < 0 || c.ForbiddenCooldown < 0:
		return errors.New("pool: cooldowns must not be negative")
	case c.RecheckInterval < 0 || c.CheckTimeout < 0:
		return errors.New("pool: RecheckInterval and CheckTimeout must not be negative")
	case c.CheckConcurrency < 0 || c.MailboxSize < 0:
		return errors.New("pool: CheckConcurrency and MailboxSize must not be negative")
	}
	return nil
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.DefaultMaxConcurrency == 0 {
		c.DefaultMaxConcurrency = 4
	}
	def(&c.BackoffBase, 500*time.Millisecond)
	def(&c.BackoffMax, 16*time.Second)
	c.BackoffMax = max(c.BackoffMax, c.BackoffBase)
	if c.BackoffJitter == 0 {
		c.BackoffJitter = 0.2
	}
	def(&c.RateLimitCooldown, 10*time.Second)
	def(&c.QuotaCooldown, time.Hour)
	def(&c.ForbiddenCooldown, time.Minute)
	def(&c.RecheckInterval, 5*time.Minute)
	def(&c.CheckTimeout, 30*time.Second)
	if c.CheckConcurrency == 0 {
		c.CheckConcurrency = 4
	}
	if c.MailboxSize == 0 {
		c.MailboxSize = 32
	}
	return c
}

// Checker asks the upstream whether a credential works
// (GET /rovodev/v3/credits/check). The Outcome is authoritative: Success
// (works), Unauthorized or Forbidden (invalid, blocked), RateLimited or
// QuotaExhausted (valid, out of credits; an error with a RetryAfter() method
// gives the wait); anything else is inconclusive. err carries the detail.
type Checker interface {
	Check(ctx context.Context, c Credential) (Outcome, error)
}

// StateStore persists cooldowns, invalid states and recoveries (store.Store
// implements it). Recoveries are written as "ready" records, never as
// deletions, so that other processes sharing the store learn of them.
type StateStore interface {
	SetCredentialState(ctx context.Context, s store.CredentialState) error
}

// Deps are the pool's collaborators. Every field may be nil.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: no metrics
	Checker    Checker               // nil: no background re-checks
	States     StateStore            // nil: states are not persisted
	// Now stamps cooldowns and states (nil: time.Now). Timers use the time
	// package: test timed behaviour with testing/synctest.
	Now func() time.Time
}

// Pool is the set of credential actors. Create it with New, give it
// credentials with Sync (before or after Run), run it with Run, lease
// credentials with Acquire.
type Pool struct {
	cfg   Config
	rules rules
	log   *slog.Logger
	deps  Deps
	now   func() time.Time
	m     *metrics

	snap     atomic.Pointer[snapshot]
	cursor   atomic.Uint64 // round robin: the slot after the last pick
	phase    atomic.Int32  // phaseIdle, phaseRunning, phaseStopped
	inFlight atomic.Int64  // leases not yet finished
	epoch    atomic.Uint64
	hooks    atomic.Pointer[[]func(int)]
	// replies recycles admission reply channels (chan bool, buffered(1)):
	// each carries one value, received before the channel goes back. Per
	// pool, not global, so that no channel crosses a synctest bubble.
	replies sync.Pool
	acks    sync.Pool // the same for outcome acks (chan struct{}, buffered(1))

	// idxMu orders the actors' bit updates (read lock: each actor touches
	// only its own bits) against index growth and detaching removed entries
	// (write lock). Pickers never take it.
	idxMu sync.RWMutex
	idx   *index // the index actors write to; guarded by idxMu

	mu       sync.Mutex // guards the fields below; serialises Sync, Run and Reset
	actors   map[string]*actor
	order    []*actor
	free     []int // released slot numbers
	nextSlot int
	// runCtx is the pool's lifetime (Run's ctx), kept so that actors added
	// by Sync while running start under it.
	runCtx  context.Context
	wg      sync.WaitGroup
	syncGen uint64 // bumped by every Sync, to mark the actors it saw

	bg background
}

const (
	phaseIdle = iota
	phaseRunning
	phaseStopped
)

// New returns a pool with no credentials.
func New(cfg Config, deps Deps) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	p := &Pool{cfg: cfg, deps: deps, log: deps.Logger, now: deps.Now, actors: map[string]*actor{}}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	p.rules = rules{
		backoffBase: cfg.BackoffBase, backoffMax: cfg.BackoffMax, jitter: cfg.BackoffJitter,
		rateLimitCooldown: cfg.RateLimitCooldown, quotaCooldown: cfg.QuotaCooldown,
		forbiddenCooldown: cfg.ForbiddenCooldown, serverRetryAfterMax: maxServerRetryAfter,
	}
	if deps.Checker != nil {
		p.rules.recheck = cfg.RecheckInterval
	}
	m, err := newMetrics(deps.Registerer, p)
	if err != nil {
		return nil, err
	}
	p.m = m
	p.bg.init()
	p.idx = newIndex(0)
	p.snap.Store(&snapshot{idx: p.idx, byID: map[string]*entry{}})
	return p, nil
}

// Run starts every actor and the background loops (credits checks, state
// persistence) and blocks until ctx is done and all of them have stopped.
// It may be called once. Leases still out after Run returns may be finished:
// their Done is then a no-op.
func (p *Pool) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.phase.Load() != phaseIdle {
		p.mu.Unlock()
		return errors.New("pool: Run called twice")
	}
	p.runCtx = ctx
	freed := 0
	for _, a := range p.order {
		freed += a.st.free() // before start: from then on only a's goroutine touches a.st
		p.start(a)
	}
	p.phase.Store(phaseRunning)
	p.wg.Go(func() { p.persistLoop(ctx) })
	p.wg.Go(func() { p.checkLoop(ctx) })
	p.wg.Go(func() { p.logLoop(ctx) })
	p.mu.Unlock()
	p.notify(freed) // requests that queued before Run may go (or learn there is nothing)

	<-ctx.Done()
	p.mu.Lock()
	p.phase.Store(phaseStopped)
	p.mu.Unlock()
	p.notify(0) // waiters learn that the pool is closed
	p.wg.Wait()
	p.flushLogs()
	return nil
}

// start runs a's goroutine; p.mu is held and the pool is running.
func (p *Pool) start(a *actor) {
	a.started = true
	ctx := p.runCtx
	p.wg.Go(func() { a.run(ctx) })
}

// OnCapacity registers fn, called each time n > 0 request slots may have
// become free (a lease ended, a credential became ready, was added or
// enabled, or its limit grew), and with n == 0 when usable credentials may
// have become unusable (cooling, invalid, disabled, removed; the pool
// started with nothing to offer or stopped): requests waiting for a slot
// should then check whether one can still come. fn runs on the pool's
// goroutines: it must not block and must not call back into the pool.
func (p *Pool) OnCapacity(fn func(n int)) {
	for {
		old := p.hooks.Load()
		var hooks []func(int)
		if old != nil {
			hooks = append(hooks, *old...)
		}
		hooks = append(hooks, fn)
		if p.hooks.CompareAndSwap(old, &hooks) {
			return
		}
	}
}

// Epoch grows before every OnCapacity notification. A waiter reads it before
// an Acquire that found every credential busy, and after queueing itself: a
// change means capacity may have freed in between.
func (p *Pool) Epoch() uint64 { return p.epoch.Load() }

func (p *Pool) notify(n int) {
	p.epoch.Add(1)
	if hooks := p.hooks.Load(); hooks != nil {
		for _, fn := range *hooks {
			fn(n)
		}
	}
}

// Sync makes the pool match specs: it starts actors for new credentials,
// updates changed ones (enabled, limit, secret, label) in place and stops
// removed ones, whose leases in flight still finish. states are persisted
// cooldowns and invalid states (store.ListCredentialStates): they are applied
// to new credentials, and offered to existing ones when newer than the last
// one offered (the actor keeps it only when newer than what it knows).
//
// When Sync returns, every change has been applied: a Status or a pick
// that follows sees it.
//
// A resync that changes nothing is cheap: it messages no actor and keeps
// the published snapshot (one map look-up per spec, no allocation per
// credential), so the syncer may call it on every store change.
func (p *Pool) Sync(specs []Spec, states []store.CredentialState) {
	// The changed actors' acknowledgements are awaited once p.mu is
	// released (an actor never takes it, but Reset and Sync callers should
	// not queue behind a busy mailbox).
	for _, w := range p.sync(specs, states) {
		select {
		case <-w.ack:
		case <-w.a.done:
		}
	}
}

// pendingAck is a changed actor's acknowledgement that Sync awaits.
type pendingAck struct {
	a   *actor
	ack chan struct{}
}

func (p *Pool) sync(specs []Spec, states []store.CredentialState) []pendingAck {
	var byState map[string]store.CredentialState
	if len(states) > 0 {
		byState = make(map[string]store.CredentialState, len(states))
		for _, st := range states {
			byState[st.CredentialID] = st
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.syncGen++
	gen := p.syncGen
	running := p.phase.Load() == phaseRunning

	var (
		added, changed []*actor
		updates        []*store.CredentialState // restore for changed[i], may be nil
		fresh          map[string]bool          // ids of added, to drop duplicates
		same           = true                   // p.order stays as it is
		n              int                      // specs kept, in order
	)
	order := p.order
	for _, s := range specs {
		if s.ID == "" {
			p.log.Warn("pool: ignoring a credential without id")
			continue
		}
		s.MaxConcurrency = p.limitOf(s)
		a, ok := p.actors[s.ID]
		switch {
		case ok && a.syncGen == gen, !ok && fresh[s.ID]:
			p.log.Warn("pool: ignoring a duplicate credential", "credential", s.ID)
			continue
		case !ok:
			a = p.newActor(s, p.slot())
			if st, ok := byState[s.ID]; ok {
				a.apply(event{kind: evRestore, stored: st})
				a.stateAt, a.stateSent = st.UpdatedAt, true
			}
			if fresh == nil {
				fresh = map[string]bool{}
			}
			fresh[s.ID] = true
			added = append(added, a)
		default:
			var restore *store.CredentialState
			if st, ok := byState[s.ID]; ok && (!a.stateSent || st.UpdatedAt.After(a.stateAt)) {
				a.stateAt, a.stateSent = st.UpdatedAt, true
				restore = new(store.CredentialState)
				*restore = st
			}
			if s != a.spec || restore != nil {
				a.spec = s
				changed = append(changed, a)
				updates = append(updates, restore)
			}
		}
		a.syncGen = gen
		if same && (n >= len(p.order) || p.order[n] != a) {
			same = false
			order = make([]*actor, n, len(specs))
			copy(order, p.order[:n])
		}
		if !same {
			order = append(order, a)
		}
		n++
	}
	if same && n < len(p.order) {
		same, order = false, p.order[:n:n]
	}

	var removed []*actor
	if len(p.actors)+len(added) > n { // some were not in specs
		for id, a := range p.actors {
			if a.syncGen != gen {
				removed = append(removed, a)
				delete(p.actors, id)
			}
		}
	}
	for _, a := range added {
		p.actors[a.e.id] = a
	}

	if !same {
		p.order = order
		p.idxMu.Lock()
		for _, a := range removed {
			p.detach(a.e)
		}
		if p.nextSlot > p.idx.slots {
			p.grow()
		}
		for _, a := range added {
			a.e.attached = true
			p.setLevelLocked(a.e, a.st.level())
		}
		p.publish()
		p.idxMu.Unlock()
	}

	if len(removed) > 0 {
		defer p.notify(0)
	}
	for _, a := range removed {
		p.m.forget(a.e.id)
		p.bg.dropPersist(a.e.id)
		a.send(message{kind: msgRemove})
		p.log.Info("pool: credential removed", "credential", a.e.id)
	}
	freed := 0
	for _, a := range added {
		// Read a.st before start: from then on only a's goroutine touches it.
		free, enabled, limit := a.st.free(), a.st.enabled, a.st.limit
		if running {
			p.start(a)
		}
		freed += free
		p.log.Info("pool: credential added", "credential", a.e.id, "enabled", enabled, "limit", limit)
	}
	var acks []pendingAck
	for i, a := range changed {
		ack := make(chan struct{}, 1)
		if a.update(a.spec, updates[i], ack) {
			acks = append(acks, pendingAck{a, ack})
		}
	}
	if freed > 0 {
		p.notify(freed)
	}
	return acks
}

func (p *Pool) limitOf(s Spec) int {
	if s.MaxConcurrency > 0 {
		return s.MaxConcurrency
	}
	return p.cfg.DefaultMaxConcurrency
}

// slot returns a free slot number; p.mu is held.
func (p *Pool) slot() int {
	if n := len(p.free); n > 0 {
		s := p.free[n-1]
		p.free = p.free[:n-1]
		return s
	}
	p.nextSlot++
	return p.nextSlot - 1
}

// detach takes a removed entry out of the index for good; idxMu is held.
func (p *Pool) detach(e *entry) {
	if l := e.level.Load(); l != levelNone {
		p.idx.sets[l].remove(e.slot)
	}
	e.level.Store(levelNone)
	e.attached = false
	p.free = append(p.free, e.slot)
}

// grow replaces the index with a larger copy; idxMu is held.
func (p *Pool) grow() {
	x := newIndex(p.nextSlot * 2)
	for _, a := range p.actors {
		if l := a.e.level.Load(); l != levelNone && a.e.attached {
			x.sets[l].add(a.e.slot)
		}
	}
	p.idx = x
}

// publish stores a new snapshot; p.mu and idxMu are held.
func (p *Pool) publish() {
	s := &snapshot{
		idx:   p.idx,
		slots: make([]*entry, p.nextSlot),
		list:  make([]*entry, len(p.order)),
		byID:  make(map[string]*entry, len(p.order)),
	}
	for i, a := range p.order {
		s.slots[a.e.slot] = a.e
		s.list[i] = a.e
		s.byID[a.e.id] = a.e
	}
	p.snap.Store(s)
}

// setLevel moves e's bit in the index. Only e's actor calls it (or the pool
// before that actor starts).
func (p *Pool) setLevel(e *entry, level int32) {
	if e.level.Load() == level {
		return // only e's actor writes e.level
	}
	p.idxMu.RLock()
	p.setLevelLocked(e, level)
	p.idxMu.RUnlock()
}

func (p *Pool) setLevelLocked(e *entry, level int32) {
	if !e.attached {
		return
	}
	old := e.level.Load()
	if old == level {
		return
	}
	if level != levelNone {
		p.idx.sets[level].add(e.slot) // add first: a reader may see it twice, never zero times
	}
	if old != levelNone {
		p.idx.sets[old].remove(e.slot)
	}
	e.level.Store(level)
}

// Reset clears a cooldown or invalid state at once (and its persisted form).
func (p *Pool) Reset(id string) error {
	p.mu.Lock()
	a, ok := p.actors[id]
	if !ok {
		p.mu.Unlock()
		return fmt.Errorf("reset credential %s: %w", id, ErrUnknownCredential)
	}
	if !a.started {
		a.apply(event{kind: evReset}) // notifies any freed slots
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	ack := make(chan struct{}, 1)
	if a.send(message{kind: msgControl, ctl: &control{ev: event{kind: evReset}, ack: ack}}) {
		select {
		case <-ack:
		case <-a.done:
		}
	}
	return nil
}

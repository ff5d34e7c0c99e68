package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// Config tunes the dispatcher. The zero value means the documented defaults.
type Config struct {
	// MaxAttempts is the most credentials one request tries. Default 5.
	MaxAttempts int
	// RetryDeadline bounds the time one request spends finding a credential
	// (attempts, back-off, queueing), from the start of Do. Each attempt's
	// Call gets a context that ends then, and no attempt starts after it.
	// A Call that runs the upstream request under that context is abandoned
	// at the deadline and counted as a timeout against its credential: the
	// api does so for a stream until it commits (its first event with more
	// than the role and usage: content of any part type, text or not, but
	// not an empty text; a tool call; or a finish reason), so the deadline
	// bounds the time to that event, not to the first text. A non-streamed
	// completion arrives only once the whole answer is generated, which may
	// take minutes, so the api runs it under the request's own context
	// instead: it runs until its answer, the client leaving, or the
	// transport's 5-minute response header timeout (gateway.NewTransport),
	// which counts as a timeout against the credential like any other (and
	// by then the deadline has passed, so the request gets no further
	// attempt). Default 60 s.
	RetryDeadline time.Duration
	// QueueTimeout bounds the time one request waits for a free slot. Default 30 s.
	QueueTimeout time.Duration
	// QueueMax is the most requests waiting at once. Default 1000.
	QueueMax int
	// BackoffBase and BackoffMax are the request's wait before the next
	// credential after a 5xx, transport error, timeout or broken stream:
	// BackoffBase doubling up to BackoffMax. Defaults 0.5 s and 16 s.
	BackoffBase, BackoffMax time.Duration
	// RetryBudgetRatio, RetryBudgetPerSecond and RetryBudgetWindow: retries may
	// not exceed Ratio × requests + PerSecond × window seconds over the last
	// Window. Defaults 0.2, 10 and 10 s.
	RetryBudgetRatio     float64
	RetryBudgetPerSecond float64
	RetryBudgetWindow    time.Duration
	// BusyRetryAfter is the Retry-After given with QueueFull and QueueTimeout. Default 5 s.
	BusyRetryAfter time.Duration
}

// Validate reports a setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.MaxAttempts < 0 || c.QueueMax < 0:
		return errors.New("dispatch: MaxAttempts and QueueMax must not be negative")
	case c.RetryDeadline < 0 || c.QueueTimeout < 0 || c.BusyRetryAfter < 0:
		return errors.New("dispatch: durations must not be negative")
	case c.BackoffBase < 0 || c.BackoffMax < 0:
		return errors.New("dispatch: back-off durations must not be negative")
	case c.BackoffBase > 0 && c.BackoffMax > 0 && c.BackoffMax < c.BackoffBase:
		return errors.New("dispatch: BackoffMax must not be below BackoffBase")
	case c.RetryBudgetRatio < 0 || c.RetryBudgetPerSecond < 0 || c.RetryBudgetWindow < 0:
		return errors.New("dispatch: retry budget settings must not be negative")
	case c.RetryBudgetWindow > 0 && c.RetryBudgetWindow < time.Second:
		return errors.New("dispatch: RetryBudgetWindow must be at least 1 s")
	}
	return nil
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 5
	}
	if c.QueueMax == 0 {
		c.QueueMax = 1000
	}
	def(&c.RetryDeadline, 60*time.Second)
	def(&c.QueueTimeout, 30*time.Second)
	def(&c.BackoffBase, 500*time.Millisecond)
	def(&c.BackoffMax, 16*time.Second)
	c.BackoffMax = max(c.BackoffMax, c.BackoffBase)
	if c.RetryBudgetRatio == 0 {
		c.RetryBudgetRatio = 0.2
	}
	if c.RetryBudgetPerSecond == 0 {
		c.RetryBudgetPerSecond = 10
	}
	def(&c.RetryBudgetWindow, 10*time.Second)
	def(&c.BusyRetryAfter, 5*time.Second)
	return c
}

// Deps are the dispatcher's collaborators. Every field may be nil.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: no metrics
	Now        func() time.Time      // nil: time.Now
}

// Call makes one upstream attempt with cred. nil means the request is
// committed to cred (a 200, and for a stream its first event with content
// parsed). An
// error is classified with Classify (against the request's context: when
// ctx ended at the retry deadline but the request's context did not, the
// attempt counts as OutcomeTimeout even if the call reports a cancellation).
//
// ctx ends at the request's retry deadline and as soon as Call returns.
// Whatever must outlive a committed call (a stream being relayed) must be
// bound to the request's own context, and to ctx only until it commits
// (the api does it with context.AfterFunc(ctx, cancel) and its stop).
type Call func(ctx context.Context, cred pool.Credential) error

// Dispatcher runs each request's attempts over the pool's credentials.
type Dispatcher struct {
	cfg    Config
	pool   *pool.Pool
	log    *slog.Logger
	now    func() time.Time
	q      *queue
	budget *budget
	m      *metrics
}

// New returns a dispatcher over p. It registers a capacity hook with p.
func New(cfg Config, p *pool.Pool, deps Deps) (*Dispatcher, error) {
	if p == nil {
		return nil, errors.New("dispatch: nil pool")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	d := &Dispatcher{
		cfg: cfg, pool: p, log: deps.Logger, now: deps.Now,
		q:      &queue{max: cfg.QueueMax},
		budget: newBudget(cfg.RetryBudgetRatio, cfg.RetryBudgetPerSecond, cfg.RetryBudgetWindow),
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.now == nil {
		d.now = time.Now
	}
	m, err := newMetrics(deps.Registerer, d.q)
	if err != nil {
		return nil, err
	}
	d.m = m
	p.OnCapacity(d.q.notify)
	return d, nil
}

// request is the state of one Do.
type request struct {
	deadline time.Time // RetryDeadline or ctx's deadline, whichever is first
	queueEnd time.Time // set at the first wait
	tried    []string  // credential ids, in order
	attempts int
	backoffs int
	last     error
	lastOut  pool.Outcome
	outcomes uint32    // bit o set: an attempt ended with outcome o
	first403 string    // the credential that answered 403 first
	w        *waiter   // our place in the queue, if any
	queuedAt time.Time // first time queued
}

// Do finds a credential for one request and runs call with it, failing over
// as the rules say, until call commits (returns nil). It then returns the
// committed lease: the caller must call its Done with the final outcome
// and usage. On failure it returns the upstream error itself (a client
// error; a 403 that ends the request: the second one, or the last answer
// when nothing else can be tried) or an *Error.
//
// Each attempt runs under a context that ends at the request's deadline
// (Config.RetryDeadline from the start of Do, or ctx's own deadline if
// sooner) and when the attempt returns: a call that hangs is abandoned at
// the deadline and counted against its credential as OutcomeTimeout.
func (d *Dispatcher) Do(ctx context.Context, call Call) (*pool.Lease, error) {
	start := d.now()
	r := &request{deadline: start.Add(d.cfg.RetryDeadline)}
	if dl, ok := ctx.Deadline(); ok && dl.Before(r.deadline) {
		r.deadline = dl
	}
	d.budget.request(start)
	lease, err := d.do(ctx, call, r)
	if r.w != nil {
		d.q.leave(r.w, false)
	}
	if !r.queuedAt.IsZero() {
		d.m.waitTime.Observe(d.now().Sub(r.queuedAt).Seconds())
	}
	d.m.result(resultOf(err))
	if err == nil && r.attempts > 1 {
		d.m.failovers.Inc()
	}
	return lease, err
}

func (d *Dispatcher) do(ctx context.Context, call Call, r *request) (*pool.Lease, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, canceled(err)
		}
		if r.attempts == 0 && r.queuedAt.IsZero() {
			// A new request: first in, first out. While others wait for a
			// slot it queues behind them instead of leasing.
			w, full := d.q.enter()
			if full {
				return nil, d.queueFull(r)
			}
			if w != nil {
				r.w = w
				d.queued(r)
				if err := d.sleep(ctx, r); err != nil {
					return nil, err
				}
				continue
			}
		}
		epoch := d.pool.Epoch()
		retrying := r.attempts > 0
		var now time.Time
		if retrying {
			// A further attempt is charged to the retry budget here, right
			// before it is made, and refunded if no lease comes of it: a
			// failure that leaves nothing to try costs no budget.
			now = d.now()
			if !d.budget.retry(now) {
				return nil, d.budgetSpent(r)
			}
		}
		lease, err := d.pool.Acquire(r.tried, r.attempts+1)
		if retrying && err != nil {
			d.budget.refund(now)
		}
		if errors.Is(err, pool.ErrBusy) {
			if err := d.wait(ctx, r, epoch); err != nil {
				return nil, err
			}
			continue
		}
		if r.w != nil {
			d.q.leave(r.w, err == nil)
			r.w = nil
		}
		switch {
		case errors.Is(err, pool.ErrUnavailable) && r.attempts > 0:
			return nil, d.giveUp(r, stopNothingLeft)
		case err != nil:
			return nil, d.unavailable(err, r.last)
		}
		r.attempts++
		if r.attempts > 1 {
			d.m.retry(r.lastOut)
		}
		cred := lease.Credential()
		err, timedOut := attempt(ctx, call, lease, r.deadline)
		if err == nil {
			return lease, nil
		}
		o := Classify(ctx, err)
		if timedOut && o == pool.OutcomeCanceled {
			o = pool.OutcomeTimeout // our deadline cut the call, not the client
		}
		lease.Finish(pool.Result{Outcome: o, RetryAfter: pool.RetryAfterOf(err), Err: err})
		switch o {
		case pool.OutcomeClientError:
			return nil, err
		case pool.OutcomeCanceled:
			if cerr := ctx.Err(); cerr != nil {
				return nil, canceled(cerr)
			}
			return nil, canceled(err)
		}
		d.log.Debug("dispatch: attempt failed", "credential", cred.ID, "attempt", r.attempts,
			"outcome", o.String(), "err", err)
		r.last, r.lastOut = err, o
		r.outcomes |= 1 << o
		r.tried = append(r.tried, cred.ID)
		if o == pool.OutcomeForbidden {
			if r.first403 != "" && r.first403 != cred.ID {
				return nil, err // the request itself is refused: never cycle it through the pool
			}
			r.first403 = cred.ID
		}
		if err := d.next(ctx, r); err != nil {
			return nil, err
		}
	}
}

// attempt runs call under a context that ends at deadline and when call
// returns; timedOut reports that the deadline, not ctx, ended it. If call
// panics (http.ErrAbortHandler, a bug), the lease is released without
// penalty before the panic goes on.
func attempt(ctx context.Context, call Call, lease *pool.Lease, deadline time.Time) (err error, timedOut bool) {
	var (
		actx   context.Context
		cancel context.CancelFunc
	)
	if dl, ok := ctx.Deadline(); ok && !dl.After(deadline) {
		actx, cancel = context.WithCancel(ctx) // the client's deadline: no timer of ours to race it
	} else {
		actx, cancel = context.WithDeadline(ctx, deadline)
	}
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			lease.Done(pool.OutcomeCanceled, pool.Usage{})
			panic(r)
		}
	}()
	err = call(actx, lease.Credential())
	timedOut = err != nil && ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded)
	return err, timedOut
}

// next decides whether the request may try another credential, and waits
// the request's back-off where the rules ask for one. The retry budget is
// charged only when the next attempt is made (in do); here it is only
// consulted, so that a request does not wait out a back-off for a retry
// the budget would refuse.
func (d *Dispatcher) next(ctx context.Context, r *request) error {
	if r.attempts >= d.cfg.MaxAttempts {
		return d.giveUp(r, stopAttempts)
	}
	now := d.now()
	if !now.Before(r.deadline) {
		return d.giveUp(r, stopDeadline)
	}
	switch r.lastOut {
	case pool.OutcomeServerError, pool.OutcomeTransport, pool.OutcomeTimeout, pool.OutcomeStreamBroken:
	default:
		return nil // 429, 401, 403: another credential, at once
	}
	wait := d.cfg.BackoffBase << min(r.backoffs, 30)
	if wait <= 0 || wait > d.cfg.BackoffMax {
		wait = d.cfg.BackoffMax
	}
	r.backoffs++
	if now.Add(wait).After(r.deadline) {
		return d.giveUp(r, stopDeadline) // never sleep past the deadline
	}
	if d.pool.Untried(r.tried) == 0 {
		return d.giveUp(r, stopNothingLeft) // nothing left to wait for
	}
	if !d.budget.allows(now) {
		return d.budgetSpent(r) // fail fast, not after the back-off
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return canceled(ctx.Err())
	}
}

// queued starts the request's queue clock (once).
func (d *Dispatcher) queued(r *request) {
	now := d.now()
	if r.queuedAt.IsZero() {
		r.queuedAt = now
	}
	if r.queueEnd.IsZero() {
		r.queueEnd = now.Add(d.cfg.QueueTimeout)
	}
}

// wait keeps the request in the queue after Acquire found every credential
// it may use busy; nil means try Acquire again.
func (d *Dispatcher) wait(ctx context.Context, r *request, epoch uint64) error {
	restricted := len(r.tried) > 0
	if r.w != nil {
		d.q.busy(r.w, restricted)
	} else {
		// At the front for a request that was served before (failing over)
		// or has waited before.
		r.w = d.q.push(r.attempts > 0 || !r.queuedAt.IsZero(), restricted)
		if r.w == nil {
			return d.queueFull(r)
		}
		d.queued(r)
	}
	if d.pool.Epoch() != epoch {
		return nil // capacity freed since our Acquire: try again now, keeping our place
	}
	return d.sleep(ctx, r)
}

// sleep waits for a signal to the request's waiter; nil means try again.
func (d *Dispatcher) sleep(ctx context.Context, r *request) error {
	now := d.now()
	end := r.queueEnd
	if r.deadline.Before(end) {
		end = r.deadline
	}
	if !now.Before(end) {
		return d.queueTimeout(r)
	}
	t := time.NewTimer(end.Sub(now))
	defer t.Stop()
	select {
	case <-r.w.ch:
		return nil
	case <-t.C:
		return d.queueTimeout(r)
	case <-ctx.Done():
		return canceled(ctx.Err())
	}
}

func (d *Dispatcher) queueFull(r *request) *Error {
	return &Error{Kind: QueueFull, RetryAfter: d.cfg.BusyRetryAfter, Last: r.last, Message: fmt.Sprintf(
		"every credential is busy and %d requests are already waiting; retry later", d.cfg.QueueMax)}
}

func (d *Dispatcher) queueTimeout(r *request) *Error {
	return &Error{Kind: QueueTimeout, RetryAfter: d.cfg.BusyRetryAfter, Last: r.last, Message: fmt.Sprintf(
		"every credential stayed busy for %d s; retry later", seconds(d.cfg.QueueTimeout))}
}

func canceled(err error) *Error {
	msg := "the request was canceled"
	if errors.Is(err, context.DeadlineExceeded) {
		msg = "the request's deadline passed"
	}
	return &Error{Kind: Canceled, Message: msg, Last: err}
}

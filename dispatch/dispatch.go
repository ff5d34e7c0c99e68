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
	// (attempts, back-off, queueing), from the start of Do. Default 60 s.
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
// committed to cred (a 200, and for a stream its first event parsed). An
// error is classified with Classify.
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
	first403 string    // the credential that answered 403 first
	w        *waiter   // our place in the queue, if any
	queuedAt time.Time // first time queued
	woken    bool      // popped for a freed slot since the last Acquire
}

// Do finds a credential for one request and runs call with it, failing over
// as the rules say, until call commits (returns nil). It then returns the
// committed lease: the caller must call its Done with the final outcome
// and usage. On failure it returns the upstream error itself (client
// errors; the second 403) or an *Error.
func (d *Dispatcher) Do(ctx context.Context, call Call) (*pool.Lease, error) {
	start := d.now()
	r := &request{deadline: start.Add(d.cfg.RetryDeadline)}
	if dl, ok := ctx.Deadline(); ok && dl.Before(r.deadline) {
		r.deadline = dl
	}
	d.budget.request(start)
	lease, err := d.do(ctx, call, r)
	if r.w != nil {
		d.q.leave(r.w)
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
		epoch := d.pool.Epoch()
		lease, err := d.pool.Acquire(r.tried, r.attempts+1)
		if errors.Is(err, pool.ErrBusy) {
			if err := d.wait(ctx, r, epoch); err != nil {
				return nil, err
			}
			continue
		}
		if r.w != nil {
			d.q.leave(r.w) // found a lease (or the end) while queued
			r.w = nil
		}
		if err != nil {
			return nil, d.unavailable(err, r.attempts, r.last)
		}
		r.attempts++
		if r.attempts > 1 {
			d.m.retry(r.lastOut)
		}
		cred := lease.Credential()
		err = attempt(ctx, call, lease)
		if err == nil {
			return lease, nil
		}
		o := Classify(ctx, err)
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

// attempt runs call; if it panics (http.ErrAbortHandler, a bug), the lease
// is released without penalty before the panic goes on.
func attempt(ctx context.Context, call Call, lease *pool.Lease) error {
	defer func() {
		if r := recover(); r != nil {
			lease.Done(pool.OutcomeCanceled, pool.Usage{})
			panic(r)
		}
	}()
	return call(ctx, lease.Credential())
}

// next decides whether the request may try another credential, and waits
// the request's back-off where the rules ask for one.
func (d *Dispatcher) next(ctx context.Context, r *request) error {
	if r.attempts >= d.cfg.MaxAttempts {
		return d.exhausted(r)
	}
	now := d.now()
	if !now.Before(r.deadline) {
		return d.exhausted(r)
	}
	if !d.budget.retry(now) {
		return &Error{Kind: BudgetExhausted, Last: r.last,
			Message: "the upstream is failing; the retry budget is spent, so the request was not retried"}
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
		return d.exhausted(r) // never sleep past the deadline
	}
	if d.pool.Untried(r.tried) == 0 {
		return d.exhausted(r) // nothing left to wait for
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

// exhausted is the error when attempts or time ran out: AllRateLimited when
// that is the whole story, else UpstreamFailed.
func (d *Dispatcher) exhausted(r *request) *Error {
	if r.lastOut == pool.OutcomeRateLimited || r.lastOut == pool.OutcomeQuotaExhausted {
		if e := d.unavailable(pool.ErrUnavailable, 0, r.last); e.Kind == AllRateLimited {
			return e
		}
	}
	return d.failed(r.attempts, r.last)
}

// wait keeps the request in the queue until a slot may be free; nil means
// try Acquire again.
func (d *Dispatcher) wait(ctx context.Context, r *request, epoch uint64) error {
	now := d.now()
	if r.queueEnd.IsZero() {
		r.queueEnd = now.Add(d.cfg.QueueTimeout)
	}
	end := r.queueEnd
	if r.deadline.Before(end) {
		end = r.deadline
	}
	if !now.Before(end) {
		return d.queueTimeout(r)
	}
	if r.w != nil && d.q.claim(r.w) {
		r.w, r.woken = nil, true // popped since our last try, and it did not help
	}
	if r.woken && len(r.tried) > 0 {
		// The slot that woke us may be on a credential we already tried:
		// let the next waiter have a go at it.
		d.q.wake(1)
	}
	r.woken = false
	if r.w == nil {
		r.w = d.q.push(!r.queuedAt.IsZero())
		if r.w == nil {
			return &Error{Kind: QueueFull, RetryAfter: d.cfg.BusyRetryAfter, Last: r.last, Message: fmt.Sprintf(
				"every credential is busy and %d requests are already waiting; retry later", d.cfg.QueueMax)}
		}
		if r.queuedAt.IsZero() {
			r.queuedAt = now
		}
	}
	if d.pool.Epoch() != epoch {
		return nil // capacity freed since our Acquire: try again now, keeping our place
	}
	t := time.NewTimer(end.Sub(now))
	defer t.Stop()
	select {
	case <-r.w.ch:
		if d.q.claim(r.w) {
			r.w, r.woken = nil, true
		}
		return nil
	case <-t.C:
		return d.queueTimeout(r)
	case <-ctx.Done():
		return canceled(ctx.Err())
	}
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

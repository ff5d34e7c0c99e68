package pool

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// The pool's background loops do the I/O that actors must not do: writing
// cooldowns to the StateStore, running credits checks and writing the
// actors' log lines. Actors hand work over without blocking (a mutex-guarded
// set and a buffered(1) signal, or a bounded channel), so a slow store,
// upstream or log sink never stalls an actor, nor therefore Lease.Done. The
// persist and check sets are bounded by the number of credentials:
// persistence keeps the latest write per credential, and an actor has at
// most one check outstanding. The log queue holds logQueueSize records; when
// it is full a record is dropped and counted (Pool.LogsDropped, the metric
// atlassian_proxy_pool_log_records_dropped_total), and the log loop reports
// the count in a warning once it catches up.

const (
	persistTimeout = 5 * time.Second // one store write
	flushTimeout   = 2 * time.Second // the last writes at shutdown
	persistRetry   = 2 * time.Second // failed writes are tried again this often
	logQueueSize   = 256             // actor log records waiting for the log loop
)

type persistJob struct {
	id  string
	rec store.CredentialState
}

type checkJob struct {
	a   *actor
	gen uint64
}

type background struct {
	mu         sync.Mutex
	persists   map[string]persistJob
	checks     []checkJob
	persistSig chan struct{} // buffered(1)
	checkSig   chan struct{} // buffered(1)
	// persistFailed: the last state write failed (logged once per outage).
	persistFailed atomic.Bool

	logs         chan slog.Record // buffered(logQueueSize); full: drop and count
	logsDropped  atomic.Int64
	logsReported int64 // owned by the log loop (then by Run, after it)
}

func (b *background) init() {
	b.persists = map[string]persistJob{}
	b.persistSig = make(chan struct{}, 1)
	b.checkSig = make(chan struct{}, 1)
	b.logs = make(chan slog.Record, logQueueSize)
}

// enqueueLog hands a log record to the log loop without blocking; when the
// queue is full the record is dropped and counted.
func (p *Pool) enqueueLog(level slog.Level, msg string, attrs ...slog.Attr) {
	if !p.log.Enabled(context.Background(), level) {
		return
	}
	r := slog.NewRecord(time.Now(), level, msg, 0)
	r.AddAttrs(attrs...)
	select {
	case p.bg.logs <- r:
	default:
		p.bg.logsDropped.Add(1)
	}
}

// LogsDropped is the number of actor log records dropped because the log
// queue was full (the log sink could not keep up).
func (p *Pool) LogsDropped() int64 { return p.bg.logsDropped.Load() }

// logLoop writes the actors' log records until ctx is done. Run writes
// what is left (flushLogs) once every actor has stopped.
func (p *Pool) logLoop(ctx context.Context) {
	for {
		select {
		case r := <-p.bg.logs:
			p.writeLog(r)
		case <-ctx.Done():
			return
		}
	}
}

// flushLogs writes the records still queued; no actor may be running.
func (p *Pool) flushLogs() {
	for {
		select {
		case r := <-p.bg.logs:
			p.writeLog(r)
		default:
			return
		}
	}
}

// writeLog writes one record, then reports records dropped since the last
// report. Only the log loop (or Run, after it) calls it.
func (p *Pool) writeLog(r slog.Record) {
	_ = p.log.Handler().Handle(context.Background(), r)
	if n := p.bg.logsDropped.Load(); n > p.bg.logsReported {
		p.log.Warn("pool: the log queue was full; log records were dropped", "dropped", n-p.bg.logsReported)
		p.bg.logsReported = n
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (b *background) persist(j persistJob) {
	b.mu.Lock()
	b.persists[j.id] = j
	b.mu.Unlock()
	signal(b.persistSig)
}

func (b *background) dropPersist(id string) {
	b.mu.Lock()
	delete(b.persists, id)
	b.mu.Unlock()
}

func (b *background) takePersists() map[string]persistJob {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.persists) == 0 {
		return nil
	}
	jobs := b.persists
	b.persists = map[string]persistJob{}
	return jobs
}

func (b *background) requeue(jobs map[string]persistJob) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, j := range jobs {
		if _, newer := b.persists[id]; !newer {
			b.persists[id] = j
		}
	}
}

func (b *background) check(j checkJob) {
	b.mu.Lock()
	b.checks = append(b.checks, j)
	b.mu.Unlock()
	signal(b.checkSig)
}

func (b *background) takeCheck() (checkJob, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.checks) == 0 {
		return checkJob{}, false
	}
	j := b.checks[0]
	b.checks[0] = checkJob{}
	b.checks = b.checks[1:]
	return j, true
}

// persistLoop writes states until ctx is done, then flushes what is left
// within flushTimeout. Each write has its own timeout and is not cut short
// by ctx: a state that was decided is written if the store answers.
func (p *Pool) persistLoop(ctx context.Context) {
	// Writes that failed (the store was away) are tried again every
	// persistRetry: other replicas learn of cooldowns and recoveries
	// only from the store.
	retry := time.NewTicker(persistRetry)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
			p.writeStates(fctx, nil)
			cancel()
			return
		case <-p.bg.persistSig:
		case <-retry.C:
		}
		p.writeStates(context.WithoutCancel(ctx), ctx.Done())
	}
}

// writeStates writes the pending states. When stop closes, the ones not
// yet written go back to the pending set (unless a newer one is there).
func (p *Pool) writeStates(ctx context.Context, stop <-chan struct{}) {
	jobs := p.bg.takePersists()
	for id, j := range jobs {
		select {
		case <-stop:
			p.bg.requeue(jobs)
			return
		default:
		}
		delete(jobs, id)
		if ctx.Err() != nil {
			continue // the final flush ran out of time
		}
		wctx, cancel := context.WithTimeout(ctx, persistTimeout)
		err := p.deps.States.SetCredentialState(wctx, j.rec)
		cancel()
		switch {
		case err == nil:
			p.bg.persistFailed.Store(false)
		case errors.Is(err, store.ErrNotFound): // the credential was removed meanwhile
		default:
			// Once per outage in the log; kept to be tried again (unless a
			// newer state of the credential is waiting by then).
			if !p.bg.persistFailed.Swap(true) {
				p.log.Warn("pool: persisting a credential state failed; will retry", "credential", id, "err", err)
			}
			p.bg.requeue(map[string]persistJob{id: j})
		}
	}
}

// checkLoop runs credits checks, at most Config.CheckConcurrency at once,
// until ctx is done and the running ones have returned.
func (p *Pool) checkLoop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	finished := make(chan struct{}, p.cfg.CheckConcurrency)
	running := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.bg.checkSig:
		case <-finished:
			running--
		}
		for running < p.cfg.CheckConcurrency {
			j, ok := p.bg.takeCheck()
			if !ok {
				break
			}
			running++
			wg.Go(func() {
				p.runCheck(ctx, j)
				finished <- struct{}{}
			})
		}
	}
}

func (p *Pool) runCheck(ctx context.Context, j checkJob) {
	cred := *j.a.e.cred.Load()
	cctx, cancel := context.WithTimeout(ctx, p.cfg.CheckTimeout)
	o, err := p.deps.Checker.Check(cctx, cred)
	cancel()
	if ctx.Err() != nil {
		return
	}
	p.m.check(o)
	p.log.Info("pool: credits check", "credential", cred.ID, "outcome", o.String(), "err", safeErrorText(err, cred))
	ev := event{kind: evCheck, outcome: o, gen: j.gen, retryAfter: RetryAfterOf(err)}
	if o != OutcomeSuccess {
		ev.err = safeErrorText(err, cred)
	}
	select {
	case j.a.mailbox <- message{kind: msgControl, ctl: &control{ev: ev}}:
	case <-j.a.done:
	case <-ctx.Done():
	}
}

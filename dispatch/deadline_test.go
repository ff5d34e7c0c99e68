package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// hang is a call that never answers: it returns what ctx's end makes of
// it, as an HTTP client does (wrapped) or as a call that only sees its own
// cancellation does (context.Canceled).
func hang(asCanceled bool) Call {
	return func(ctx context.Context, _ pool.Credential) error {
		<-ctx.Done()
		if asCanceled {
			return fmt.Errorf("upstream stream: %w", context.Canceled)
		}
		return fmt.Errorf("read response: %w", ctx.Err())
	}
}

// TestRetryDeadlineBoundsAnAttempt: an attempt that hangs is abandoned at
// the request's retry deadline and counted against its credential as a
// timeout; the client's own cancel or deadline is no credential's fault.
func TestRetryDeadlineBoundsAnAttempt(t *testing.T) {
	const deadline = 10 * time.Second
	tests := []struct {
		name     string
		errs     []error // answers before the hang
		call     Call
		ctxLimit time.Duration // the client's own deadline
		cancelAt time.Duration // the client leaves
		elapsed  time.Duration
		kind     Kind
		msg      string // part of the message
		// the credential that hung, and its state afterwards: the reason
		// of its cooldown, or "" for ready without a failure
		hung, reason string
	}{
		{name: "hang is abandoned at the deadline", call: hang(false), elapsed: deadline,
			kind: UpstreamFailed, msg: "the upstream failed on 1 attempt; the last did not answer within the 10 s retry deadline", hung: "c00", reason: "timeout"},
		{name: "reported as a cancel, still a timeout", call: hang(true), elapsed: deadline,
			kind: UpstreamFailed, msg: "did not answer within the 10 s retry deadline", hung: "c00", reason: "timeout"},
		{name: "deadline counts from the start of Do", errs: []error{fail(pool.OutcomeServerError)}, call: hang(false),
			elapsed: deadline, kind: UpstreamFailed, msg: "the upstream failed on 2 attempts; the last did not answer", hung: "c01", reason: "timeout"},
		{name: "client cancel: no penalty", call: hang(false), cancelAt: 3 * time.Second, elapsed: 3 * time.Second,
			kind: Canceled, msg: "the request was canceled", hung: "c00"},
		{name: "client deadline sooner: no penalty", call: hang(false), ctxLimit: 4 * time.Second, elapsed: 4 * time.Second,
			kind: Canceled, msg: "the request's deadline passed", hung: "c00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEnv(t, specs(3, 4), Config{RetryDeadline: deadline}, Deps{})
				ctx := t.Context()
				if tt.ctxLimit > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.ctxLimit)
					defer cancel()
				}
				if tt.cancelAt > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithCancel(ctx)
					time.AfterFunc(tt.cancelAt, cancel)
				}
				n := 0
				call := func(ctx context.Context, c pool.Credential) error {
					n++
					if n <= len(tt.errs) {
						return tt.errs[n-1]
					}
					return tt.call(ctx, c)
				}
				begin := time.Now()
				_, err := e.d.Do(ctx, call)
				if got := time.Since(begin); got != tt.elapsed {
					t.Errorf("elapsed: got %v, want %v", got, tt.elapsed)
				}
				var de *Error
				if !errors.As(err, &de) || de.Kind != tt.kind || !strings.Contains(de.Message, tt.msg) {
					t.Fatalf("got %v, want %v saying %q", err, tt.kind, tt.msg)
				}
				synctest.Wait()
				st := e.status(t, tt.hung)
				switch {
				case tt.reason == "" && (st.State != pool.StateReady || st.Failures != 0):
					t.Errorf("%s: got %s with %d failures, want ready with none", tt.hung, st.State, st.Failures)
				case tt.reason != "" && (st.State != pool.StateCooling || st.Reason != tt.reason || st.Failures != 1):
					t.Errorf("%s: got %s (%s) with %d failures, want cooling (%s) after 1", tt.hung, st.State, st.Reason, st.Failures, tt.reason)
				}
				if tt.kind == UpstreamFailed && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
					t.Errorf("got %v, want the hung attempt's error as Last", err)
				}
			})
		})
	}
}

// TestCommittedLeaseOutlivesTheDeadline: the attempt's context carries the
// retry deadline, but a call that detaches what it commits to (as the api's
// streams do) keeps it after Do returns, past the deadline; the lease is
// the caller's until Done, without penalty.
func TestCommittedLeaseOutlivesTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const deadline = 10 * time.Second
		e := newEnv(t, specs(1, 4), Config{RetryDeadline: deadline}, Deps{})
		ctx := t.Context()
		begin := time.Now()
		var (
			stream  context.Context
			attempt context.Context
		)
		lease, err := e.d.Do(ctx, func(dctx context.Context, _ pool.Credential) error {
			if dl, ok := dctx.Deadline(); !ok || !dl.Equal(begin.Add(deadline)) {
				t.Errorf("attempt deadline: got %v (%v), want %v", dl, ok, begin.Add(deadline))
			}
			attempt = dctx
			sctx, scancel := context.WithCancel(ctx)
			detach := context.AfterFunc(dctx, scancel)
			time.Sleep(2 * time.Second) // the upstream's 200 and first event
			if !detach() {
				scancel()
				return dctx.Err()
			}
			stream = sctx
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if attempt.Err() == nil {
			t.Error("the attempt's context is still live after Do returned, want it ended")
		}
		time.Sleep(time.Minute) // the stream goes on past the retry deadline
		if stream.Err() != nil {
			t.Fatalf("the committed stream ended with %v at %v, want it live", stream.Err(), time.Since(begin))
		}
		if st := e.status(t, "c00"); st.InFlight != 1 {
			t.Errorf("in flight: got %d, want the committed lease", st.InFlight)
		}
		lease.Done(pool.OutcomeSuccess, pool.Usage{OutputTokens: 100})
		if st := e.status(t, "c00"); st.State != pool.StateReady || st.Failures != 0 || st.InFlight != 0 || st.OutputTokens != 100 {
			t.Errorf("c00: got %+v, want ready, no failure, the tokens counted", st)
		}
	})
}

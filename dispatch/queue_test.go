package dispatch

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// served records who got a lease, in order, and when.
type served struct {
	mu    sync.Mutex
	order []string
	at    map[string]time.Duration
	begin time.Time
}

func newServed() *served { return &served{at: map[string]time.Duration{}, begin: time.Now()} }

func (s *served) add(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.order = append(s.order, name)
	if _, ok := s.at[name]; !ok {
		s.at[name] = time.Since(s.begin)
	}
}

func (s *served) when(name string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.at[name]
}

func (s *served) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprint(s.order)
}

func TestQueueIsFair(t *testing.T) {
	t.Run("a queued waiter is served before a later arrival", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t, specs(1, 1), Config{}, Deps{})
			synctest.Wait()
			holder, err := e.d.Do(t.Context(), (&script{}).call)
			if err != nil {
				t.Fatal(err)
			}
			got := newServed()
			var wg sync.WaitGroup
			defer wg.Wait()
			wg.Go(func() {
				l, err := e.d.Do(t.Context(), (&script{}).call)
				if err != nil {
					t.Error(err)
					return
				}
				got.add("waiter")
				time.Sleep(time.Second)
				l.Done(pool.OutcomeSuccess, pool.Usage{})
			})
			synctest.Wait() // the waiter is queued
			// The slot frees and a new request arrives at once, before the
			// woken waiter has had a chance to run.
			holder.Done(pool.OutcomeSuccess, pool.Usage{})
			l, err := e.d.Do(t.Context(), (&script{}).call)
			if err != nil {
				t.Fatal(err)
			}
			got.add("newcomer")
			l.Done(pool.OutcomeSuccess, pool.Usage{})
			if got.String() != "[waiter newcomer]" || got.when("newcomer") != time.Second {
				t.Errorf("served %v, the newcomer at %v; want the waiter first and the newcomer once it is done (1s)", got, got.when("newcomer"))
			}
		})
	})
	t.Run("a client that releases and re-requests does not starve a waiter", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t, specs(1, 1), Config{QueueTimeout: time.Minute}, Deps{})
			synctest.Wait()
			got := newServed()
			var wg sync.WaitGroup
			defer wg.Wait()
			first := make(chan struct{})
			wg.Go(func() { // a busy client: lease, 100 ms of work, release, again
				for i := range 5 {
					l, err := e.d.Do(t.Context(), (&script{}).call)
					if err != nil {
						t.Error(err)
						return
					}
					got.add(fmt.Sprintf("busy%d", i))
					if i == 0 {
						close(first)
					}
					time.Sleep(100 * time.Millisecond)
					l.Done(pool.OutcomeSuccess, pool.Usage{})
				}
			})
			<-first
			synctest.Wait()
			wg.Go(func() {
				l, err := e.d.Do(t.Context(), (&script{}).call)
				if err != nil {
					t.Error(err)
					return
				}
				got.add("waiter")
				time.Sleep(50 * time.Millisecond)
				l.Done(pool.OutcomeSuccess, pool.Usage{})
			})
			wg.Wait()
			if want := "[busy0 waiter busy1 busy2 busy3 busy4]"; got.String() != want {
				t.Errorf("served %v, want %s", got, want)
			}
			if got.when("waiter") != 100*time.Millisecond {
				t.Errorf("the waiter was served after %v, want 100ms (the first release)", got.when("waiter"))
			}
		})
	})
	t.Run("a newcomer gets a slot the waiters ahead cannot use", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newEnv(t, specs(2, 1), Config{}, Deps{})
			synctest.Wait()
			h1, err := e.d.Do(t.Context(), (&script{}).call) // c00: moves the cursor on
			if err != nil {
				t.Fatal(err)
			}
			h1.Done(pool.OutcomeSuccess, pool.Usage{})
			got := newServed()
			var wg sync.WaitGroup
			defer wg.Wait()
			run := func(name string, sc *script, hold time.Duration) {
				wg.Go(func() {
					l, err := e.d.Do(t.Context(), sc.call)
					if err != nil {
						t.Errorf("%s: %v", name, err)
						return
					}
					got.add(name + ":" + l.Credential().ID)
					time.Sleep(hold)
					l.Done(pool.OutcomeSuccess, pool.Usage{})
				})
				synctest.Wait()
			}
			// H holds c01 for 10 s. A gets a 429 for 1 s on c00 and queues
			// for c01, the only credential it has not tried.
			run("H", &script{}, 10*time.Second)
			run("A", &script{errs: []error{&upErr{pool.OutcomeRateLimited, time.Second}}}, 0)
			// c00 is ready again at 1 s, and nobody who waits can use it.
			time.Sleep(2 * time.Second)
			synctest.Wait()
			// B arrives: it queues behind A (first in, first out), but A
			// cannot use c00, so B gets it at once rather than at 10 s.
			run("B", &script{}, 0)
			if got.when("B:c00") != 2*time.Second {
				t.Errorf("served %v, B on c00 at %v; want B on c00 at 2s", got, got.when("B:c00"))
			}
			time.Sleep(8 * time.Second)
			synctest.Wait()
			if want := "[H:c01 B:c00 A:c01]"; got.String() != want {
				t.Errorf("served %v, want %s", got, want)
			}
		})
	})
	t.Run("more slots than waiters: later arrivals are served at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			// One credential with limit 4, all taken; one request waits.
			// All four slots free at once: the waiter is woken once, and
			// two requests arriving meanwhile queue behind it but must not
			// wait for the next release: the turn is passed on.
			e := newEnv(t, specs(1, 4), Config{}, Deps{})
			synctest.Wait()
			full := make([]*pool.Lease, 4)
			for i := range full {
				l, err := e.d.Do(t.Context(), (&script{}).call)
				if err != nil {
					t.Fatal(err)
				}
				full[i] = l
			}
			got := newServed()
			var wg sync.WaitGroup
			defer wg.Wait()
			req := func(name string) {
				wg.Go(func() {
					l, err := e.d.Do(t.Context(), (&script{}).call)
					if err != nil {
						t.Error(err)
						return
					}
					got.add(name)
					time.Sleep(time.Hour)
					l.Done(pool.OutcomeSuccess, pool.Usage{})
				})
			}
			req("waiter")
			synctest.Wait()
			for _, l := range full {
				l.Done(pool.OutcomeSuccess, pool.Usage{})
			}
			req("late1")
			req("late2")
			synctest.Wait()
			for _, name := range []string{"waiter", "late1", "late2"} {
				if d := got.when(name); d != 0 || !strings.Contains(got.String(), name) {
					t.Errorf("%s: served %v after %v, want at once", name, got, d)
				}
			}
		})
	})
}

// TestQueueTurns covers the queue's bookkeeping directly.
func TestQueueTurns(t *testing.T) {
	signaled := func(ws ...*waiter) string {
		s := ""
		for _, w := range ws {
			select {
			case <-w.ch:
				s += "1"
			default:
				s += "0"
			}
		}
		return s
	}
	q := &queue{max: 10}
	if w, full := q.enter(); w != nil || full {
		t.Fatalf("enter on an empty queue: got %v %v, want nil false", w, full)
	}
	a := q.push(false, true) // restricted, asleep
	b, _ := q.enter()        // joins behind: A gets a turn (it may not use a free slot)
	if got := signaled(a, b); got != "10" || !a.woken || q.woken != 1 {
		t.Fatalf("after B entered: signals %s, woken %v/%d; want A's turn", got, a.woken, q.woken)
	}
	q.busy(a, true) // A found nothing: its turn goes on to B
	if got := signaled(a, b); got != "01" || a.woken || !b.woken || q.woken != 1 {
		t.Fatalf("after A's try: signals %s; want B's turn", got)
	}
	c, _ := q.enter() // a turn is out: no new turn
	if got := signaled(a, b, c); got != "000" {
		t.Fatalf("after C entered: signals %s, want none", got)
	}
	q.leave(b, true) // B served, the last turn out: one goes on, from the front
	if got := signaled(a, c); got != "10" || q.woken != 1 {
		t.Fatalf("after B was served: signals %s, want A's turn", got)
	}
	q.busy(a, true) // A passes it on to C
	q.busy(c, false)
	if got := signaled(a, c); got != "01" || q.woken != 0 {
		t.Fatalf("after A and C tried: signals %s, woken %d; want C signaled, no turn out", got, q.woken)
	}
	q.notify(5) // more slots than waiters: each gets one turn
	if got := signaled(a, c); got != "11" || q.woken != 2 {
		t.Fatalf("after notify(5): signals %s, woken %d", got, q.woken)
	}
	q.leave(a, false) // timed out with a turn: it goes on (C has one already, nobody else)
	q.leave(c, true)
	if q.len() != 0 || q.woken != 0 || q.restricted != 0 {
		t.Errorf("empty queue: len %d, woken %d, restricted %d; want 0", q.len(), q.woken, q.restricted)
	}
	if w, full := q.enter(); w != nil || full {
		t.Errorf("enter on an empty queue again: got %v %v", w, full)
	}
	// Full.
	q = &queue{max: 1}
	q.push(false, false)
	if w, full := q.enter(); w != nil || !full {
		t.Errorf("enter on a full queue: got %v %v, want nil true", w, full)
	}
}

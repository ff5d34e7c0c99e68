package dispatch

import (
	"container/list"
	"sync"
)

// queue is the FIFO of requests waiting for a free slot. It holds no
// goroutine: the pool's OnCapacity hook drives it. When n slots free up,
// wake pops n waiters from the front; each tries to lease by itself and, if
// it loses the race, queues again at the front. When usable credentials
// become unusable (n == 0), broadcast nudges every waiter in place (no
// change of order) to check whether waiting still makes sense.
//
// Lost wake-ups are ruled out in three ways: a waiter re-reads the pool's
// epoch after queueing and retries at once when it moved (capacity freed
// between its failed Acquire and its push); a waiter that leaves (timeout,
// cancel, or a lease found after a nudge) after being popped passes the
// wake-up to the next one; and a popped waiter that cannot use the slot
// because it already tried that credential passes it on too (see wait).
type queue struct {
	mu  sync.Mutex
	l   list.List // of *waiter
	max int
}

type waiter struct {
	ch    chan struct{} // buffered(1): a signal, sent without blocking
	elem  *list.Element // nil once out of the list; guarded by queue.mu
	woken bool          // popped by wake, not yet claimed; guarded by queue.mu
}

// push queues a new waiter (at the front for a request that waited before);
// nil when the queue is full.
func (q *queue) push(front bool) *waiter {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.l.Len() >= q.max {
		return nil
	}
	w := &waiter{ch: make(chan struct{}, 1)}
	if front {
		w.elem = q.l.PushFront(w)
	} else {
		w.elem = q.l.PushBack(w)
	}
	return w
}

// wake pops up to n waiters from the front and signals them.
func (q *queue) wake(n int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.wakeLocked(n)
}

func (q *queue) wakeLocked(n int) {
	for ; n > 0; n-- {
		e := q.l.Front()
		if e == nil {
			return
		}
		w := q.l.Remove(e).(*waiter)
		w.elem, w.woken = nil, true
		signal(w.ch)
	}
}

// broadcast signals every waiter, leaving the queue as it is.
func (q *queue) broadcast() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for e := q.l.Front(); e != nil; e = e.Next() {
		signal(e.Value.(*waiter).ch)
	}
}

// notify is the pool's OnCapacity hook.
func (q *queue) notify(n int) {
	if n > 0 {
		q.wake(n)
	} else {
		q.broadcast()
	}
}

// claim reports whether w was popped by wake (and takes that wake-up).
func (q *queue) claim(w *waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.elem == nil && w.woken {
		w.woken = false
		return true
	}
	return false
}

// leave takes w out of the queue; a wake-up it received but will not use
// goes to the next waiter.
func (q *queue) leave(w *waiter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.elem != nil {
		q.l.Remove(w.elem)
		w.elem = nil
		return
	}
	if w.woken {
		w.woken = false
		q.wakeLocked(1)
	}
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.l.Len()
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

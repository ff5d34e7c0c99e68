package dispatch

import (
	"container/list"
	"sync"
)

// queue is the FIFO of requests waiting for a free slot. It holds no
// goroutine: the pool's OnCapacity hook wakes waiters from the front, one
// per freed slot, and each waiter then tries to lease by itself.
//
// Lost wake-ups are ruled out in two ways: a waiter re-reads the pool's
// epoch after queueing itself and retries at once when it moved (capacity
// freed between its failed Acquire and its push), and a waiter that leaves
// (timeout, cancel) after being woken passes the wake-up to the next one.
type queue struct {
	mu  sync.Mutex
	l   list.List // of *waiter
	max int
}

type waiter struct {
	ch    chan struct{} // buffered(1): the wake-up
	elem  *list.Element // nil once popped
	woken bool          // popped by wake; guarded by queue.mu
}

func newWaiter() *waiter { return &waiter{ch: make(chan struct{}, 1)} }

// push queues w (at the front for a waiter that already waited); false when full.
func (q *queue) push(w *waiter, front bool) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.l.Len() >= q.max {
		return false
	}
	if front {
		w.elem = q.l.PushFront(w)
	} else {
		w.elem = q.l.PushBack(w)
	}
	return true
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
		w.ch <- struct{}{}
	}
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

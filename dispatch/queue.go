package dispatch

import (
	"container/list"
	"sync"
	"sync/atomic"
)

// queue is the FIFO of requests waiting for a free slot. It holds no
// goroutine: the pool's OnCapacity hook and the waiters themselves drive it.
//
// Order. A waiter keeps its place in the list until it leaves (served,
// timed out, canceled or failed). A new request does not lease while anyone
// waits: it joins the back (enter), so it cannot overtake a waiter that a
// freed slot has just woken. When n slots free up, the first n waiters not
// already woken get the turn (woken): each tries to lease by itself. A
// waiter that loses its try (every credential it may use is busy) stays
// where it is and waits for the next turn.
//
// Passing the turn on. Waiters differ in what they may use: one failing
// over excludes the credentials it tried ("restricted"), so a slot can be
// free that the head of the queue cannot take. The turn therefore moves on
// down the list:
//   - a restricted waiter that holds the turn and finds nothing passes it
//     to the next waiter behind it; an unrestricted one that finds nothing
//     stops the chain (nobody could have done better);
//   - a waiter served with the turn passes one on when no other turn is out
//     (a slot may be left, e.g. when more slots freed than waiters were
//     woken, and newer requests queued instead of leasing it);
//   - a waiter that leaves with an unused turn passes it on;
//   - a request that joins behind restricted waiters while no turn is out
//     gives the head a turn, so that a slot they cannot use goes to it.
//
// When usable credentials become unusable (n == 0), broadcast nudges every
// waiter in place to check whether waiting still makes sense; such a check
// may lease a slot out of turn (rare: capacity has just shrunk).
//
// Lost wake-ups are also ruled out for the window between a failed lease
// and queueing: the waiter re-reads the pool's epoch after queueing and
// tries again at once when it moved.
type queue struct {
	mu         sync.Mutex
	l          list.List // of *waiter, in order of arrival (failing-over requests at the front)
	n          atomic.Int32
	max        int
	woken      int // waiters in l holding the turn
	restricted int // waiters in l that exclude credentials
}

type waiter struct {
	ch         chan struct{} // buffered(1): a signal, sent without blocking
	elem       *list.Element // nil once out of the list; guarded by queue.mu
	woken      bool          // holds the turn; guarded by queue.mu
	restricted bool          // excludes credentials; guarded by queue.mu
}

// enter queues a new request behind the waiters, if there are any: nil
// means nobody waits (lease at once). full reports a full queue.
func (q *queue) enter() (w *waiter, full bool) {
	if q.n.Load() == 0 {
		return nil, false // nobody waits: the common case, without the lock
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.l.Len() == 0 {
		return nil, false
	}
	if w = q.pushLocked(false, false); w == nil {
		return nil, true
	}
	if q.woken == 0 && q.restricted > 0 {
		q.wakeLocked(q.l.Front(), 1)
	}
	return w, false
}

// push queues a request that found every credential busy (at the front
// for one that was served or queued before); nil when the queue is full.
func (q *queue) push(front, restricted bool) *waiter {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pushLocked(front, restricted)
}

func (q *queue) pushLocked(front, restricted bool) *waiter {
	if q.l.Len() >= q.max {
		return nil
	}
	w := &waiter{ch: make(chan struct{}, 1), restricted: restricted}
	if front {
		w.elem = q.l.PushFront(w)
	} else {
		w.elem = q.l.PushBack(w)
	}
	if restricted {
		q.restricted++
	}
	q.n.Store(int32(q.l.Len()))
	return w
}

// busy records that w's try found every credential it may use busy: w
// keeps its place; a turn it held is used up, and passed on if w is
// restricted (see queue).
func (q *queue) busy(w *waiter, restricted bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.elem == nil {
		return
	}
	if restricted != w.restricted {
		w.restricted = restricted
		if restricted {
			q.restricted++
		} else {
			q.restricted--
		}
	}
	if w.woken {
		w.woken = false
		q.woken--
		if w.restricted {
			q.wakeLocked(w.elem.Next(), 1)
		}
	}
}

// leave takes w out of the queue; served reports whether it leased a slot.
// A turn it held goes on as the queue's comment says.
func (q *queue) leave(w *waiter, served bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.elem == nil {
		return
	}
	q.l.Remove(w.elem)
	w.elem = nil
	q.n.Store(int32(q.l.Len()))
	if w.restricted {
		q.restricted--
	}
	if w.woken {
		w.woken = false
		q.woken--
		if !served || q.woken == 0 {
			q.wakeLocked(q.l.Front(), 1)
		}
	}
}

// wakeLocked gives the turn to up to n waiters from e on that do not hold
// it yet.
func (q *queue) wakeLocked(e *list.Element, n int) {
	for ; e != nil && n > 0; e = e.Next() {
		w := e.Value.(*waiter)
		if w.woken {
			continue
		}
		w.woken = true
		q.woken++
		signal(w.ch)
		n--
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
	if n <= 0 {
		q.broadcast()
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.wakeLocked(q.l.Front(), n)
}

func (q *queue) len() int { return int(q.n.Load()) }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

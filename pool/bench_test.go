package pool

import (
	"errors"
	"fmt"
	"runtime"
	"testing"
)

// BenchmarkPick measures choosing a credential from the snapshot (what
// Acquire does before its one admission message), with 10 to 10,000
// credentials:
//   - idle: nothing in flight, every credential ties at level 0;
//   - sparse: all but 0.1% (at least one) have a request in flight, so the
//     least-loaded ones are few and far apart in the index;
//   - exclude4: idle, with four credentials excluded (a request failing over).
func BenchmarkPick(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		for _, load := range []string{"idle", "sparse", "exclude4"} {
			b.Run(fmt.Sprintf("n=%d/%s", n, load), func(b *testing.B) {
				p := newPool(b, Config{}, Deps{})
				p.Sync(specs(n, 4), nil)
				start(b, p)
				settle(b, p)
				var exclude []string
				switch load {
				case "sparse":
					for range n - max(1, n/1000) {
						mustAcquire(b, p)
					}
				case "exclude4":
					exclude = []string{"c000", "c001", "c002", "c003"}
				}
				s := p.snap.Load()
				for b.Loop() {
					e := s.pick(int(p.cursor.Load()%uint64(len(s.slots))), exclude, nil)
					p.cursor.Store(uint64(e.slot + 1))
				}
			})
		}
	}
}

// BenchmarkAcquire is a whole lease round trip: pick, admission message to
// the actor and its reply, then Done (the outcome message).
func BenchmarkAcquire(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			p := newPool(b, Config{}, Deps{})
			p.Sync(specs(n, 4), nil)
			start(b, p)
			settle(b, p)
			for b.Loop() {
				l, err := p.Acquire(nil, 1)
				for errors.Is(err, ErrBusy) { // outcomes not yet counted
					runtime.Gosched()
					l, err = p.Acquire(nil, 1)
				}
				if err != nil {
					b.Fatal(err)
				}
				l.Done(OutcomeSuccess, Usage{})
			}
		})
	}
}

// BenchmarkAdmit is Acquire alone: the pick and the admission message to
// the chosen actor with its reply (the "picking": a snapshot read,
// then one admission message). Leases are held and released in batches
// with the timer stopped (each stop reads the memory statistics: about
// 0.1 µs per acquisition at worst, included in the figure), with a limit
// of 16 per credential so that at most 12 are in flight on one.
func BenchmarkAdmit(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			const limit = 16
			p := newPool(b, Config{}, Deps{})
			p.Sync(specs(n, limit), nil)
			start(b, p)
			settle(b, p)
			batch := min(n*limit*3/4, 4096)
			held := make([]*Lease, 0, batch)
			release := func() {
				for _, l := range held {
					l.Done(OutcomeSuccess, Usage{})
				}
				held = held[:0]
			}
			for b.Loop() {
				if len(held) == batch {
					b.StopTimer()
					release()
					b.StartTimer()
				}
				l, err := p.Acquire(nil, 1)
				if err != nil {
					b.Fatal(err)
				}
				held = append(held, l)
			}
			release()
		})
	}
}

// BenchmarkSyncUnchanged is a resync (the syncer runs one whenever the store
// changes) of 10,000 running credentials whose specs did not change: it must
// not message the actors nor rebuild the snapshot.
func BenchmarkSyncUnchanged(b *testing.B) {
	for _, n := range []int{10, 10000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			p := newPool(b, Config{}, Deps{})
			sp := specs(n, 4)
			p.Sync(sp, nil)
			start(b, p)
			settle(b, p)
			b.ReportAllocs()
			for b.Loop() {
				p.Sync(sp, nil)
			}
		})
	}
}

package pool

import (
	"math/bits"
	"sync/atomic"
)

// The pick index. Every credential has a stable slot number. For each
// in-flight level there is a bitset over slots: bit i of set L is on when the
// credential in slot i is enabled, ready, below its limit and has L requests
// in flight (levels ≥ numLevels-1 share the last set); set levelFull holds
// the ready credentials at their limit. A credential's actor moves its own
// bit (atomic Or/And, add-before-remove, so a reader never misses it) and
// nothing else.
//
// A pick scans the sets from level 0 for the first non-empty one (an atomic
// count per set) and, within it, the first set bit at or after a shared
// round-robin cursor. Each set has a summary word per 64 words, so finding
// the next set bit reads at most one word plus ⌈slots/4096⌉ summary words:
// a pick costs the same with 10 credentials as with 10,000.
//
// The index is a hint: the actor's admission is the truth. A stale bit costs
// one refused admission and another pick.

const (
	numLevels = 32        // exact least-in-flight up to 30 in flight
	levelFull = numLevels // ready, but at its limit
	levelNone = -1        // not pickable: disabled, cooling, invalid or removed
	numSets   = numLevels + 1
)

type bitset struct {
	words []atomic.Uint64
	sums  []atomic.Uint64 // bit w%64 of sums[w/64]: words[w] may be non-zero
	count atomic.Int64
}

type index struct {
	slots int // capacity, a multiple of 4096
	sets  [numSets]bitset
}

const indexGrain = 64 * 64

func newIndex(capacity int) *index {
	capacity = max(indexGrain, (capacity+indexGrain-1)/indexGrain*indexGrain)
	x := &index{slots: capacity}
	for i := range x.sets {
		x.sets[i].words = make([]atomic.Uint64, capacity/64)
		x.sets[i].sums = make([]atomic.Uint64, capacity/indexGrain)
	}
	return x
}

func (b *bitset) add(slot int) {
	w := slot >> 6
	b.words[w].Or(1 << (slot & 63))
	b.sums[w>>6].Or(1 << (w & 63))
	b.count.Add(1)
}

func (b *bitset) remove(slot int) {
	w := slot >> 6
	bit := uint64(1) << (slot & 63)
	if old := b.words[w].And(^bit); old&^bit == 0 {
		sbit := uint64(1) << (w & 63)
		b.sums[w>>6].And(^sbit)
		// A concurrent add may have set a bit in words[w] after our And and
		// its summary bit before our clear: restore the summary bit then.
		if b.words[w].Load() != 0 {
			b.sums[w>>6].Or(sbit)
		}
	}
	b.count.Add(-1)
}

// next returns the first set slot in [from, to), or -1.
func (b *bitset) next(from, to int) int {
	if from >= to {
		return -1
	}
	w := from >> 6
	if v := b.words[w].Load() & (^uint64(0) << (from & 63)); v != 0 {
		if s := w<<6 + bits.TrailingZeros64(v); s < to {
			return s
		}
		return -1
	}
	w++
	last := (to - 1) >> 6 // last word to look at
	for sw := w >> 6; sw <= last>>6 && sw < len(b.sums); sw++ {
		sum := b.sums[sw].Load()
		if sw == w>>6 {
			sum &= ^uint64(0) << (w & 63)
		}
		for sum != 0 {
			wi := sw<<6 + bits.TrailingZeros64(sum)
			if wi > last {
				return -1
			}
			if v := b.words[wi].Load(); v != 0 {
				if s := wi<<6 + bits.TrailingZeros64(v); s < to {
					return s
				}
				return -1
			}
			sum &= sum - 1 // a stale summary bit
		}
	}
	return -1
}

// snapshot is the pool's published, immutable view: read lock-free by every
// pick, replaced (copy on write) by Sync. The index it points to is shared
// and updated in place by the actors.
type snapshot struct {
	idx   *index
	slots []*entry          // by slot; nil where free
	list  []*entry          // in Sync order, for Status
	byID  map[string]*entry // for exclusions and Reset
}

// pick returns the least-loaded pickable entry at or after the cursor,
// skipping excluded IDs and entries already refused during this Acquire.
func (s *snapshot) pick(cursor int, exclude []string, skip []*entry) *entry {
	for l := range numLevels {
		b := &s.idx.sets[l]
		if b.count.Load() <= 0 {
			continue
		}
		if e := s.scan(b, cursor, exclude, skip); e != nil {
			return e
		}
	}
	return nil
}

func (s *snapshot) scan(b *bitset, start int, exclude []string, skip []*entry) *entry {
	n := min(s.idx.slots, len(s.slots))
	start = min(start, n)
	for _, span := range [2][2]int{{start, n}, {0, start}} {
		for i := b.next(span[0], span[1]); i >= 0; i = b.next(i+1, span[1]) {
			e := s.slots[i]
			if e == nil || skipped(e, exclude, skip) {
				continue
			}
			return e
		}
	}
	return nil
}

func skipped(e *entry, exclude []string, skip []*entry) bool {
	for _, x := range skip {
		if x == e {
			return true
		}
	}
	for _, id := range exclude {
		if id == e.id {
			return true
		}
	}
	return false
}

// busy reports whether a ready, non-excluded credential is at its limit, so
// that a slot will free up without any cooldown ending.
func (s *snapshot) busy(exclude []string) bool {
	full := s.idx.sets[levelFull].count.Load()
	for _, id := range exclude {
		if e := s.byID[id]; e != nil && e.level.Load() == levelFull {
			full--
		}
	}
	return full > 0
}

package pool

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestBitsetMatchesModel drives a bitset with random adds and removes and
// compares next() with a plain []bool on every query.
func TestBitsetMatchesModel(t *testing.T) {
	for _, capacity := range []int{64, 4096, 3 * 4096} {
		t.Run(fmt.Sprint(capacity), func(t *testing.T) {
			x := newIndex(capacity)
			b := &x.sets[0]
			n := x.slots
			model := make([]bool, n)
			r := rand.New(rand.NewPCG(1, uint64(capacity)))
			count := 0
			for step := range 20000 {
				i := r.IntN(n)
				if model[i] {
					b.remove(i)
					count--
				} else {
					b.add(i)
					count++
				}
				model[i] = !model[i]
				from := r.IntN(n + 1)
				to := from + r.IntN(n-from+1)
				want := -1
				for j := from; j < to; j++ {
					if model[j] {
						want = j
						break
					}
				}
				if got := b.next(from, to); got != want {
					t.Fatalf("step %d: next(%d, %d) = %d, want %d", step, from, to, got, want)
				}
				if got := b.count.Load(); got != int64(count) {
					t.Fatalf("step %d: count %d, want %d", step, got, count)
				}
			}
		})
	}
}

func TestPickPrefersLowerLevels(t *testing.T) {
	x := newIndex(0)
	s := &snapshot{idx: x, slots: make([]*entry, 100), byID: map[string]*entry{}}
	for i := range s.slots {
		e := &entry{id: fmt.Sprint(i), slot: i}
		s.slots[i] = e
		s.byID[e.id] = e
	}
	x.sets[2].add(5)
	x.sets[1].add(70)
	x.sets[1].add(90)
	x.sets[levelFull].add(3)
	tests := []struct {
		cursor  int
		exclude []string
		want    string
	}{
		{0, nil, "70"},
		{71, nil, "90"},
		{91, nil, "70"}, // wraps around
		{0, []string{"70"}, "90"},
		{0, []string{"70", "90"}, "5"},
		{0, []string{"70", "90", "5"}, "<nil>"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("cursor=%d/exclude=%v", tt.cursor, tt.exclude), func(t *testing.T) {
			got := "<nil>"
			if e := s.pick(tt.cursor, tt.exclude, nil); e != nil {
				got = e.id
			}
			if got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
	if !s.busy(nil) {
		t.Error("busy: slot 3 is full, want true")
	}
	s.slots[3].level.Store(levelFull)
	if s.busy([]string{"3"}) {
		t.Error("busy with the full one excluded: want false")
	}
}

package storetest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// usage builds a row with distinct counts derived from n.
func usage(day, cred, tok, model string, n int64) store.Usage {
	return store.Usage{
		Day: day, CredentialID: cred, TokenID: tok, Model: model,
		Requests: n, Failures: n / 2, InputTokens: 100 * n, OutputTokens: 10 * n,
	}
}

// plus returns the row a with the counts of b added.
func plus(a, b store.Usage) store.Usage {
	a.Requests += b.Requests
	a.Failures += b.Failures
	a.InputTokens += b.InputTokens
	a.OutputTokens += b.OutputTokens
	return a
}

func normUsage(u store.Usage) store.Usage { return u }

func listUsage(t *testing.T, s store.Store, from, to string) []store.Usage {
	t.Helper()
	got, err := s.ListUsage(t.Context(), from, to)
	must(t, fmt.Sprintf("ListUsage(%s, %s)", from, to), err)
	return got
}

func testUsage(t *testing.T, open func(t *testing.T) store.Store) {
	const (
		d1 = "2025-03-13"
		d2 = "2025-03-14"
		d3 = "2025-03-15"
	)

	t.Run("Empty", func(t *testing.T) {
		s := open(t)
		if got := listUsage(t, s, "0001-01-01", "9999-12-31"); len(got) != 0 {
			t.Errorf("ListUsage on an empty store = %+v, want none", got)
		}
		must(t, "AddUsage(nil)", s.AddUsage(t.Context(), nil))
		must(t, "AddUsage(empty)", s.AddUsage(t.Context(), []store.Usage{}))
		if got := listUsage(t, s, "0001-01-01", "9999-12-31"); len(got) != 0 {
			t.Errorf("ListUsage after empty batches = %+v, want none", got)
		}
	})

	t.Run("Accumulates", func(t *testing.T) {
		s := open(t)
		a := usage(d2, "c1", "t1", "m1", 3)
		b := usage(d2, "c1", "t1", "m1", 5)
		b.Failures = 0
		must(t, "AddUsage", s.AddUsage(t.Context(), []store.Usage{a}))
		checkRecords(t, "ListUsage after one row", listUsage(t, s, d2, d2), []store.Usage{a}, normUsage)
		must(t, "AddUsage again", s.AddUsage(t.Context(), []store.Usage{b}))
		checkRecords(t, "ListUsage after two rows", listUsage(t, s, d2, d2), []store.Usage{plus(a, b)}, normUsage)
		// Several rows with one key in one batch add up too.
		must(t, "AddUsage batch", s.AddUsage(t.Context(), []store.Usage{a, a, b}))
		want := plus(plus(plus(plus(a, b), a), a), b)
		checkRecords(t, "ListUsage after a batch", listUsage(t, s, d2, d2), []store.Usage{want}, normUsage)
	})

	t.Run("LargeCounts", func(t *testing.T) {
		s := open(t)
		big := store.Usage{Day: d1, TokenID: "t1", Model: "m1",
			Requests: 1 << 40, Failures: 1<<40 - 1, InputTokens: 1<<53 + 1, OutputTokens: 1 << 61}
		must(t, "AddUsage", s.AddUsage(t.Context(), []store.Usage{big}))
		must(t, "AddUsage", s.AddUsage(t.Context(), []store.Usage{{Day: d1, TokenID: "t1", Model: "m1", InputTokens: 2}}))
		big.InputTokens += 2
		checkRecords(t, "ListUsage", listUsage(t, s, d1, d1), []store.Usage{big}, normUsage)
	})

	t.Run("KeysSeparate", func(t *testing.T) {
		s := open(t)
		// Each row differs from the first in one part of the key (or in
		// how its parts split the same characters), so none may merge.
		rows := []store.Usage{
			usage(d2, "c1", "t1", "m1", 1),
			usage(d1, "c1", "t1", "m1", 2),
			usage(d2, "c2", "t1", "m1", 3),
			usage(d2, "c1", "t2", "m1", 4),
			usage(d2, "c1", "t1", "m2", 5),
			usage(d2, "", "t1", "m1", 6),   // no credential served it
			usage(d2, "c", "1t1", "m1", 7), // the same characters, split otherwise
			usage(d2, "c1t", "1", "m1", 8),
			usage(d2, "c1", "t1m", "1", 9),
			usage(d2, "c1:t1", "", "m1", 10), // separators a backend might use
			usage(d2, "c1", ":t1", "m1", 11),
			usage(d2, "c1\x00", "t1", "m1", 12),
			usage(d2, "C1", "t1", "m1", 13), // ids are case-sensitive
			usage(d2, "c1", "t1", "", 14),
		}
		must(t, "AddUsage", s.AddUsage(t.Context(), rows))
		got := listUsage(t, s, d1, d3)
		if len(got) != len(rows) {
			t.Fatalf("ListUsage = %d rows, want %d:%s", len(got), len(rows), lines(got))
		}
		for _, want := range rows {
			found := false
			for _, g := range got {
				if g == want {
					found = true
				}
			}
			if !found {
				t.Errorf("row %+v missing or merged; got%s", want, lines(got))
			}
		}
	})

	t.Run("RangeAndOrder", func(t *testing.T) {
		s := open(t)
		days := []string{"2024-12-31", "2025-01-01", "2025-01-02", "2025-01-10", "2025-02-01"}
		var rows []store.Usage
		for i, d := range days {
			rows = append(rows,
				usage(d, "c2", "t1", "m1", int64(10*i+1)),
				usage(d, "c1", "t2", "m1", int64(10*i+2)),
				usage(d, "c1", "t1", "m2", int64(10*i+3)),
				usage(d, "c1", "t1", "m1", int64(10*i+4)),
				usage(d, "", "t9", "m9", int64(10*i+5)),
			)
		}
		// Added in a random order, listed in key order.
		shuffled := append([]store.Usage(nil), rows...)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		must(t, "AddUsage", s.AddUsage(t.Context(), shuffled))
		sorted := func(days ...string) []store.Usage {
			var out []store.Usage
			for _, d := range days {
				for _, r := range rows {
					if r.Day != d {
						continue
					}
					out = append(out, r)
				}
			}
			// Per day: "", then c1 (t1 m1, t1 m2, t2 m1), then c2.
			for i := 0; i < len(out); i += 5 {
				slices.Reverse(out[i : i+5])
			}
			return out
		}
		tests := []struct {
			name     string
			from, to string
			want     []store.Usage
		}{
			{"everything", "0001-01-01", "9999-12-31", sorted(days...)},
			{"exact bounds", "2024-12-31", "2025-02-01", sorted(days...)},
			{"bounds included", "2025-01-01", "2025-01-10", sorted("2025-01-01", "2025-01-02", "2025-01-10")},
			{"one day", "2025-01-02", "2025-01-02", sorted("2025-01-02")},
			{"across a year", "2024-12-01", "2025-01-01", sorted("2024-12-31", "2025-01-01")},
			{"between days", "2025-01-03", "2025-01-09", nil},
			{"before everything", "2024-01-01", "2024-12-30", nil},
			{"after everything", "2025-02-02", "2026-01-01", nil},
			{"reversed", "2025-02-01", "2024-12-31", nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				checkRecords(t, "ListUsage", listUsage(t, s, tt.from, tt.to), tt.want, normUsage)
			})
		}
	})

	t.Run("InvalidDay", func(t *testing.T) {
		s := open(t)
		for _, day := range []string{"", "2025-3-14", "2025/03/14", "2025-02-30", "14-03-2025", "2025-03-14T00:00:00Z", "today"} {
			t.Run(fmt.Sprintf("%q", day), func(t *testing.T) {
				// The valid row before the invalid one is not written either.
				err := s.AddUsage(t.Context(), []store.Usage{usage(d2, "c1", "t1", "m1", 1), usage(day, "c1", "t1", "m1", 1)})
				if err == nil {
					t.Errorf("AddUsage with day %q = nil, want an error", day)
				}
				if _, err := s.ListUsage(t.Context(), day, d3); err == nil {
					t.Errorf("ListUsage(%q, %q) = nil error, want one", day, d3)
				}
				if _, err := s.ListUsage(t.Context(), d1, day); err == nil {
					t.Errorf("ListUsage(%q, %q) = nil error, want one", d1, day)
				}
				if got := listUsage(t, s, "0001-01-01", "9999-12-31"); len(got) != 0 {
					t.Errorf("ListUsage after a rejected batch = %+v, want none", got)
				}
			})
		}
	})

	t.Run("ConcurrentAdds", func(t *testing.T) {
		s := open(t)
		const (
			workers = 16
			each    = 25
		)
		shared := usage(d2, "c1", "t1", "m1", 0)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				own := usage(d2, "c1", fmt.Sprintf("t-%02d", w), "m1", 0)
				for i := range each {
					rows := []store.Usage{
						{Day: d2, CredentialID: "c1", TokenID: "t1", Model: "m1", Requests: 1, Failures: int64(i % 2), InputTokens: 10, OutputTokens: int64(w)},
						{Day: own.Day, CredentialID: own.CredentialID, TokenID: own.TokenID, Model: own.Model, Requests: 1, InputTokens: int64(i)},
					}
					if err := s.AddUsage(t.Context(), rows); err != nil {
						t.Errorf("worker %d: AddUsage: %v", w, err)
						return
					}
				}
			})
		}
		wg.Wait()
		var want []store.Usage // "t-00" ... "t-15" sort before "t1"
		for w := range workers {
			want = append(want, store.Usage{Day: d2, CredentialID: "c1", TokenID: fmt.Sprintf("t-%02d", w), Model: "m1",
				Requests: each, InputTokens: each * (each - 1) / 2})
		}
		shared.Requests = workers * each
		shared.Failures = workers * (each / 2)
		shared.InputTokens = workers * each * 10
		shared.OutputTokens = each * (workers * (workers - 1) / 2)
		want = append(want, shared)
		checkRecords(t, "ListUsage after concurrent adds", listUsage(t, s, d2, d2), want, normUsage)
	})
}

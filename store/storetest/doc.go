// Package storetest is the conformance suite of store.Store: the executable
// specification every backend (store/sqlite, store/redis) must pass.
//
// A backend's test calls Run with a function that opens a new, empty store
// on a real instance (a file in t.TempDir(), a real redis-server) and
// arranges for it to be closed with t.Cleanup:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "proxy.db"))
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// The suite uses fixed times with millisecond precision, so a backend may
// keep times to the millisecond; it expects them back equal (time.Equal),
// and the zero time back as the zero time. Expiry of cooling states is
// judged against the wall clock, with margins of an hour ("invalid" and
// "ready" states never expire). Usage days are fixed dates: a backend that
// expires usage must count from the last write, not from the day. Several
// subtests write from many goroutines and expect exact results.
package storetest

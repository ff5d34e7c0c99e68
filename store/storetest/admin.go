package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

func testAdminPassword(t *testing.T, open func(t *testing.T) store.Store) {
	first := store.AdminPassword{Hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$first", MustChange: true, UpdatedAt: at(0)}
	second := store.AdminPassword{Hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$second", MustChange: false, UpdatedAt: at(time.Hour)}

	get := func(t *testing.T, s store.Store) store.AdminPassword {
		t.Helper()
		p, err := s.AdminPassword(t.Context())
		must(t, "AdminPassword", err)
		return p
	}

	t.Run("NeverSet", func(t *testing.T) {
		s := open(t)
		_, err := s.AdminPassword(t.Context())
		wantErr(t, "AdminPassword on an empty store", err, store.ErrNotFound)
	})

	t.Run("InitWhenAbsent", func(t *testing.T) {
		s := open(t)
		set, err := s.InitAdminPassword(t.Context(), first)
		must(t, "InitAdminPassword", err)
		if !set {
			t.Error("InitAdminPassword on an empty store = false, want true")
		}
		checkRecord(t, "AdminPassword", get(t, s), first, normPassword)
	})

	t.Run("InitWhenPresent", func(t *testing.T) {
		s := open(t)
		must(t, "SetAdminPassword", s.SetAdminPassword(t.Context(), first))
		set, err := s.InitAdminPassword(t.Context(), second)
		must(t, "InitAdminPassword", err)
		if set {
			t.Error("InitAdminPassword with a password present = true, want false")
		}
		checkRecord(t, "AdminPassword", get(t, s), first, normPassword)
	})

	t.Run("InitConcurrent", func(t *testing.T) {
		s := open(t)
		const callers = 16
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			won  []string
			errs []error
		)
		for i := range callers {
			p := store.AdminPassword{Hash: fmt.Sprintf("hash-%02d", i), MustChange: true, UpdatedAt: at(time.Duration(i) * time.Millisecond)}
			wg.Go(func() {
				set, err := s.InitAdminPassword(t.Context(), p)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				}
				if set {
					won = append(won, p.Hash)
				}
			})
		}
		wg.Wait()
		for _, err := range errs {
			t.Errorf("InitAdminPassword: %v", err)
		}
		if len(won) != 1 {
			t.Fatalf("InitAdminPassword winners = %v, want exactly one", won)
		}
		if got := get(t, s); got.Hash != won[0] {
			t.Errorf("stored hash = %q, want the winner's %q", got.Hash, won[0])
		}
	})

	t.Run("Set", func(t *testing.T) {
		s := open(t)
		must(t, "SetAdminPassword (absent)", s.SetAdminPassword(t.Context(), first))
		checkRecord(t, "AdminPassword after the first SetAdminPassword", get(t, s), first, normPassword)
		must(t, "SetAdminPassword (present)", s.SetAdminPassword(t.Context(), second))
		checkRecord(t, "AdminPassword after the second SetAdminPassword", get(t, s), second, normPassword)
	})
}

func testSessions(t *testing.T, open func(t *testing.T) store.Store) {
	session := func(n int) store.Session {
		return store.Session{
			ID:         fmt.Sprintf("%064x", n), // SHA-256 hex of a cookie
			CSRFToken:  fmt.Sprintf("csrf-%d", n),
			CreatedAt:  at(time.Duration(n) * time.Minute),
			LastSeenAt: at(time.Duration(n) * time.Minute),
		}
	}
	getMissing := func(t *testing.T, s store.Store, id, what string) {
		t.Helper()
		_, err := s.GetSession(t.Context(), id)
		wantErr(t, what, err, store.ErrNotFound)
	}

	t.Run("CreateGet", func(t *testing.T) {
		s := open(t)
		want := session(1)
		want.LastSeenAt = at(90 * time.Second)
		must(t, "CreateSession", s.CreateSession(t.Context(), want))
		got, err := s.GetSession(t.Context(), want.ID)
		must(t, "GetSession", err)
		checkRecord(t, "GetSession", got, want, normSession)
	})

	t.Run("GetMissing", func(t *testing.T) {
		s := open(t)
		must(t, "CreateSession", s.CreateSession(t.Context(), session(1)))
		getMissing(t, s, session(2).ID, "GetSession(missing)")
	})

	t.Run("Duplicate", func(t *testing.T) {
		s := open(t)
		orig := session(1)
		must(t, "CreateSession", s.CreateSession(t.Context(), orig))
		dup := orig
		dup.CSRFToken = "other"
		wantErr(t, "CreateSession(same id)", s.CreateSession(t.Context(), dup), store.ErrDuplicate)
		got, err := s.GetSession(t.Context(), orig.ID)
		must(t, "GetSession", err)
		checkRecord(t, "GetSession after a duplicate", got, orig, normSession)
	})

	t.Run("EmptyIDRejected", func(t *testing.T) {
		s := open(t)
		sess := session(1)
		sess.ID = ""
		if err := s.CreateSession(t.Context(), sess); err == nil {
			t.Error("CreateSession with an empty id = nil, want an error")
		}
	})

	t.Run("Touch", func(t *testing.T) {
		s := open(t)
		orig := session(1)
		must(t, "CreateSession", s.CreateSession(t.Context(), orig))
		must(t, "TouchSession", s.TouchSession(t.Context(), orig.ID, at(time.Hour)))
		want := orig
		want.LastSeenAt = at(time.Hour)
		got, err := s.GetSession(t.Context(), orig.ID)
		must(t, "GetSession", err)
		checkRecord(t, "GetSession after TouchSession", got, want, normSession)
		wantErr(t, "TouchSession(missing)", s.TouchSession(t.Context(), session(2).ID, at(time.Hour)), store.ErrNotFound)
		getMissing(t, s, session(2).ID, "GetSession after TouchSession(missing)")
	})

	t.Run("Delete", func(t *testing.T) {
		s := open(t)
		s1, s2 := session(1), session(2)
		must(t, "CreateSession", s.CreateSession(t.Context(), s1))
		must(t, "CreateSession", s.CreateSession(t.Context(), s2))
		must(t, "DeleteSession", s.DeleteSession(t.Context(), s1.ID))
		getMissing(t, s, s1.ID, "GetSession after DeleteSession")
		if _, err := s.GetSession(t.Context(), s2.ID); err != nil {
			t.Errorf("GetSession of the other session: %v", err)
		}
		if err := s.DeleteSession(t.Context(), s1.ID); err != nil {
			t.Errorf("DeleteSession of an absent session = %v, want nil", err)
		}
	})

	t.Run("DeleteBefore", func(t *testing.T) {
		s := open(t)
		deleteBefore := func(t *testing.T, cutoff time.Time, want int) {
			t.Helper()
			n, err := s.DeleteSessionsBefore(t.Context(), cutoff)
			must(t, "DeleteSessionsBefore", err)
			if n != want {
				t.Errorf("DeleteSessionsBefore(%v) = %d, want %d", cutoff, n, want)
			}
		}
		deleteBefore(t, at(time.Hour), 0) // empty store

		cutoff := at(time.Hour)
		mk := func(n int, lastSeen time.Time) store.Session {
			sess := session(n)
			sess.CreatedAt = at(0)
			sess.LastSeenAt = lastSeen
			return sess
		}
		old := mk(1, cutoff.Add(-2*time.Hour))
		justBefore := mk(2, cutoff.Add(-time.Millisecond))
		exactly := mk(3, cutoff) // not before the cutoff: kept
		later := mk(4, cutoff.Add(time.Hour))
		touched := mk(5, cutoff.Add(-3*time.Hour)) // touched after the cutoff below: kept
		for _, sess := range []store.Session{old, justBefore, exactly, later, touched} {
			must(t, "CreateSession", s.CreateSession(t.Context(), sess))
		}
		must(t, "TouchSession", s.TouchSession(t.Context(), touched.ID, cutoff.Add(time.Minute)))
		touched.LastSeenAt = cutoff.Add(time.Minute)

		deleteBefore(t, cutoff, 2)
		getMissing(t, s, old.ID, "GetSession of a session idle before the cutoff")
		getMissing(t, s, justBefore.ID, "GetSession of a session last seen 1ms before the cutoff")
		for _, want := range []store.Session{exactly, later, touched} {
			got, err := s.GetSession(t.Context(), want.ID)
			must(t, "GetSession of a kept session", err)
			checkRecord(t, "GetSession of a kept session", got, want, normSession)
		}
		deleteBefore(t, cutoff, 0) // nothing left to delete

		// The deleted ids are free again; a later cutoff takes the rest.
		must(t, "CreateSession of a deleted id", s.CreateSession(t.Context(), old))
		deleteBefore(t, cutoff.Add(2*time.Hour), 4)
		for _, sess := range []store.Session{old, exactly, later, touched} {
			getMissing(t, s, sess.ID, "GetSession after DeleteSessionsBefore of everything")
		}
	})

	t.Run("DeleteBeforeMany", func(t *testing.T) {
		s := open(t)
		const total, idle = 60, 45
		for i := range total {
			must(t, "CreateSession", s.CreateSession(t.Context(), session(i)))
		}
		n, err := s.DeleteSessionsBefore(t.Context(), session(idle).LastSeenAt)
		must(t, "DeleteSessionsBefore", err)
		if n != idle {
			t.Errorf("DeleteSessionsBefore = %d, want %d", n, idle)
		}
		for i := range total {
			_, err := s.GetSession(t.Context(), session(i).ID)
			if i < idle {
				wantErr(t, fmt.Sprintf("GetSession(%d) of a deleted session", i), err, store.ErrNotFound)
			} else if err != nil {
				t.Errorf("GetSession(%d) of a kept session: %v", i, err)
			}
		}
	})

	t.Run("DeleteAll", func(t *testing.T) {
		s := open(t)
		if err := s.DeleteAllSessions(t.Context()); err != nil {
			t.Errorf("DeleteAllSessions on an empty store = %v, want nil", err)
		}
		for i := range 3 {
			must(t, "CreateSession", s.CreateSession(t.Context(), session(i)))
		}
		must(t, "DeleteAllSessions", s.DeleteAllSessions(t.Context()))
		for i := range 3 {
			getMissing(t, s, session(i).ID, "GetSession after DeleteAllSessions")
		}
		// New sessions work afterwards.
		must(t, "CreateSession after DeleteAllSessions", s.CreateSession(t.Context(), session(1)))
	})
}

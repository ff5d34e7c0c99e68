package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

func testCredentials(t *testing.T, open func(t *testing.T) store.Store) {
	t.Run("EmptyList", func(t *testing.T) {
		s := open(t)
		if got := listCredentials(t, s); len(got) != 0 {
			t.Errorf("ListCredentials() on an empty store = %d records, want 0", len(got))
		}
	})

	t.Run("CreateGet", func(t *testing.T) {
		s := open(t)
		want := store.Credential{
			ID:             "cred_1",
			Email:          "Alice@Example.com",
			Token:          []byte{0x00, 0xff, 0x10, 0x80, 's', 'e', 'a', 'l'},
			CloudID:        "3f2d4c1e-0000-4000-8000-000000000001",
			Label:          "team A",
			Enabled:        true,
			MaxConcurrency: 7,
			CreatedAt:      at(0),
			UpdatedAt:      at(time.Minute),
		}
		must(t, "CreateCredential", s.CreateCredential(t.Context(), want))
		got, err := s.GetCredential(t.Context(), want.ID)
		must(t, "GetCredential", err)
		checkRecord(t, "GetCredential", got, want, normCredential)
		checkRecords(t, "ListCredentials", listCredentials(t, s), []store.Credential{want}, normCredential)
	})

	t.Run("ZeroValues", func(t *testing.T) {
		s := open(t)
		want := store.Credential{ID: "cred_zero", Email: "z@example.com"}
		must(t, "CreateCredential", s.CreateCredential(t.Context(), want))
		got, err := s.GetCredential(t.Context(), want.ID)
		must(t, "GetCredential", err)
		checkRecord(t, "GetCredential", got, want, normCredential)
		if !got.CreatedAt.IsZero() || !got.UpdatedAt.IsZero() {
			t.Errorf("zero times came back as %v, %v; want zero", got.CreatedAt, got.UpdatedAt)
		}
	})

	t.Run("ListOrder", func(t *testing.T) {
		s := open(t)
		// Created out of order; two share a creation time and sort by id.
		creds := []store.Credential{
			credential("c3", "c3@example.com", 2*time.Second),
			credential("c2b", "c2b@example.com", time.Second),
			credential("c1", "c1@example.com", 0),
			credential("c2a", "c2a@example.com", time.Second),
			credential("c0", "c0@example.com", 3*time.Second),
		}
		for _, c := range creds {
			must(t, "CreateCredential "+c.ID, s.CreateCredential(t.Context(), c))
		}
		want := []store.Credential{creds[2], creds[3], creds[1], creds[0], creds[4]}
		checkRecords(t, "ListCredentials", listCredentials(t, s), want, normCredential)
	})

	t.Run("Duplicates", func(t *testing.T) {
		existing := credential("c1", "alice@example.com", 0)
		existing.CloudID = "cloud-1"
		tests := []struct {
			name string
			c    store.Credential
			err  error // nil: accepted
		}{
			{"same id", credential("c1", "bob@example.com", time.Second), store.ErrDuplicate},
			{"same email and cloud id", func() store.Credential {
				c := credential("c2", "alice@example.com", time.Second)
				c.CloudID = "cloud-1"
				return c
			}(), store.ErrDuplicate},
			{"same email in another case", func() store.Credential {
				c := credential("c2", "ALICE@Example.COM", time.Second)
				c.CloudID = "cloud-1"
				return c
			}(), store.ErrDuplicate},
			{"same email, another cloud id", func() store.Credential {
				c := credential("c2", "alice@example.com", time.Second)
				c.CloudID = "cloud-2"
				return c
			}(), nil},
			{"same email, no cloud id", credential("c2", "alice@example.com", time.Second), nil},
			{"another email, same cloud id", func() store.Credential {
				c := credential("c2", "bob@example.com", time.Second)
				c.CloudID = "cloud-1"
				return c
			}(), nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := open(t)
				must(t, "CreateCredential existing", s.CreateCredential(t.Context(), existing))
				err := s.CreateCredential(t.Context(), tt.c)
				if tt.err == nil {
					must(t, "CreateCredential", err)
					if got := listCredentials(t, s); len(got) != 2 {
						t.Errorf("credentials = %d, want 2", len(got))
					}
					return
				}
				wantErr(t, "CreateCredential", err, tt.err)
				// Nothing was written: the existing record is intact and alone.
				checkRecords(t, "ListCredentials after a duplicate", listCredentials(t, s),
					[]store.Credential{existing}, normCredential)
			})
		}
	})

	t.Run("EmptyIDRejected", func(t *testing.T) {
		s := open(t)
		if err := s.CreateCredential(t.Context(), credential("", "a@example.com", 0)); err == nil {
			t.Error("CreateCredential with an empty id = nil, want an error")
		}
		if got := listCredentials(t, s); len(got) != 0 {
			t.Errorf("credentials = %d, want 0", len(got))
		}
	})

	t.Run("GetMissing", func(t *testing.T) {
		s := open(t)
		must(t, "CreateCredential", s.CreateCredential(t.Context(), credential("c1", "a@example.com", 0)))
		_, err := s.GetCredential(t.Context(), "c2")
		wantErr(t, "GetCredential(missing)", err, store.ErrNotFound)
	})

	t.Run("Update", func(t *testing.T) {
		s := open(t)
		orig := credential("c1", "a@example.com", 0)
		other := credential("c2", "b@example.com", time.Second)
		must(t, "CreateCredential", s.CreateCredential(t.Context(), orig))
		must(t, "CreateCredential", s.CreateCredential(t.Context(), other))

		upd := store.Credential{
			ID:             "c1",
			Email:          "A.New@Example.com",
			Token:          []byte("resealed"),
			CloudID:        "cloud-9",
			Label:          "renamed",
			Enabled:        false,
			MaxConcurrency: 2,
			CreatedAt:      at(time.Hour), // ignored: creation time never changes
			UpdatedAt:      at(5 * time.Minute),
		}
		must(t, "UpdateCredential", s.UpdateCredential(t.Context(), upd))
		want := upd
		want.CreatedAt = orig.CreatedAt
		got, err := s.GetCredential(t.Context(), "c1")
		must(t, "GetCredential", err)
		checkRecord(t, "GetCredential after UpdateCredential", got, want, normCredential)
		checkRecords(t, "ListCredentials after UpdateCredential", listCredentials(t, s),
			[]store.Credential{want, other}, normCredential)

		// Changing only the case of its own email is not a duplicate.
		upd.Email = "a.new@example.com"
		must(t, "UpdateCredential (email case)", s.UpdateCredential(t.Context(), upd))
	})

	t.Run("UpdateMissing", func(t *testing.T) {
		s := open(t)
		err := s.UpdateCredential(t.Context(), credential("nope", "a@example.com", 0))
		wantErr(t, "UpdateCredential(missing)", err, store.ErrNotFound)
		if got := listCredentials(t, s); len(got) != 0 {
			t.Errorf("credentials after updating a missing one = %d, want 0", len(got))
		}
	})

	t.Run("UpdateDuplicate", func(t *testing.T) {
		s := open(t)
		c1 := credential("c1", "a@example.com", 0)
		c2 := credential("c2", "b@example.com", time.Second)
		must(t, "CreateCredential", s.CreateCredential(t.Context(), c1))
		must(t, "CreateCredential", s.CreateCredential(t.Context(), c2))
		upd := c2
		upd.Email = "A@EXAMPLE.COM"
		upd.Label = "changed"
		wantErr(t, "UpdateCredential to another's email", s.UpdateCredential(t.Context(), upd), store.ErrDuplicate)
		checkRecords(t, "ListCredentials after a failed update", listCredentials(t, s),
			[]store.Credential{c1, c2}, normCredential)
	})

	t.Run("Delete", func(t *testing.T) {
		s := open(t)
		c1 := credential("c1", "a@example.com", 0)
		c2 := credential("c2", "b@example.com", time.Second)
		must(t, "CreateCredential", s.CreateCredential(t.Context(), c1))
		must(t, "CreateCredential", s.CreateCredential(t.Context(), c2))
		must(t, "DeleteCredential", s.DeleteCredential(t.Context(), "c1"))
		_, err := s.GetCredential(t.Context(), "c1")
		wantErr(t, "GetCredential after DeleteCredential", err, store.ErrNotFound)
		checkRecords(t, "ListCredentials after DeleteCredential", listCredentials(t, s),
			[]store.Credential{c2}, normCredential)
		wantErr(t, "DeleteCredential again", s.DeleteCredential(t.Context(), "c1"), store.ErrNotFound)
		// The id and the email are free again.
		must(t, "CreateCredential after DeleteCredential", s.CreateCredential(t.Context(), c1))
	})

	t.Run("DeleteClearsState", func(t *testing.T) {
		s := open(t)
		must(t, "CreateCredential", s.CreateCredential(t.Context(), credential("c1", "a@example.com", 0)))
		must(t, "CreateCredential", s.CreateCredential(t.Context(), credential("c2", "b@example.com", 0)))
		for _, id := range []string{"c1", "c2"} {
			must(t, "SetCredentialState "+id, s.SetCredentialState(t.Context(), store.CredentialState{
				CredentialID: id, State: "invalid", Reason: "unauthorized", UpdatedAt: base,
			}))
		}
		must(t, "DeleteCredential", s.DeleteCredential(t.Context(), "c1"))
		got := listStates(t, s)
		if len(got) != 1 || got[0].CredentialID != "c2" {
			t.Errorf("states after DeleteCredential(c1) = %+v, want only c2's", got)
		}
		// A credential created again under the same id starts clean.
		must(t, "CreateCredential again", s.CreateCredential(t.Context(), credential("c1", "a@example.com", 0)))
		if got := listStates(t, s); len(got) != 1 {
			t.Errorf("states after re-creating c1 = %+v, want only c2's", got)
		}
	})
}

func testCredentialStates(t *testing.T, open func(t *testing.T) store.Store) {
	// States expire against the wall clock, so these times are relative to
	// now, with wide margins, at millisecond precision.
	now := time.Now().UTC().Truncate(time.Millisecond)
	future, past := now.Add(time.Hour), now.Add(-time.Hour)

	setup := func(t *testing.T, ids ...string) store.Store {
		t.Helper()
		s := open(t)
		for i, id := range ids {
			must(t, "CreateCredential "+id, s.CreateCredential(t.Context(),
				credential(id, id+"@example.com", time.Duration(i)*time.Second)))
		}
		return s
	}

	t.Run("EmptyList", func(t *testing.T) {
		s := setup(t, "c1")
		if got := listStates(t, s); len(got) != 0 {
			t.Errorf("ListCredentialStates() = %+v, want none", got)
		}
	})

	t.Run("SetList", func(t *testing.T) {
		s := setup(t, "c3", "c1", "c4", "c2")
		states := []store.CredentialState{
			{CredentialID: "c3", State: "cooling", Reason: "rate_limited", Until: future, UpdatedAt: at(0)},
			{CredentialID: "c1", State: "invalid", Reason: "unauthorized", UpdatedAt: at(time.Second)},
			{CredentialID: "c4", State: store.StateReady, Reason: "success", UpdatedAt: at(3 * time.Second)},
			{CredentialID: "c2", State: "cooling", Reason: "server_error", Until: future.Add(time.Minute), UpdatedAt: at(2 * time.Second)},
		}
		for _, st := range states {
			must(t, "SetCredentialState "+st.CredentialID, s.SetCredentialState(t.Context(), st))
		}
		// Sorted by credential id.
		want := []store.CredentialState{states[1], states[3], states[0], states[2]}
		checkRecords(t, "ListCredentialStates", listStates(t, s), want, normState)
	})

	t.Run("Upsert", func(t *testing.T) {
		s := setup(t, "c1")
		first := store.CredentialState{CredentialID: "c1", State: "cooling", Reason: "rate_limited", Until: future, UpdatedAt: at(0)}
		second := store.CredentialState{CredentialID: "c1", State: "invalid", Reason: "forbidden", UpdatedAt: at(time.Minute)}
		must(t, "SetCredentialState", s.SetCredentialState(t.Context(), first))
		must(t, "SetCredentialState again", s.SetCredentialState(t.Context(), second))
		checkRecords(t, "ListCredentialStates", listStates(t, s), []store.CredentialState{second}, normState)
	})

	t.Run("Expiry", func(t *testing.T) {
		tests := []struct {
			name   string
			state  store.CredentialState
			listed bool
		}{
			{"cooling until the future", store.CredentialState{State: "cooling", Reason: "rate_limited", Until: future}, true},
			{"cooling until the past", store.CredentialState{State: "cooling", Reason: "rate_limited", Until: past}, false},
			{"cooling with no until", store.CredentialState{State: "cooling", Reason: "rate_limited"}, false},
			{"invalid with no until", store.CredentialState{State: "invalid", Reason: "unauthorized"}, true},
			{"invalid until the past", store.CredentialState{State: "invalid", Reason: "unauthorized", Until: past}, true},
			{"invalid until the future", store.CredentialState{State: store.StateInvalid, Reason: "unauthorized", Until: future}, true},
			{"ready with no until", store.CredentialState{State: store.StateReady, Reason: "success"}, true},
			{"ready until the past", store.CredentialState{State: store.StateReady, Reason: "operator_reset", Until: past}, true},
			{"ready until the future", store.CredentialState{State: store.StateReady, Until: future}, true},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := setup(t, "c1")
				st := tt.state
				st.CredentialID, st.UpdatedAt = "c1", base
				must(t, "SetCredentialState", s.SetCredentialState(t.Context(), st))
				var want []store.CredentialState
				if tt.listed {
					want = append(want, st)
				}
				checkRecords(t, "ListCredentialStates", listStates(t, s), want, normState)
			})
		}
	})

	// A recovery is written as a "ready" state, over a cooldown or an
	// invalid state, and can be replaced by either again: every step
	// replaces the whole record, Until and Reason included.
	t.Run("ReadyTransitions", func(t *testing.T) {
		s := setup(t, "c1", "c2")
		other := store.CredentialState{CredentialID: "c2", State: store.StateReady, UpdatedAt: at(0)}
		must(t, "SetCredentialState c2", s.SetCredentialState(t.Context(), other))
		steps := []store.CredentialState{
			{State: store.StateCooling, Reason: "rate_limited", Until: future},
			{State: store.StateReady, Reason: "success"},
			{State: store.StateInvalid, Reason: "unauthorized"},
			{State: store.StateReady, Reason: "operator_reset", Until: past},
			{State: store.StateCooling, Reason: "quota_exhausted", Until: future.Add(time.Minute)},
			{State: store.StateReady},
		}
		for i, st := range steps {
			st.CredentialID, st.UpdatedAt = "c1", at(time.Duration(i+1)*time.Second)
			must(t, fmt.Sprintf("SetCredentialState step %d (%s)", i, st.State), s.SetCredentialState(t.Context(), st))
			checkRecords(t, fmt.Sprintf("ListCredentialStates after step %d (%s)", i, st.State), listStates(t, s),
				[]store.CredentialState{st, other}, normState)
		}
		// An expired cooldown written over a ready state hides it: the
		// credential has no state in force any more.
		must(t, "SetCredentialState expired cooling", s.SetCredentialState(t.Context(), store.CredentialState{
			CredentialID: "c1", State: store.StateCooling, Reason: "rate_limited", Until: past, UpdatedAt: at(time.Hour),
		}))
		checkRecords(t, "ListCredentialStates after an expired cooldown", listStates(t, s),
			[]store.CredentialState{other}, normState)
	})

	t.Run("ReadyCleared", func(t *testing.T) {
		s := setup(t, "c1", "c2")
		for _, id := range []string{"c1", "c2"} {
			must(t, "SetCredentialState "+id, s.SetCredentialState(t.Context(), store.CredentialState{
				CredentialID: id, State: store.StateReady, Reason: "success", UpdatedAt: base,
			}))
		}
		must(t, "ClearCredentialState c1", s.ClearCredentialState(t.Context(), "c1"))
		must(t, "DeleteCredential c2", s.DeleteCredential(t.Context(), "c2"))
		if got := listStates(t, s); len(got) != 0 {
			t.Errorf("ListCredentialStates() after clearing and deleting = %+v, want none", got)
		}
		wantErr(t, "SetCredentialState ready of a deleted credential", s.SetCredentialState(t.Context(), store.CredentialState{
			CredentialID: "c2", State: store.StateReady, UpdatedAt: base,
		}), store.ErrNotFound)
	})

	t.Run("Clear", func(t *testing.T) {
		s := setup(t, "c1", "c2")
		keep := store.CredentialState{CredentialID: "c2", State: "invalid", Reason: "unauthorized", UpdatedAt: base}
		must(t, "SetCredentialState", s.SetCredentialState(t.Context(), store.CredentialState{
			CredentialID: "c1", State: "cooling", Reason: "rate_limited", Until: future, UpdatedAt: base,
		}))
		must(t, "SetCredentialState", s.SetCredentialState(t.Context(), keep))
		must(t, "ClearCredentialState", s.ClearCredentialState(t.Context(), "c1"))
		checkRecords(t, "ListCredentialStates after ClearCredentialState", listStates(t, s),
			[]store.CredentialState{keep}, normState)
		if err := s.ClearCredentialState(t.Context(), "c1"); err != nil {
			t.Errorf("ClearCredentialState of a cleared state = %v, want nil", err)
		}
		if err := s.ClearCredentialState(t.Context(), "no-such-credential"); err != nil {
			t.Errorf("ClearCredentialState of an unknown credential = %v, want nil", err)
		}
		// The credential itself is untouched.
		if _, err := s.GetCredential(t.Context(), "c1"); err != nil {
			t.Errorf("GetCredential after ClearCredentialState: %v", err)
		}
	})

	t.Run("UnknownCredential", func(t *testing.T) {
		s := setup(t, "c1")
		err := s.SetCredentialState(t.Context(), store.CredentialState{
			CredentialID: "ghost", State: "invalid", Reason: "unauthorized", UpdatedAt: base,
		})
		wantErr(t, "SetCredentialState of an unknown credential", err, store.ErrNotFound)
		if got := listStates(t, s); len(got) != 0 {
			t.Errorf("ListCredentialStates() = %+v, want none", got)
		}
	})
}

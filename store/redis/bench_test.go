package redis

import (
	"fmt"
	"testing"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/internal/redistest"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

func BenchmarkGeneration(b *testing.B) {
	s := openStore(b, redistest.Start(b), Options{})
	for b.Loop() {
		if _, err := s.Generation(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkListCredentialStates lists the states of 100 credentials.
func BenchmarkListCredentialStates(b *testing.B) {
	s := openStore(b, redistest.Start(b), Options{})
	ctx := b.Context()
	for i := range 100 {
		id := fmt.Sprintf("c%03d", i)
		if err := s.CreateCredential(ctx, store.Credential{ID: id, Email: id + "@example.com"}); err != nil {
			b.Fatal(err)
		}
		st := store.CredentialState{CredentialID: id, State: store.StateReady, UpdatedAt: time.Now()}
		if i%2 == 0 {
			st.State, st.Until = store.StateCooling, time.Now().Add(time.Hour)
		}
		if err := s.SetCredentialState(ctx, st); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if _, err := s.ListCredentialStates(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAddUsage adds a batch of 10 rows, as a flush of the usage
// accumulator would.
func BenchmarkAddUsage(b *testing.B) {
	s := openStore(b, redistest.Start(b), Options{})
	day := time.Now().UTC().Format(store.DayLayout)
	rows := make([]store.Usage, 10)
	for i := range rows {
		rows[i] = store.Usage{Day: day, CredentialID: fmt.Sprintf("c%d", i%3), TokenID: fmt.Sprintf("t%d", i), Model: "m",
			Requests: 3, Failures: 1, InputTokens: 1000, OutputTokens: 200}
	}
	for b.Loop() {
		if err := s.AddUsage(b.Context(), rows); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLimiterTake(b *testing.B) {
	l := openStore(b, redistest.Start(b), Options{}).Limiter("rpm", 1<<30, time.Minute)
	for b.Loop() {
		if _, _, _, _, err := l.Take(b.Context(), "token"); err != nil {
			b.Fatal(err)
		}
	}
}

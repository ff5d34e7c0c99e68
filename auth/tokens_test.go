package auth_test

import (
	"context"
	"errors"
	"maps"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/store"
	"github.com/atlassian-proxy/atlassian-proxy/store/sqlite"
)

// fakeSource is an in-memory auth.TokenSource for the timing tests, which
// run in a synctest bubble; the store round trip is tested against SQLite
// in TestTokensSQLite.
type fakeSource struct {
	mu       sync.Mutex
	tokens   []store.APIToken
	listErr  error
	touchErr error
	touches  []map[string]time.Time
}

func (f *fakeSource) ListTokens(context.Context) ([]store.APIToken, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return nil, f.listErr
	}
	return append([]store.APIToken(nil), f.tokens...), nil
}

func (f *fakeSource) TouchTokens(_ context.Context, m map[string]time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.touchErr != nil {
		return f.touchErr
	}
	f.touches = append(f.touches, maps.Clone(m))
	return nil
}

func (f *fakeSource) set(tokens ...store.APIToken) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = tokens
}

func (f *fakeSource) setErrors(list, touch error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listErr, f.touchErr = list, touch
}

func (f *fakeSource) touched() []map[string]time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]map[string]time.Time(nil), f.touches...)
}

// mint returns a new token and its record.
func mint(t testing.TB, id string, expires time.Time) (string, store.APIToken) {
	t.Helper()
	token, display, hash, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return token, store.APIToken{
		ID: id, Name: id, Prefix: display, Hash: hash,
		CreatedAt: time.Now(), ExpiresAt: expires,
	}
}

func reload(t *testing.T, tk *auth.Tokens) {
	t.Helper()
	if err := tk.Reload(t.Context()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
}

func TestTokensVerify(t *testing.T) {
	now := time.Now()
	live, liveRec := mint(t, "tok_live", time.Time{})
	future, futureRec := mint(t, "tok_future", now.Add(time.Hour))
	expired, expiredRec := mint(t, "tok_expired", now.Add(-time.Second))
	unknown, _ := mint(t, "tok_unknown", time.Time{})
	src := &fakeSource{}
	src.set(liveRec, futureRec, expiredRec)
	tk := auth.NewTokens(src, nil)
	reload(t, tk)
	if got := tk.Len(); got != 3 {
		t.Errorf("Len = %d, want 3", got)
	}

	tests := []struct {
		name    string
		token   string
		wantID  string
		wantErr error
	}{
		{"live", live, "tok_live", nil},
		{"expires later", future, "tok_future", nil},
		{"expired", expired, "", auth.ErrExpiredToken},
		{"unknown", unknown, "", auth.ErrUnknownToken},
		{"empty", "", "", auth.ErrUnknownToken},
		{"prefix only", auth.TokenPrefix, "", auth.ErrUnknownToken},
		{"live with a character changed", changeLast(live), "", auth.ErrUnknownToken},
		{"live with trailing space", live + " ", "", auth.ErrUnknownToken},
		{"huge", strings.Repeat("x", 1<<20), "", auth.ErrUnknownToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tk.Verify(tt.token)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify error = %v, want %v", err, tt.wantErr)
			}
			if got.ID != tt.wantID {
				t.Errorf("Verify ID = %q, want %q", got.ID, tt.wantID)
			}
		})
	}
}

func changeLast(s string) string {
	if s[len(s)-1] == 'A' {
		return s[:len(s)-1] + "B"
	}
	return s[:len(s)-1] + "A"
}

func TestTokensBeforeReload(t *testing.T) {
	live, rec := mint(t, "tok_live", time.Time{})
	src := &fakeSource{}
	src.set(rec)
	tk := auth.NewTokens(src, nil)
	if _, err := tk.Verify(live); !errors.Is(err, auth.ErrUnknownToken) {
		t.Errorf("Verify before Reload error = %v, want ErrUnknownToken", err)
	}
}

func TestTokensReload(t *testing.T) {
	a, aRec := mint(t, "tok_a", time.Time{})
	b, bRec := mint(t, "tok_b", time.Time{})
	src := &fakeSource{}
	tk := auth.NewTokens(src, nil)

	steps := []struct {
		name    string
		records []store.APIToken
		listErr error
		wantA   error
		wantB   error
	}{
		{"create a", []store.APIToken{aRec}, nil, nil, auth.ErrUnknownToken},
		{"create b", []store.APIToken{aRec, bRec}, nil, nil, nil},
		{"revoke a", []store.APIToken{bRec}, nil, auth.ErrUnknownToken, nil},
		{"store down keeps the last copy", nil, store.ErrUnavailable, auth.ErrUnknownToken, nil},
		{"expire b", []store.APIToken{withExpiry(bRec, time.Now().Add(-time.Minute))}, nil, auth.ErrUnknownToken, auth.ErrExpiredToken},
		{"malformed hash skipped", []store.APIToken{{ID: "tok_bad", Hash: []byte("short")}, aRec}, nil, nil, auth.ErrUnknownToken},
		{"revoke all", nil, nil, auth.ErrUnknownToken, auth.ErrUnknownToken},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			src.set(s.records...)
			src.setErrors(s.listErr, nil)
			err := tk.Reload(t.Context())
			if !errors.Is(err, s.listErr) {
				t.Fatalf("Reload error = %v, want %v", err, s.listErr)
			}
			if _, err := tk.Verify(a); !errors.Is(err, s.wantA) {
				t.Errorf("Verify(a) error = %v, want %v", err, s.wantA)
			}
			if _, err := tk.Verify(b); !errors.Is(err, s.wantB) {
				t.Errorf("Verify(b) error = %v, want %v", err, s.wantB)
			}
		})
	}
}

func withExpiry(r store.APIToken, at time.Time) store.APIToken {
	r.ExpiresAt = at
	return r
}

// TestTokensRunFlushes checks, in fake time, that last-use times reach the
// store every 30 s, that quiet periods write nothing, that a failed write
// is retried, and that Run flushes once more at shutdown.
func TestTokensRunFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, aRec := mint(t, "tok_a", time.Time{})
		b, bRec := mint(t, "tok_b", time.Time{})
		src := &fakeSource{}
		src.set(aRec, bRec)
		tk := auth.NewTokens(src, nil)
		reload(t, tk)

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- tk.Run(ctx) }()

		verify := func(token string) time.Time {
			t.Helper()
			if _, err := tk.Verify(token); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			return time.Now()
		}
		wantTouches := func(step string, want ...map[string]time.Time) {
			t.Helper()
			got := src.touched()
			if len(got) != len(want) {
				t.Fatalf("%s: %d TouchTokens calls %v, want %d", step, len(got), got, len(want))
			}
			for i := range want {
				if !maps.EqualFunc(got[i], want[i], time.Time.Equal) {
					t.Errorf("%s: TouchTokens call %d = %v, want %v", step, i, got[i], want[i])
				}
			}
		}

		start := time.Now()
		verify(a)
		time.Sleep(10 * time.Second)
		lastA := verify(a) // the latest use wins
		usedB := verify(b)
		time.Sleep(19 * time.Second)
		synctest.Wait()
		wantTouches("before 30 s")

		time.Sleep(time.Second) // t = 30 s
		synctest.Wait()
		first := map[string]time.Time{"tok_a": lastA, "tok_b": usedB}
		wantTouches("at 30 s", first)

		time.Sleep(30 * time.Second) // no use: no write
		synctest.Wait()
		wantTouches("quiet period", first)

		src.setErrors(nil, store.ErrUnavailable)
		failed := verify(b)
		time.Sleep(30 * time.Second) // the write fails, the use is kept
		synctest.Wait()
		wantTouches("failed write", first)

		src.setErrors(nil, nil)
		time.Sleep(30 * time.Second)
		synctest.Wait()
		second := map[string]time.Time{"tok_b": failed}
		wantTouches("retried write", first, second)

		final := verify(a)
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		wantTouches("at shutdown", first, second, map[string]time.Time{"tok_a": final})
		if got, want := time.Since(start), 2*time.Minute; got != want {
			t.Errorf("fake time elapsed = %v, want %v", got, want)
		}
	})
}

// TestTokensSQLite runs the cache against a real SQLite store: tokens
// created in the store verify after Reload, a deleted one stops verifying,
// and the last use reaches the store at shutdown.
func TestTokensSQLite(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "data", "proxy.db"))
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })

	a, aRec := mint(t, "tok_a", time.Time{})
	b, bRec := mint(t, "tok_b", time.Time{})
	for _, r := range []store.APIToken{aRec, bRec} {
		if err := st.CreateToken(ctx, r); err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
	}
	tk := auth.NewTokens(st, nil)
	reload(t, tk)

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tk.Run(runCtx) }()

	before := time.Now()
	rec, err := tk.Verify(a)
	if err != nil {
		t.Fatalf("Verify(a): %v", err)
	}
	if rec.ID != "tok_a" || rec.Prefix != aRec.Prefix {
		t.Errorf("Verify(a) = %q %q, want tok_a %q", rec.ID, rec.Prefix, aRec.Prefix)
	}

	if err := st.DeleteToken(ctx, "tok_b"); err != nil {
		t.Fatalf("DeleteToken: %v", err)
	}
	if _, err := tk.Verify(b); err != nil {
		t.Errorf("Verify(b) before Reload: %v, want success (cached)", err)
	}
	reload(t, tk)
	if _, err := tk.Verify(b); !errors.Is(err, auth.ErrUnknownToken) {
		t.Errorf("Verify(b) after revoke and Reload: %v, want ErrUnknownToken", err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	list, err := st.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != "tok_a" {
		t.Fatalf("ListTokens = %v, want only tok_a", list)
	}
	if got := list[0].LastUsedAt; got.Before(before.Add(-time.Millisecond)) || got.After(time.Now()) {
		t.Errorf("LastUsedAt = %v, want between %v and now", got, before)
	}
}

func BenchmarkTokensVerify(b *testing.B) {
	src := &fakeSource{}
	var recs []store.APIToken
	var tokens []string
	for i := range 1000 {
		tok, rec := mint(b, "tok_"+string(rune('a'+i%26))+strings.Repeat("x", i/26), time.Time{})
		tokens, recs = append(tokens, tok), append(recs, rec)
	}
	src.set(recs...)
	tk := auth.NewTokens(src, nil)
	if err := tk.Reload(context.Background()); err != nil {
		b.Fatal(err)
	}
	token := tokens[500]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tk.Verify(token); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTokensVerifyParallel(b *testing.B) {
	token, rec := mint(b, "tok_a", time.Time{})
	src := &fakeSource{}
	src.set(rec)
	tk := auth.NewTokens(src, nil)
	if err := tk.Reload(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := tk.Verify(token); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkSHA256Token(b *testing.B) {
	token, _, _, _ := auth.NewToken()
	for b.Loop() {
		auth.HashToken(token)
	}
}

// TestTokensConcurrent verifies from many goroutines while the copy is
// reloaded and flushed, for the race detector.
func TestTokensConcurrent(t *testing.T) {
	a, aRec := mint(t, "tok_a", time.Time{})
	src := &fakeSource{}
	src.set(aRec)
	tk := auth.NewTokens(src, nil)
	reload(t, tk)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 500 {
				if _, err := tk.Verify(a); err != nil {
					t.Errorf("Verify: %v", err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			if err := tk.Reload(context.Background()); err != nil {
				t.Errorf("Reload: %v", err)
			}
			if err := tk.Flush(context.Background()); err != nil {
				t.Errorf("Flush: %v", err)
			}
		}
	})
	wg.Wait()
	if err := tk.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	touches := src.touched()
	if len(touches) == 0 || touches[len(touches)-1]["tok_a"].IsZero() {
		t.Errorf("no last use of tok_a written: %v", touches)
	}
}

// TestTokensLastUseAcrossReload: a use recorded before a Reload is written
// by the next Flush (the record moves to the new copy), a revoked token's
// is dropped, and uses closer than a second apart count as one.
func TestTokensLastUseAcrossReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, aRec := mint(t, "tok_a", time.Time{})
		b, bRec := mint(t, "tok_b", time.Time{})
		src := &fakeSource{}
		src.set(aRec, bRec)
		tk := auth.NewTokens(src, nil)
		reload(t, tk)

		verify := func(token string) time.Time {
			t.Helper()
			if _, err := tk.Verify(token); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			return time.Now()
		}
		usedA := verify(a)
		time.Sleep(500 * time.Millisecond)
		verify(a) // within the resolution: the first time stands
		verify(b)
		src.set(aRec) // b revoked
		reload(t, tk)
		if err := tk.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		want := []map[string]time.Time{{"tok_a": usedA}}
		if got := src.touched(); len(got) != 1 || !maps.EqualFunc(got[0], want[0], time.Time.Equal) {
			t.Fatalf("TouchTokens calls = %v, want %v", got, want)
		}

		time.Sleep(2 * time.Second)
		later := verify(a)
		reload(t, tk)
		if err := tk.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := tk.Flush(t.Context()); err != nil { // nothing new: no write
			t.Fatal(err)
		}
		want = append(want, map[string]time.Time{"tok_a": later})
		got := src.touched()
		if len(got) != 2 || !maps.EqualFunc(got[1], want[1], time.Time.Equal) {
			t.Fatalf("TouchTokens calls = %v, want %v", got, want)
		}
	})
}

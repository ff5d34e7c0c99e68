package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// Errors of Tokens.Verify.
var (
	// ErrUnknownToken: the token is malformed, was never issued or was revoked.
	ErrUnknownToken = errors.New("auth: unknown API token")
	// ErrExpiredToken: the token exists but its expiry has passed.
	ErrExpiredToken = errors.New("auth: expired API token")
)

// LastUsedFlushInterval is how often Tokens.Run writes last-use times to
// the store.
const LastUsedFlushInterval = 30 * time.Second

// maxTokenLength bounds what Verify hashes.
const maxTokenLength = 512

// flushTimeout bounds one TouchTokens call, including the final one at
// shutdown (which runs after the Run context is done).
const flushTimeout = 10 * time.Second

// TokenSource is the part of the store that Tokens uses.
type TokenSource interface {
	ListTokens(ctx context.Context) ([]store.APIToken, error)
	TouchTokens(ctx context.Context, lastUsed map[string]time.Time) error
}

// Tokens verifies client API tokens against an in-memory copy of the
// store's tokens, keyed by SHA-256 hash. Reload replaces the copy (the
// server calls it when the store's generation changes); Verify never calls
// the store. Last-use times are kept in memory and written by Run.
// Tokens is safe for concurrent use.
type Tokens struct {
	src    TokenSource
	logger *slog.Logger

	byHash atomic.Pointer[map[[sha256.Size]byte]store.APIToken]

	mu   sync.Mutex
	used map[string]time.Time // token id → last use not yet written
}

// NewTokens returns an empty cache over src: every token is unknown until
// the first Reload. A nil logger discards.
func NewTokens(src TokenSource, logger *slog.Logger) *Tokens {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &Tokens{src: src, logger: logger, used: make(map[string]time.Time)}
	empty := make(map[[sha256.Size]byte]store.APIToken)
	t.byHash.Store(&empty)
	return t
}

// Reload reads every token from the store and replaces the in-memory copy
// at once: a revoked token stops verifying, a new one starts. On error the
// previous copy stays in use.
func (t *Tokens) Reload(ctx context.Context) error {
	list, err := t.src.ListTokens(ctx)
	if err != nil {
		return fmt.Errorf("auth: reload tokens: %w", err)
	}
	m := make(map[[sha256.Size]byte]store.APIToken, len(list))
	for _, tok := range list {
		if len(tok.Hash) != sha256.Size {
			t.logger.Warn("skipping API token with a malformed hash", "token_id", tok.ID)
			continue
		}
		m[[sha256.Size]byte(tok.Hash)] = tok
	}
	t.byHash.Store(&m)
	return nil
}

// Len returns the number of tokens in the in-memory copy.
func (t *Tokens) Len() int { return len(*t.byHash.Load()) }

// Verify looks up a presented token (the value after "Bearer ") and returns
// its record, or ErrUnknownToken or ErrExpiredToken. It records the use in
// memory; Run writes it to the store later. The returned record shares
// its slices with the cache and must not be modified.
func (t *Tokens) Verify(token string) (store.APIToken, error) {
	// No format check beyond the length: a store may hold hashes of tokens
	// minted elsewhere (an import from an older tool).
	if token == "" || len(token) > maxTokenLength {
		return store.APIToken{}, ErrUnknownToken
	}
	h := hashString(token)
	rec, ok := (*t.byHash.Load())[h]
	// The map lookup already matched the hash; the constant-time compare
	// keeps the final decision free of data-dependent timing all the same.
	if !ok || subtle.ConstantTimeCompare(rec.Hash, h[:]) != 1 {
		return store.APIToken{}, ErrUnknownToken
	}
	now := time.Now()
	if !rec.ExpiresAt.IsZero() && !now.Before(rec.ExpiresAt) {
		return store.APIToken{}, ErrExpiredToken
	}
	t.mu.Lock()
	t.used[rec.ID] = now
	t.mu.Unlock()
	return rec, nil
}

// Run writes the recorded last-use times to the store every
// LastUsedFlushInterval, and once more when ctx is done. It returns nil
// after that final flush. A failed write is logged and retried with the
// next flush.
func (t *Tokens) Run(ctx context.Context) error {
	tick := time.NewTicker(LastUsedFlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			t.flush(ctx)
		case <-ctx.Done():
			t.flush(context.WithoutCancel(ctx))
			return nil
		}
	}
}

// Flush writes the recorded last-use times to the store now.
func (t *Tokens) Flush(ctx context.Context) error {
	t.mu.Lock()
	if len(t.used) == 0 {
		t.mu.Unlock()
		return nil
	}
	batch := t.used
	t.used = make(map[string]time.Time, len(batch))
	t.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	if err := t.src.TouchTokens(ctx, batch); err != nil {
		// Put the batch back unless a newer use was recorded meanwhile.
		t.mu.Lock()
		for id, at := range batch {
			if cur, ok := t.used[id]; !ok || cur.Before(at) {
				t.used[id] = at
			}
		}
		t.mu.Unlock()
		return fmt.Errorf("auth: write token last-use times: %w", err)
	}
	return nil
}

func (t *Tokens) flush(ctx context.Context) {
	if err := t.Flush(ctx); err != nil {
		t.logger.Warn("token last-use flush failed", "err", err)
	}
}

// hashString is sha256.Sum256 of s without a heap allocation for tokens of
// usual length (the []byte conversion would escape).
func hashString(s string) [sha256.Size]byte {
	var buf [128]byte
	if len(s) <= len(buf) {
		return sha256.Sum256(append(buf[:0], s...))
	}
	return sha256.Sum256([]byte(s))
}

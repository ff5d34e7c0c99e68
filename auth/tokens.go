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

// lastUseResolution is how stale a recorded last use may be: Verify
// writes the time of a token's use only when the recorded one is older, so
// that a token used by many requests at once is read by all of them and
// written by few (a shared cache line stays shared).
const lastUseResolution = time.Second

// Tokens verifies client API tokens against an in-memory copy of the
// store's tokens, keyed by SHA-256 hash. Reload replaces the copy (the
// server calls it when the store's generation changes); Verify never calls
// the store and takes no lock. Last-use times are kept in memory, in the
// copy's entries, and written by Run. Tokens is safe for concurrent use.
type Tokens struct {
	src    TokenSource
	logger *slog.Logger

	byHash atomic.Pointer[map[[sha256.Size]byte]*tokenEntry]

	// reloadMu orders Reloads, which carry the use records over.
	reloadMu sync.Mutex
	// flushMu makes Flushes one at a time; it guards every lastUse.flushed.
	flushMu sync.Mutex
}

// tokenEntry is one token of the in-memory copy. rec never changes; use
// is shared by the entries of the same token id in successive copies, so
// that a use recorded through an old copy is not lost by a Reload.
type tokenEntry struct {
	rec store.APIToken
	use *lastUse
}

// lastUse is the last use of one token: at is written by Verify (Unix
// nanoseconds, 0 never), flushed is what the store last accepted.
type lastUse struct {
	at      atomic.Int64
	flushed int64 // guarded by Tokens.flushMu
}

// record notes a use at now unless a use within lastUseResolution is
// recorded already. A load, and rarely a compare-and-swap: no lock.
func (u *lastUse) record(now int64) {
	for {
		cur := u.at.Load()
		if now-cur < int64(lastUseResolution) || u.at.CompareAndSwap(cur, now) {
			return
		}
	}
}

// NewTokens returns an empty cache over src: every token is unknown until
// the first Reload. A nil logger discards.
func NewTokens(src TokenSource, logger *slog.Logger) *Tokens {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &Tokens{src: src, logger: logger}
	empty := make(map[[sha256.Size]byte]*tokenEntry)
	t.byHash.Store(&empty)
	return t
}

// Reload reads every token from the store and replaces the in-memory copy
// at once: a revoked token stops verifying, a new one starts. On error the
// previous copy stays in use. The last uses of tokens still present carry
// over; those of removed tokens are dropped unwritten.
func (t *Tokens) Reload(ctx context.Context) error {
	list, err := t.src.ListTokens(ctx)
	if err != nil {
		return fmt.Errorf("auth: reload tokens: %w", err)
	}
	t.reloadMu.Lock()
	defer t.reloadMu.Unlock()
	uses := make(map[string]*lastUse, len(list))
	for _, e := range *t.byHash.Load() {
		uses[e.rec.ID] = e.use
	}
	m := make(map[[sha256.Size]byte]*tokenEntry, len(list))
	for _, tok := range list {
		if len(tok.Hash) != sha256.Size {
			t.logger.Warn("skipping API token with a malformed hash", "token_id", tok.ID)
			continue
		}
		use := uses[tok.ID]
		if use == nil {
			use = new(lastUse)
			uses[tok.ID] = use // one record per id, even if listed twice
		}
		m[[sha256.Size]byte(tok.Hash)] = &tokenEntry{rec: tok, use: use}
	}
	t.byHash.Store(&m)
	return nil
}

// Len returns the number of tokens in the in-memory copy.
func (t *Tokens) Len() int { return len(*t.byHash.Load()) }

// Verify looks up a presented token (the value after "Bearer ") and returns
// its record, or ErrUnknownToken or ErrExpiredToken. It records the use in
// memory, without a lock; Run writes it to the store later. The returned
// record shares its slices with the cache and must not be modified.
func (t *Tokens) Verify(token string) (store.APIToken, error) {
	// No format check beyond the length: a store may hold hashes of tokens
	// minted elsewhere (an import from an older tool).
	if token == "" || len(token) > maxTokenLength {
		return store.APIToken{}, ErrUnknownToken
	}
	h := hashString(token)
	e, ok := (*t.byHash.Load())[h]
	// The map lookup already matched the hash; the constant-time compare
	// keeps the final decision free of data-dependent timing all the same.
	if !ok || subtle.ConstantTimeCompare(e.rec.Hash, h[:]) != 1 {
		return store.APIToken{}, ErrUnknownToken
	}
	now := time.Now()
	if !e.rec.ExpiresAt.IsZero() && !now.Before(e.rec.ExpiresAt) {
		return store.APIToken{}, ErrExpiredToken
	}
	e.use.record(now.UnixNano())
	return e.rec, nil
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

// Flush writes the last-use times recorded since the last successful
// write to the store now. After a failed write they stay pending and go
// with the next Flush (with any newer use).
func (t *Tokens) Flush(ctx context.Context) error {
	t.flushMu.Lock()
	defer t.flushMu.Unlock()
	type pending struct {
		use *lastUse
		at  int64
	}
	var changed []pending
	batch := make(map[string]time.Time)
	for _, e := range *t.byHash.Load() {
		at := e.use.at.Load()
		if at > e.use.flushed {
			changed = append(changed, pending{e.use, at})
			batch[e.rec.ID] = time.Unix(0, at)
		}
	}
	if len(batch) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	if err := t.src.TouchTokens(ctx, batch); err != nil {
		return fmt.Errorf("auth: write token last-use times: %w", err)
	}
	for _, p := range changed {
		p.use.flushed = p.at
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

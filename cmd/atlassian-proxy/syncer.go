package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// syncInterval is how often the syncer asks the store whether anything
// changed. The CLI writes the SQLite file from another process; the issue
// asks that the server see such changes within 2 s.
const syncInterval = time.Second

// syncer keeps the running pool and the token cache in step with the store.
// It reloads when the store's generation moves (a change by any process) or
// at once when changed is called (a change made through this process's
// admin API, which must be in effect when the API answers).
type syncer struct {
	st     store.Store
	cipher *auth.Cipher
	tokens *auth.Tokens
	pool   *pool.Pool
	logger *slog.Logger

	mu  sync.Mutex // serialises reloads; guards gen
	gen int64
}

func newSyncer(st store.Store, c *auth.Cipher, t *auth.Tokens, p *pool.Pool, logger *slog.Logger) *syncer {
	return &syncer{st: st, cipher: c, tokens: t, pool: p, logger: logger, gen: -1}
}

// changed reloads now, on the caller's goroutine (an admin API handler, right
// after its write): the next request sees the change.
func (s *syncer) changed() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.mu.Lock()
	s.gen = -1
	s.mu.Unlock()
	if err := s.reloadIfChanged(ctx); err != nil {
		s.logger.Warn("store sync after an admin change failed; the periodic sync will retry", "err", err)
	}
}

// run polls the store generation until ctx ends. Errors are logged, not
// returned: a store hiccup must not stop the server, which keeps serving
// with the state it holds.
func (s *syncer) run(ctx context.Context) error {
	t := time.NewTicker(syncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.reloadIfChanged(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("store sync failed; keeping the current state", "err", err)
		}
	}
}

func (s *syncer) reloadIfChanged(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	gen, err := s.st.Generation(ctx)
	if err != nil {
		return fmt.Errorf("read store generation: %w", err)
	}
	if gen == s.gen {
		return nil
	}
	if err := s.reload(ctx); err != nil {
		return err
	}
	s.gen = gen
	return nil
}

// once loads everything at start-up; an error here stops the server.
func (s *syncer) once(ctx context.Context) error {
	return s.reloadIfChanged(ctx)
}

func (s *syncer) reload(ctx context.Context) error {
	if err := s.tokens.Reload(ctx); err != nil {
		return fmt.Errorf("reload tokens: %w", err)
	}
	creds, err := s.st.ListCredentials(ctx)
	if err != nil {
		return fmt.Errorf("list credentials: %w", err)
	}
	states, err := s.st.ListCredentialStates(ctx)
	if err != nil {
		return fmt.Errorf("list credential states: %w", err)
	}
	specs := make([]pool.Spec, 0, len(creds))
	for _, c := range creds {
		token, err := s.cipher.Open(c.ID, c.Token)
		if err != nil {
			// Wrong SECRET_KEY or a damaged record: leave it out, say so once per reload.
			s.logger.Error("cannot decrypt a credential's token; is SECRET_KEY the one it was stored with? skipping it",
				"credential_id", c.ID)
			continue
		}
		specs = append(specs, pool.Spec{
			Credential: pool.Credential{
				ID: c.ID, Email: c.Email, Token: string(token), CloudID: c.CloudID, Label: c.Label,
			},
			Enabled:        c.Enabled,
			MaxConcurrency: c.MaxConcurrency,
		})
	}
	s.pool.Sync(specs, states)
	return nil
}

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
	redisstore "github.com/atlassian-proxy/atlassian-proxy/store/redis"
)

// syncInterval is how often the syncer asks the store whether anything
// changed. The CLI writes the SQLite file from another process; the issue
// asks that the server see such changes within 2 s, and that replicas
// sharing a Redis see each other's changes within 1 s (pub/sub notices make
// that immediate; the poll is the safety net for lost notices).
const syncInterval = time.Second

// noticeGap is the shortest time between two rounds started by notices.
const noticeGap = 200 * time.Millisecond

// syncer keeps the running pool and the token cache in step with the store.
// It reloads when the store's generation moves (a change by any process),
// at once when changed is called (a change made through this process's
// admin API, which must be in effect when the API answers) or when a
// shared store sends a notice. Every round also reads the credential
// states, so cooldowns, invalid states and recoveries decided by another
// replica reach this one. While a Redis store records a data loss, a
// replica that held a configuration when it noticed the loss reads neither
// (see holding).
type syncer struct {
	st     store.Store
	cipher *auth.Cipher
	tokens *auth.Tokens
	pool   *pool.Pool
	logger *slog.Logger
	// marker, when set (Redis), returns the record of the store losing its
	// data (Redis restarted empty), nil when there is none. A replica that
	// notices the loss writes the record; it stays until an import (or the
	// operator) clears it, so a replica started after the loss sees it too.
	marker func(ctx context.Context) (*redisstore.LossRecord, error)
	// onLost hears the store entering (true) and leaving (false) the lost state.
	onLost func(bool)

	mu     sync.Mutex // serialises rounds; guards the fields below
	gen    int64
	specs  []pool.Spec            // of the last reload, for state-only rounds
	lost   *redisstore.LossRecord // the store lost its data (reported while set)
	loaded bool                   // a reload succeeded once
	// holding: the loss was noticed while this replica held a configuration
	// (credentials or tokens) loaded before it; that configuration is kept,
	// whatever the store holds meanwhile, until the loss record is cleared.
	holding bool
	holdGen int64 // the store's generation at the first round of the hold
	holdLog bool  // the store's change during the hold was logged
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
	if err := s.round(ctx); err != nil {
		s.logger.Warn("store sync after an admin change failed; the periodic sync will retry", "err", err)
	}
}

// run syncs every syncInterval and on every notice of a shared store until
// ctx ends. Errors are logged, not returned: a store hiccup must not stop
// the server, which keeps serving with the state it holds.
func (s *syncer) run(ctx context.Context) error {
	var notices <-chan struct{}
	if w, ok := s.st.(store.Watcher); ok {
		notices = w.Watch(ctx)
	}
	t := time.NewTicker(syncInterval)
	defer t.Stop()
	// Notices come with every state change of any replica (a pool under a
	// storm of 429s sends many): rounds they trigger are at least
	// noticeGap apart, the later notices merged into one round.
	var (
		last    time.Time
		pending <-chan time.Time
	)
	failing := false
	for {
		byNotice := true
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			byNotice = false
		case <-pending:
			pending = nil
		case _, ok := <-notices:
			if !ok {
				notices = nil
				continue
			}
			if wait := noticeGap - time.Since(last); wait > 0 {
				if pending == nil {
					pending = time.After(wait)
				}
				continue
			}
		}
		if byNotice {
			last = time.Now()
		}
		err := s.round(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			s.logger.Warn("store sync failed; keeping the current state", "err", err)
			failing = true
		case err == nil && failing:
			s.logger.Info("store sync works again")
			failing = false
		}
	}
}

// once loads everything at start-up; an error here stops the server.
func (s *syncer) once(ctx context.Context) error {
	return s.round(ctx)
}

// round reloads everything when the generation moved, else only the
// credential states.
func (s *syncer) round(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	gen, err := s.st.Generation(ctx)
	if err != nil {
		return fmt.Errorf("read store generation: %w", err)
	}
	if s.marker != nil {
		rec, err := s.marker(ctx)
		if err != nil {
			return fmt.Errorf("read store marker: %w", err)
		}
		s.setLost(rec)
	}
	if s.holding {
		// Hold what we have until the loss record is cleared (an import, or
		// `import --clear-loss` after re-seeding by hand), whatever the
		// store holds meanwhile: an empty store must not empty the pool and
		// the token cache, and a store half re-seeded by hand (a credential
		// and no token yet) must not replace them either. Nor are the
		// stored credential states applied: they are those of a store that
		// is not the reference. A replica that started after the loss holds
		// nothing and follows the store.
		switch {
		case s.holdGen == -1:
			s.holdGen = gen
		case gen != s.holdGen && !s.holdLog:
			s.holdLog = true
			s.logger.Warn("the store was written to during its data loss (re-seeded by hand?); this replica keeps " +
				"serving what it holds in memory until the loss record is cleared: run `atlassian-proxy import " +
				"--clear-loss` once the store is complete (an import clears it by itself)")
		}
		return nil
	}
	if gen == s.gen {
		return s.syncStates(ctx)
	}
	if err := s.reload(ctx); err != nil {
		return err
	}
	s.gen = gen
	return nil
}

// setLost follows the store's loss record: a replica reports the loss
// (/ready, the gauge, the log) for as long as the record is there, from its
// start if the record is there then.
func (s *syncer) setLost(rec *redisstore.LossRecord) {
	was := s.lost != nil
	s.lost = rec
	if was == (rec != nil) {
		return
	}
	if rec != nil {
		held := "this replica holds no credentials or tokens (it started after the loss, or had none): it follows the store"
		if s.loaded && (len(s.specs) > 0 || s.tokens.Len() > 0) {
			s.holding, s.holdGen, s.holdLog = true, -1, false
			held = fmt.Sprintf("serving on with the %d credentials and the %d tokens held in memory, whatever the "+
				"store holds, until the loss record is cleared", len(s.specs), s.tokens.Len())
		}
		s.logger.Error("THE STORE LOST ITS DATA (Redis restarted empty?): "+held+". Re-seed it with "+
			"`atlassian-proxy import <backup>`, or by hand then `atlassian-proxy import --clear-loss` (see "+
			"docs/operations.md, \"When Redis comes back empty\"); restarting replicas does not help. Every replica "+
			"reports this until the record is cleared.",
			"loss", rec.String())
	} else {
		if s.holding { // the store is the reference again: reload from it in this round
			s.holding, s.gen = false, -1
		}
		s.logger.Warn("the store's data-loss record was cleared (import or operator): the store is the reference again")
	}
	if s.onLost != nil {
		s.onLost(rec != nil)
	}
}

// syncStates offers the stored credential states to the pool (with the
// specs of the last reload: Sync changes nothing else).
func (s *syncer) syncStates(ctx context.Context) error {
	states, err := s.st.ListCredentialStates(ctx)
	if err != nil {
		return fmt.Errorf("list credential states: %w", err)
	}
	s.pool.Sync(s.specs, states)
	return nil
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
	prev := make(map[string]pool.Spec, len(s.specs))
	for _, sp := range s.specs {
		prev[sp.ID] = sp
	}
	specs := make([]pool.Spec, 0, len(creds))
	for _, c := range creds {
		token, err := s.cipher.Open(c.ID, c.Token)
		if err != nil {
			// Wrong SECRET_KEY or a damaged record. A credential this
			// process could open before (another process ran rotate-key, and
			// this one still has the old key until it restarts) keeps
			// serving with the token it holds; a new one is left out.
			if old, ok := prev[c.ID]; ok {
				s.logger.Error("cannot decrypt a credential's token with SECRET_KEY (rotated by another process?); "+
					"keeping the token held in memory until a restart with the new key", "credential_id", c.ID)
				old.Enabled, old.MaxConcurrency, old.Label = c.Enabled, c.MaxConcurrency, c.Label
				specs = append(specs, old)
				continue
			}
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
	s.specs, s.loaded = specs, true
	return nil
}

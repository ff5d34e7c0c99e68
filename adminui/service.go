package adminui

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// Service is the logic shared by the admin JSON API, the admin pages and
// the CLI. It validates input, seals Atlassian tokens, mints client API
// tokens, and manages the admin password and sessions. It is safe for
// concurrent use.
//
// Errors: *ValidationError for bad input (the field is named),
// *ConflictError for duplicates, errors wrapping store.ErrNotFound for
// unknown ids, errors wrapping store.ErrUnavailable when the store cannot
// be reached, ErrInvalidPassword for a failed login and ErrNoSession for an
// unknown or expired session.
type Service struct {
	st      store.Store
	cipher  *auth.Cipher
	logger  *slog.Logger
	now     func() time.Time
	changed func()

	sessionIdle     time.Duration
	sessionAbsolute time.Duration

	dummyOnce sync.Once
	dummyHash string

	hashSem chan struct{} // hashSlots: argon2id work running at once

	// catalog is what an API token's allowed models are checked against.
	catalog *gateway.Catalog
}

// NewService returns a Service with the default session timeouts (idle
// 30 min, absolute 12 h), the wall clock and no change hook: the form the
// CLI uses. catalog is the server's model catalog, which API tokens' allowed
// models must name (nil: the built-in one). The admin handler builds its
// own from Config and Deps.
func NewService(st store.Store, c *auth.Cipher, logger *slog.Logger, catalog *gateway.Catalog) *Service {
	return newService(st, c, logger, Config{}.withDefaults(), nil, nil, catalog)
}

func newService(st store.Store, c *auth.Cipher, logger *slog.Logger, cfg Config, now func() time.Time, changed func(), catalog *gateway.Catalog) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if catalog == nil {
		catalog = gateway.DefaultCatalog()
	}
	if now == nil {
		now = time.Now
	}
	return &Service{
		st:              st,
		cipher:          c,
		catalog:         catalog,
		logger:          logger,
		now:             now,
		changed:         changed,
		sessionIdle:     cfg.SessionIdle,
		sessionAbsolute: cfg.SessionAbsolute,
		hashSem:         make(chan struct{}, hashSlots),
	}
}

// notify runs the change hook after a successful write that affects the
// pool or the token cache.
func (s *Service) notify() {
	if s.changed != nil {
		s.changed()
	}
}

// CredentialInput is what an operator gives to add an Atlassian credential.
type CredentialInput struct {
	Email          string
	Token          string // plaintext Atlassian API token
	CloudID        string // optional, a UUID
	Label          string // optional, at most 100 characters
	MaxConcurrency int    // 0: the pool default
}

// CredentialView is a credential as shown to an operator: its token masked.
type CredentialView struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	// TokenMasked shows at most the first and last 4 characters of the
	// token ("ATAT…x9Q2"), nothing of a short one.
	TokenMasked string `json:"token_masked"`
	// TokenReadable is false when the stored token cannot be decrypted
	// with the current key (SECRET_KEY changed): the credential is unusable.
	TokenReadable  bool      `json:"token_readable"`
	CloudID        string    `json:"cloud_id,omitempty"`
	Label          string    `json:"label,omitempty"`
	Enabled        bool      `json:"enabled"`
	MaxConcurrency int       `json:"max_concurrency"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// CredentialPatch changes some fields of a credential; nil fields stay.
type CredentialPatch struct {
	Enabled        *bool
	MaxConcurrency *int
	Label          *string
}

// AddCredential validates the input, seals the token (the new credential's
// id as associated data) and stores the credential, enabled. A credential
// with the same email and cloud id → *ConflictError.
func (s *Service) AddCredential(ctx context.Context, in CredentialInput) (store.Credential, error) {
	c, err := s.addCredential(ctx, in)
	if err != nil {
		return store.Credential{}, err
	}
	s.notify()
	return c, nil
}

// AddCredentials adds each input as AddCredential does, one at a time
// (each is saved whole or not at all), and runs the change hook once at
// the end when any was added. errs[i] is the error of ins[i], nil when it
// was added.
func (s *Service) AddCredentials(ctx context.Context, ins []CredentialInput) (added []store.Credential, errs []error) {
	errs = make([]error, len(ins))
	for i, in := range ins {
		c, err := s.addCredential(ctx, in)
		if err != nil {
			errs[i] = err
			continue
		}
		added = append(added, c)
	}
	if len(added) > 0 {
		s.notify()
	}
	return added, errs
}

func (s *Service) addCredential(ctx context.Context, in CredentialInput) (store.Credential, error) {
	in, err := validateCredential(in)
	if err != nil {
		return store.Credential{}, err
	}
	id, err := auth.NewID("cred")
	if err != nil {
		return store.Credential{}, fmt.Errorf("add credential: %w", err)
	}
	sealed, err := s.cipher.Seal(id, []byte(in.Token))
	if err != nil {
		return store.Credential{}, fmt.Errorf("add credential: seal token: %w", err)
	}
	now := s.now().UTC()
	c := store.Credential{
		ID:             id,
		Email:          in.Email,
		Token:          sealed,
		CloudID:        in.CloudID,
		Label:          in.Label,
		Enabled:        true,
		MaxConcurrency: in.MaxConcurrency,
		CreatedAt:      now,
		UpdatedAt:      now,
	}
	if err := s.st.CreateCredential(ctx, c); err != nil {
		if errors.Is(err, store.ErrDuplicate) {
			return store.Credential{}, duplicateCredential(in.CloudID)
		}
		return store.Credential{}, fmt.Errorf("add credential: %w", err)
	}
	s.logger.LogAttrs(ctx, slog.LevelInfo, "credential added", slog.String("credential_id", id))
	return c, nil
}

func duplicateCredential(cloudID string) *ConflictError {
	msg := "a credential with this email already exists"
	if cloudID != "" {
		msg = "a credential with this email and cloud id already exists"
	}
	return &ConflictError{Field: "email", Message: msg}
}

// ListCredentials returns every credential, tokens masked, in store order.
func (s *Service) ListCredentials(ctx context.Context) ([]CredentialView, error) {
	cs, err := s.st.ListCredentials(ctx)
	if err != nil {
		return nil, fmt.Errorf("list credentials: %w", err)
	}
	out := make([]CredentialView, 0, len(cs))
	for _, c := range cs {
		out = append(out, s.view(ctx, c))
	}
	return out, nil
}

// GetCredential returns one credential, its token masked.
func (s *Service) GetCredential(ctx context.Context, id string) (CredentialView, error) {
	c, err := s.st.GetCredential(ctx, id)
	if err != nil {
		return CredentialView{}, fmt.Errorf("get credential: %w", err)
	}
	return s.view(ctx, c), nil
}

// View turns a stored credential into its masked view.
func (s *Service) View(ctx context.Context, c store.Credential) CredentialView {
	return s.view(ctx, c)
}

func (s *Service) view(ctx context.Context, c store.Credential) CredentialView {
	v := CredentialView{
		ID:             c.ID,
		Email:          c.Email,
		CloudID:        c.CloudID,
		Label:          c.Label,
		Enabled:        c.Enabled,
		MaxConcurrency: c.MaxConcurrency,
		CreatedAt:      c.CreatedAt,
		UpdatedAt:      c.UpdatedAt,
	}
	plain, err := s.cipher.Open(c.ID, c.Token)
	if err != nil {
		s.logger.LogAttrs(ctx, slog.LevelWarn, "stored credential token cannot be decrypted",
			slog.String("credential_id", c.ID))
		v.TokenMasked = maskedUnknown
		return v
	}
	v.TokenMasked = MaskToken(string(plain))
	v.TokenReadable = true
	clear(plain)
	return v
}

// RemoveCredential deletes a credential (and its persisted pool state).
func (s *Service) RemoveCredential(ctx context.Context, id string) error {
	if err := s.st.DeleteCredential(ctx, id); err != nil {
		return fmt.Errorf("remove credential: %w", err)
	}
	s.logger.LogAttrs(ctx, slog.LevelInfo, "credential removed", slog.String("credential_id", id))
	s.notify()
	return nil
}

// SetCredentialEnabled enables or disables a credential. Enabling a
// disabled one also resets it as ResetCredential does: an operator
// re-enabling a credential means "try it again".
func (s *Service) SetCredentialEnabled(ctx context.Context, id string, enabled bool) error {
	_, err := s.UpdateCredential(ctx, id, CredentialPatch{Enabled: &enabled})
	return err
}

// ResetCredential clears a credential's cooldown or invalid state at once:
// it stores a ready state dated now, which a running server (every replica
// sharing the store) applies within a syncer round as newer than what it
// knows, even when it never saw the cooldown stored. An unknown id wraps
// store.ErrNotFound.
func (s *Service) ResetCredential(ctx context.Context, id string) error {
	if err := s.storeReady(ctx, id); err != nil {
		return fmt.Errorf("reset credential: %w", err)
	}
	s.logger.LogAttrs(ctx, slog.LevelInfo, "credential reset", slog.String("credential_id", id))
	s.notify()
	return nil
}

// storeReady records that the credential recovered now. It is written, not
// deleted: a deletion offers the pool nothing newer than the cooldown or
// invalid mark it holds (a disable and an enable seen in one syncer round
// leave the credential's spec as it was), so the pool would keep it.
func (s *Service) storeReady(ctx context.Context, id string) error {
	return s.st.SetCredentialState(ctx, store.CredentialState{
		CredentialID: id,
		State:        store.StateReady,
		Reason:       pool.OutcomeSuccess.String(),
		UpdatedAt:    s.now().UTC(),
	})
}

// SetCredentialLimit sets a credential's concurrency limit (0: the pool default).
func (s *Service) SetCredentialLimit(ctx context.Context, id string, maxConcurrency int) error {
	_, err := s.UpdateCredential(ctx, id, CredentialPatch{MaxConcurrency: &maxConcurrency})
	return err
}

// UpdateCredential applies a patch in one store write and returns the
// result. An empty patch is a *ValidationError.
func (s *Service) UpdateCredential(ctx context.Context, id string, p CredentialPatch) (CredentialView, error) {
	if p.Enabled == nil && p.MaxConcurrency == nil && p.Label == nil {
		return CredentialView{}, invalid("", "nothing to change: give enabled, max_concurrency or label")
	}
	if p.MaxConcurrency != nil {
		if err := validateConcurrency(*p.MaxConcurrency); err != nil {
			return CredentialView{}, err
		}
	}
	var label string
	if p.Label != nil {
		var err error
		if label, err = validateLabel(*p.Label); err != nil {
			return CredentialView{}, err
		}
	}
	c, err := s.st.GetCredential(ctx, id)
	if err != nil {
		return CredentialView{}, fmt.Errorf("update credential: %w", err)
	}
	enabling := p.Enabled != nil && *p.Enabled && !c.Enabled
	if p.Enabled != nil {
		c.Enabled = *p.Enabled
	}
	if p.MaxConcurrency != nil {
		c.MaxConcurrency = *p.MaxConcurrency
	}
	if p.Label != nil {
		c.Label = label
	}
	c.UpdatedAt = s.now().UTC()
	if err := s.st.UpdateCredential(ctx, c); err != nil {
		if errors.Is(err, store.ErrDuplicate) {
			return CredentialView{}, duplicateCredential(c.CloudID)
		}
		return CredentialView{}, fmt.Errorf("update credential: %w", err)
	}
	if enabling {
		if err := s.storeReady(ctx, id); err != nil {
			// The credential is enabled; a stale cooldown or invalid mark
			// only delays it (until it expires or the next re-check).
			s.logger.LogAttrs(ctx, slog.LevelWarn, "credential enabled, but its cooldown or invalid state was not reset",
				slog.String("credential_id", id), slog.String("error", err.Error()))
		}
	}
	s.logger.LogAttrs(ctx, slog.LevelInfo, "credential updated", slog.String("credential_id", id))
	s.notify()
	return s.view(ctx, c), nil
}

// TokenInput is what an operator gives to create a client API token.
type TokenInput struct {
	Name          string
	ExpiresAt     time.Time // zero: never
	AllowedModels []string  // empty: every model
	RateLimit     int       // requests per minute; 0: unlimited
}

// TokenView is a client API token as listed: never the token or its hash.
type TokenView struct {
	ID            string     `json:"id"`
	Name          string     `json:"name"`
	Prefix        string     `json:"prefix"`
	CreatedAt     time.Time  `json:"created_at"`
	ExpiresAt     *time.Time `json:"expires_at"`
	LastUsedAt    *time.Time `json:"last_used_at"`
	Expired       bool       `json:"expired"`
	AllowedModels []string   `json:"allowed_models"`
	RateLimit     int        `json:"rate_limit"`
}

// CreateToken mints a client API token and stores its hash. The plaintext
// is returned here and never again.
func (s *Service) CreateToken(ctx context.Context, in TokenInput) (string, store.APIToken, error) {
	in, err := s.validateToken(in)
	if err != nil {
		return "", store.APIToken{}, err
	}
	id, err := auth.NewID("tok")
	if err != nil {
		return "", store.APIToken{}, fmt.Errorf("create token: %w", err)
	}
	plain, display, hash, err := auth.NewToken()
	if err != nil {
		return "", store.APIToken{}, fmt.Errorf("create token: %w", err)
	}
	t := store.APIToken{
		ID:            id,
		Name:          in.Name,
		Prefix:        strings.TrimSuffix(display, "…"),
		Hash:          hash,
		CreatedAt:     s.now().UTC(),
		ExpiresAt:     in.ExpiresAt,
		AllowedModels: in.AllowedModels,
		RateLimit:     in.RateLimit,
	}
	if err := s.st.CreateToken(ctx, t); err != nil {
		return "", store.APIToken{}, fmt.Errorf("create token: %w", err)
	}
	s.logger.LogAttrs(ctx, slog.LevelInfo, "api token created",
		slog.String("token_id", id), slog.String("token_prefix", t.Prefix))
	s.notify()
	return plain, t, nil
}

// ListTokens returns every client API token without its secret.
func (s *Service) ListTokens(ctx context.Context) ([]TokenView, error) {
	ts, err := s.st.ListTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	now := s.now()
	out := make([]TokenView, 0, len(ts))
	for _, t := range ts {
		out = append(out, TokenViewOf(t, now))
	}
	return out, nil
}

// TokenViewOf is the listed form of a stored token at time now.
func TokenViewOf(t store.APIToken, now time.Time) TokenView {
	v := TokenView{
		ID:            t.ID,
		Name:          t.Name,
		Prefix:        t.Prefix,
		CreatedAt:     t.CreatedAt,
		AllowedModels: t.AllowedModels,
		RateLimit:     t.RateLimit,
	}
	if v.AllowedModels == nil {
		v.AllowedModels = []string{}
	}
	if !t.ExpiresAt.IsZero() {
		e := t.ExpiresAt
		v.ExpiresAt = &e
		v.Expired = !now.Before(e)
	}
	if !t.LastUsedAt.IsZero() {
		l := t.LastUsedAt
		v.LastUsedAt = &l
	}
	return v
}

// RevokeToken deletes a client API token.
func (s *Service) RevokeToken(ctx context.Context, id string) error {
	if err := s.st.DeleteToken(ctx, id); err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	s.logger.LogAttrs(ctx, slog.LevelInfo, "api token revoked", slog.String("token_id", id))
	s.notify()
	return nil
}

// TokenPatch changes some settings of a client API token; nil fields stay.
// ExpiresAt pointing at the zero time removes the expiry; AllowedModels
// pointing at an empty list allows every model again.
type TokenPatch struct {
	Name          *string
	ExpiresAt     *time.Time
	AllowedModels *[]string
	RateLimit     *int
}

// UpdateToken applies a patch to a client API token in one store write and
// returns the result. An empty patch is a *ValidationError; an unknown id
// wraps store.ErrNotFound.
func (s *Service) UpdateToken(ctx context.Context, id string, p TokenPatch) (TokenView, error) {
	if p.Name == nil && p.ExpiresAt == nil && p.AllowedModels == nil && p.RateLimit == nil {
		return TokenView{}, invalid("", "nothing to change: give name, expires_at, allowed_models or rate_limit")
	}
	var (
		name    string
		expires time.Time
		models  []string
		err     error
	)
	if p.Name != nil {
		if name, err = validateTokenName(*p.Name); err != nil {
			return TokenView{}, err
		}
	}
	if p.ExpiresAt != nil {
		if expires, err = s.validateExpiry(*p.ExpiresAt); err != nil {
			return TokenView{}, err
		}
	}
	if p.AllowedModels != nil {
		if models, err = s.checkModels(*p.AllowedModels); err != nil {
			return TokenView{}, err
		}
	}
	if p.RateLimit != nil {
		if err := validateRateLimit(*p.RateLimit); err != nil {
			return TokenView{}, err
		}
	}
	ts, err := s.st.ListTokens(ctx)
	if err != nil {
		return TokenView{}, fmt.Errorf("update token: %w", err)
	}
	i := slices.IndexFunc(ts, func(t store.APIToken) bool { return t.ID == id })
	if i < 0 {
		return TokenView{}, fmt.Errorf("update token %s: %w", id, store.ErrNotFound)
	}
	t := ts[i]
	if p.Name != nil {
		t.Name = name
	}
	if p.ExpiresAt != nil {
		t.ExpiresAt = expires
	}
	if p.AllowedModels != nil {
		t.AllowedModels = models
	}
	if p.RateLimit != nil {
		t.RateLimit = *p.RateLimit
	}
	if err := s.st.UpdateToken(ctx, t); err != nil {
		return TokenView{}, fmt.Errorf("update token: %w", err)
	}
	s.logger.LogAttrs(ctx, slog.LevelInfo, "api token updated",
		slog.String("token_id", id), slog.String("token_prefix", t.Prefix))
	s.notify()
	return TokenViewOf(t, s.now()), nil
}

// Package store defines the persistent records of atlassian-proxy and the
// Store interface that every backend (embedded SQLite, Redis) implements.
// The conformance suite in store/storetest is the specification: each
// backend runs it against a real instance.
package store

import (
	"context"
	"errors"
	"time"
)

// Errors every backend returns (wrapped with %w where useful).
var (
	// ErrNotFound: the record does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrDuplicate: a record with the same identity already exists
	// (same credential id, or same email and cloud id; same token id or hash).
	ErrDuplicate = errors.New("store: duplicate")
	// ErrUnavailable: the backend cannot be reached. Nothing was written,
	// except after a timeout, when a slow server may still apply the write.
	ErrUnavailable = errors.New("store: unavailable")
)

// Credential is one Atlassian account the pool may use.
// Token is the API token sealed by auth.Cipher (AES-256-GCM, the credential
// ID as associated data): a store never sees a plaintext Atlassian token.
type Credential struct {
	ID      string
	Email   string
	Token   []byte // ciphertext
	CloudID string // optional site cloud id
	Label   string // optional, for humans
	Enabled bool
	// MaxConcurrency is the per-credential in-flight limit; 0 means the pool default.
	MaxConcurrency int
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// APIToken is a client token. Only the SHA-256 hash of the token is kept.
type APIToken struct {
	ID            string
	Name          string
	Prefix        string // the first characters of the token, shown in lists
	Hash          []byte // SHA-256 of the full token, 32 bytes, unique
	CreatedAt     time.Time
	ExpiresAt     time.Time // zero: never
	LastUsedAt    time.Time // zero: never used
	AllowedModels []string  // empty: every model
	RateLimit     int       // requests per minute; 0: unlimited
}

// AdminPassword is the single admin password of the deployment.
type AdminPassword struct {
	Hash       string // argon2id, PHC string format
	MustChange bool   // generated at first start: must be changed at first login
	UpdatedAt  time.Time
}

// Session is a server-side admin session. ID is the SHA-256 (hex) of the
// cookie value, so a leaked database does not leak live session cookies.
type Session struct {
	ID         string
	CSRFToken  string
	CreatedAt  time.Time
	LastSeenAt time.Time
}

// CredentialState is a persisted cooldown or invalid state of a credential,
// so that a restart (or another replica) does not hammer a credential that
// is rate limited or revoked.
type CredentialState struct {
	CredentialID string
	State        string // StateCooling, StateInvalid or StateReady
	Reason       string // an outcome kind, e.g. "rate_limited"
	Until        time.Time
	UpdatedAt    time.Time
}

// Stored credential states.
const (
	// StateCooling: out of rotation until Until (rate limited, out of quota, forbidden).
	StateCooling = "cooling"
	// StateInvalid: out of rotation until an operator or a re-check brings it back.
	StateInvalid = "invalid"
	// StateReady: the credential recovered (a success after a cooldown, an
	// operator reset, a re-check that passed). It is written instead of
	// deleting the state so that other replicas sharing the store learn of
	// the recovery; it never expires and lists like the others.
	StateReady = "ready"
)

// Usage is one row of usage accounting: what one API token sent through one
// credential to one model on one day (UTC). AddUsage adds the counts of a
// row to the stored row with the same key (Day, CredentialID, TokenID,
// Model), creating it when absent.
type Usage struct {
	Day          string // "2006-01-02", UTC
	CredentialID string // "" when no credential served the request
	TokenID      string
	Model        string // a catalog model id
	Requests     int64  // requests answered (successes and failures)
	Failures     int64  // requests that ended in an error
	InputTokens  int64
	OutputTokens int64
}

// Store is implemented by store/sqlite and store/redis.
// Every method honours ctx. Listing methods return records sorted by
// CreatedAt then ID, and never nil errors together with partial results.
type Store interface {
	// Ping reports whether the backend answers.
	Ping(ctx context.Context) error
	// Generation is a counter that grows with every committed change of
	// configuration (credentials, tokens, the admin password) made by any
	// process sharing the store (the CLI changes the SQLite file while the
	// server runs). Runtime writes (sessions, last-used times, credential
	// states) leave it alone, so traffic never triggers a reload. It is
	// cheap: the server polls it every second.
	// A call that fails leaves it unchanged, and so may a call that changes
	// nothing (DeleteSession of an absent session, TouchTokens of unknown
	// ids, InitAdminPassword that finds a password).
	Generation(ctx context.Context) (int64, error)
	Close() error

	ListCredentials(ctx context.Context) ([]Credential, error)
	GetCredential(ctx context.Context, id string) (Credential, error)
	// CreateCredential and UpdateCredential compare emails case-insensitively
	// for ErrDuplicate. UpdateCredential keeps the stored CreatedAt.
	CreateCredential(ctx context.Context, c Credential) error // ErrDuplicate
	UpdateCredential(ctx context.Context, c Credential) error // ErrNotFound, ErrDuplicate
	DeleteCredential(ctx context.Context, id string) error    // ErrNotFound; also clears its state

	ListTokens(ctx context.Context) ([]APIToken, error)
	CreateToken(ctx context.Context, t APIToken) error // ErrDuplicate
	UpdateToken(ctx context.Context, t APIToken) error // ErrNotFound (name, expiry, models, rate limit)
	DeleteToken(ctx context.Context, id string) error  // ErrNotFound
	// TouchTokens records last-used times in one batch; unknown ids are ignored.
	TouchTokens(ctx context.Context, lastUsed map[string]time.Time) error

	AdminPassword(ctx context.Context) (AdminPassword, error) // ErrNotFound when never set
	// InitAdminPassword sets the password only if none exists (atomic
	// set-if-absent) and reports whether it did.
	InitAdminPassword(ctx context.Context, p AdminPassword) (bool, error)
	SetAdminPassword(ctx context.Context, p AdminPassword) error

	CreateSession(ctx context.Context, s Session) error // ErrDuplicate
	GetSession(ctx context.Context, id string) (Session, error)
	TouchSession(ctx context.Context, id string, at time.Time) error // ErrNotFound
	DeleteSession(ctx context.Context, id string) error              // no error when absent
	DeleteAllSessions(ctx context.Context) error
	// DeleteSessionsBefore deletes the sessions last seen before t (idle
	// ones) and reports how many it deleted.
	DeleteSessionsBefore(ctx context.Context, t time.Time) (int, error)

	// SetCredentialState upserts; ListCredentialStates omits states whose
	// Until has passed (for "cooling"); "invalid" and "ready" states never
	// expire.
	// SetCredentialState returns ErrNotFound when the credential does not
	// exist; ListCredentialStates sorts by CredentialID.
	SetCredentialState(ctx context.Context, s CredentialState) error
	ClearCredentialState(ctx context.Context, credentialID string) error // no error when absent
	ListCredentialStates(ctx context.Context) ([]CredentialState, error)

	// AddUsage adds rows to the usage counters, each row atomically (a
	// batch may be applied in part when the backend fails mid-way; rows
	// are never applied twice by one call). A batch with a Day not written
	// "2006-01-02" is refused whole. Runtime write: Generation stays.
	AddUsage(ctx context.Context, rows []Usage) error
	// ListUsage returns the rows whose Day is in [fromDay, toDay] (both
	// inclusive, "2006-01-02"; other forms are an error), sorted by Day,
	// CredentialID, TokenID, Model.
	ListUsage(ctx context.Context, fromDay, toDay string) ([]Usage, error)
}

// Watcher is implemented by backends that several processes share and that
// can push change notices (Redis pub/sub). Watch returns a channel that
// receives a value soon after any process commits a change of configuration
// (what Generation counts) or of a credential state, and once after every
// reconnection to the backend (when notices may have been missed). Notices
// are best effort, may be merged and may be lost: callers poll as well.
// The channel is closed when ctx ends.
type Watcher interface {
	Watch(ctx context.Context) <-chan struct{}
}

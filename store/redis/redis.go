package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// Defaults of Options.
const (
	DefaultPrefix    = "atlassian-proxy:"
	DefaultOpTimeout = 2 * time.Second
)

// Options configure Open. The zero value of each field but URL means its
// documented default.
type Options struct {
	// URL is redis://[user:password@]host:port/db or rediss://... (TLS).
	URL string
	// Password, when set, replaces the URL's password.
	Password string
	// Prefix starts every key (and the events channel), so that several
	// deployments can share one Redis. Default DefaultPrefix.
	Prefix string
	// OpTimeout bounds every call (each command, or script, runs under a
	// context deadline), and dialing, reading and writing. Default
	// DefaultOpTimeout.
	OpTimeout time.Duration
}

// Store is the Redis implementation of store.Store, for several replicas
// sharing one pool. It is safe for concurrent use.
type Store struct {
	client    *goredis.Client
	prefix    string
	opTimeout time.Duration
	password  string // only to scrub it from error messages
	k         keys

	errs atomic.Int64 // failed commands, see Errors

	watchPing time.Duration // see defaultWatchPing; tests shorten it

	// life is the store's own lifetime: Close cancels it, which stops the
	// Watch goroutines (tracked by watchers) before the client closes.
	life      context.Context
	endLife   context.CancelFunc
	watchers  sync.WaitGroup
	closeMu   sync.Mutex // orders Watch's watchers.Go before Close's watchers.Wait
	closed    bool
	closeOnce sync.Once
	closeErr  error

	host     string // this machine's name, recorded with a data loss it notices
	markerMu sync.Mutex
	marker   string // the marker value this process last saw; "" before the first Marker call
}

var (
	_ store.Store   = (*Store)(nil)
	_ store.Watcher = (*Store)(nil)
)

// keys are the fixed key names under the prefix.
type keys struct {
	gen, creds, credIdx, states, toks, tokHash, admin, sessions, usageDays, marker, lost string
	cred, state, tok, sess, usage, rl                                                    string // followed by an id
	events                                                                               string // the pub/sub channel
}

func newKeys(p string) keys {
	return keys{
		gen: p + "gen", creds: p + "creds", credIdx: p + "credidx", states: p + "states",
		toks: p + "toks", tokHash: p + "tokhash", admin: p + "admin", sessions: p + "sessions",
		usageDays: p + "usagedays", marker: p + "marker", lost: p + "lost",
		cred: p + "cred:", state: p + "state:", tok: p + "tok:", sess: p + "sess:", usage: p + "usage:", rl: p + "rl:",
		events: p + "events",
	}
}

// Open connects to the Redis at o.URL and checks that it answers (PING).
// An unreachable server gives an error wrapping store.ErrUnavailable. Error
// messages show the URL with its password masked, and never the password
// of o.Password. The caller must Close the Store.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.URL == "" {
		return nil, errors.New("redis: open: empty URL")
	}
	if o.OpTimeout < 0 {
		return nil, fmt.Errorf("redis: open: negative OpTimeout %v", o.OpTimeout)
	}
	u, err := url.Parse(o.URL)
	if err != nil {
		// The parser's message quotes the URL, password included.
		return nil, errors.New("redis: open: the URL does not parse; want redis://[user:password@]host:port/db or rediss://...")
	}
	shown := u.Redacted()
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("redis: open %s: scheme %q not supported (want redis or rediss)", shown, u.Scheme)
	}
	opt, err := goredis.ParseURL(o.URL)
	if err != nil {
		urlPass, _ := u.User.Password()
		return nil, fmt.Errorf("redis: open %s: %s", shown, scrub(err.Error(), urlPass, o.Password))
	}
	if o.Password != "" {
		opt.Password = o.Password
	}
	timeout := o.OpTimeout
	if timeout == 0 {
		timeout = DefaultOpTimeout
	}
	opt.ContextTimeoutEnabled = true
	opt.DialTimeout = timeout
	opt.ReadTimeout = timeout
	opt.WriteTimeout = timeout
	opt.PoolTimeout = timeout
	// go-redis would resend a command whose connection broke, after Redis
	// may have run it: a script that increments a counter or creates a
	// record must run at most once per call.
	opt.MaxRetries = -1
	// One dial attempt per command: the caller's poll is the retry.
	opt.DialerRetries = 1
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}

	prefix := o.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	s := &Store{
		client:    goredis.NewClient(opt),
		prefix:    prefix,
		opTimeout: timeout,
		password:  opt.Password,
		k:         newKeys(prefix),
		watchPing: defaultWatchPing,
		host:      hostname(),
	}
	s.life, s.endLife = context.WithCancel(context.Background())
	if err := s.Ping(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("redis: open %s: %w", shown, err)
	}
	return s, nil
}

// Close stops the watchers and closes the connections. Later calls fail
// with an error wrapping store.ErrUnavailable.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closeMu.Lock()
		s.closed = true
		s.closeMu.Unlock()
		s.endLife()
		s.watchers.Wait()
		if err := s.client.Close(); err != nil {
			s.closeErr = fmt.Errorf("redis: close: %w", err)
		}
	})
	return s.closeErr
}

// Client returns the underlying client, for callers that need a command
// of their own (a health check, a metric).
func (s *Store) Client() goredis.UniversalClient { return s.client }

// Prefix returns the prefix of every key of this store.
func (s *Store) Prefix() string { return s.prefix }

// Errors returns how many Redis commands have failed since Open, for a
// metric: unreachable server, timeouts, error replies. Answers such as
// "not found" or "duplicate", and calls the caller cancelled, are not
// failures.
func (s *Store) Errors() int64 { return s.errs.Load() }

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.run(ctx, "ping", func(ctx context.Context) error {
		return s.client.Ping(ctx).Err()
	})
}

// Generation returns the counter every configuration change increments, in
// the same script as the change. It is 0 on a new (or emptied) Redis.
func (s *Store) Generation(ctx context.Context) (int64, error) {
	var g int64
	err := s.run(ctx, "generation", func(ctx context.Context) error {
		var err error
		g, err = s.client.Get(ctx, s.k.gen).Int64()
		if errors.Is(err, goredis.Nil) {
			g, err = 0, nil
		}
		return err
	})
	return g, err
}

// run calls fn under the operation timeout and wraps its error (see wrap).
func (s *Store) run(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis: %s: %w", op, err)
	}
	octx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	if err := fn(octx); err != nil {
		return s.wrap(ctx, op, err)
	}
	return nil
}

// script runs a write script and maps its result code: resDuplicate to
// store.ErrDuplicate, resNotFound to store.ErrNotFound.
func (s *Store) script(ctx context.Context, sc *goredis.Script, keys []string, args ...any) error {
	code, err := sc.Run(ctx, s.client, keys, args...).Int()
	switch {
	case err != nil:
		return err
	case code == resDuplicate:
		return store.ErrDuplicate
	case code == resNotFound:
		return store.ErrNotFound
	}
	return nil
}

// wrap names the operation and classifies err: the store's own answers
// pass through; a call the caller cancelled (or whose deadline passed)
// reports the context's error; anything else is a failed command, counted,
// and wraps store.ErrUnavailable when Redis could not be reached or could
// not serve (timeouts, refused or broken connections, a closed store, a
// server loading or read-only or out of memory, authentication refused).
// The password never appears in the message.
func (s *Store) wrap(ctx context.Context, op string, err error) error {
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrDuplicate) {
		return fmt.Errorf("redis: %s: %w", op, err)
	}
	ctxErr := ctx.Err()
	if d, ok := ctx.Deadline(); ok && ctxErr == nil && !time.Now().Before(d) {
		// The socket deadline (the caller's) can fire before the
		// context's own timer has marked it done.
		ctxErr = context.DeadlineExceeded
	}
	if ctxErr != nil {
		if errors.Is(err, ctxErr) {
			return fmt.Errorf("redis: %s: %w", op, ctxErr)
		}
		return fmt.Errorf("redis: %s: %w: %s", op, ctxErr, scrub(err.Error(), s.password))
	}
	s.errs.Add(1)
	msg := scrub(err.Error(), s.password)
	if unavailable(err) {
		return fmt.Errorf("redis: %s: %w: %s", op, store.ErrUnavailable, msg)
	}
	return fmt.Errorf("redis: %s: %s", op, msg)
}

// unavailable reports whether err means Redis could not serve the call.
func unavailable(err error) bool {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, goredis.ErrClosed), errors.Is(err, goredis.ErrPoolTimeout), errors.Is(err, goredis.ErrPoolExhausted):
		return true
	}
	for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "NOAUTH", "WRONGPASS", "BUSY", "CLUSTERDOWN",
		"TRYAGAIN", "NOREPLICAS", "MISCONF", "OOM", "NOPERM"} {
		if goredis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

// scrub replaces every secret found in msg.
func scrub(msg string, secrets ...string) string {
	for _, sec := range secrets {
		if sec != "" {
			msg = strings.ReplaceAll(msg, sec, "xxxxx")
		}
	}
	return msg
}

// nanos converts several times at once, to decimal strings.
func nanos(ts ...time.Time) ([]string, error) {
	out := make([]string, len(ts))
	for i, t := range ts {
		n, err := store.UnixNanos(t)
		if err != nil {
			return nil, err
		}
		out[i] = strconv.FormatInt(n, 10)
	}
	return out, nil
}

// sortLen is the length of a sortable time (see sortable).
const sortLen = 20

// sortable encodes Unix nanoseconds as sortLen digits whose byte order is
// the order of the times (the sign bit flipped, so negative times sort
// first).
func sortable(n int64) string {
	return fmt.Sprintf("%0*d", sortLen, uint64(n)^(1<<63))
}

// record is a hash read back from Redis.
type record map[string]string

func (r record) time(field string) (time.Time, error) {
	v, ok := r[field]
	if !ok {
		return time.Time{}, fmt.Errorf("field %q missing", field)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("field %q: %w", field, err)
	}
	if n == 0 {
		return time.Time{}, nil
	}
	return time.Unix(0, n).UTC(), nil
}

func (r record) int(field string) (int64, error) {
	n, err := strconv.ParseInt(r[field], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("field %q: %w", field, err)
	}
	return n, nil
}

// toRecord turns a flat HGETALL reply (field, value, ...) into a record.
func toRecord(v any) (record, error) {
	flat, ok := v.([]any)
	if !ok || len(flat)%2 != 0 {
		return nil, fmt.Errorf("unexpected reply %T", v)
	}
	r := make(record, len(flat)/2)
	for i := 0; i < len(flat); i += 2 {
		f, ok1 := flat[i].(string)
		val, ok2 := flat[i+1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("unexpected reply element %T, %T", flat[i], flat[i+1])
		}
		r[f] = val
	}
	return r, nil
}

// listed runs a script that returns id, fields, id, fields... and calls
// fn for each record.
func (s *Store) listed(ctx context.Context, sc *goredis.Script, keys []string, args []any, fn func(id string, r record) error) error {
	v, err := sc.Run(ctx, s.client, keys, args...).Slice()
	if err != nil {
		return err
	}
	if len(v)%2 != 0 {
		return fmt.Errorf("unexpected reply of %d elements", len(v))
	}
	for i := 0; i < len(v); i += 2 {
		id, ok := v[i].(string)
		if !ok {
			return fmt.Errorf("unexpected reply element %T", v[i])
		}
		r, err := toRecord(v[i+1])
		if err != nil {
			return err
		}
		if err := fn(id, r); err != nil {
			return fmt.Errorf("record %q: %w", id, err)
		}
	}
	return nil
}

// getRecord reads one hash; store.ErrNotFound when it does not exist.
func (s *Store) getRecord(ctx context.Context, key string) (record, error) {
	m, err := s.client.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, store.ErrNotFound
	}
	return record(m), nil
}

// invalid reports an argument refused before any command ran.
func (s *Store) invalid(op string, err error) error {
	return fmt.Errorf("redis: %s: %w", op, err)
}

// checkID rejects an empty identifier, which no record may have.
func checkID(what, id string) error {
	if id == "" {
		return fmt.Errorf("empty %s id", what)
	}
	return nil
}

func boolString(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

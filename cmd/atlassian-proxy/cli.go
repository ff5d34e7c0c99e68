package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/atlassian-proxy/atlassian-proxy/adminui"
	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	redisstore "github.com/atlassian-proxy/atlassian-proxy/store/redis"
)

// storeFlags are the flags every store subcommand takes.
type storeFlags struct {
	dataDir, secretKey, redisURL, redisPrefix string
}

func (f *storeFlags) register(fs *flag.FlagSet, e env) {
	def := e.getenv("DATA_DIR")
	if def == "" {
		def = "./data"
	}
	fs.StringVar(&f.dataDir, "data-dir", def, "directory of the embedded store (env DATA_DIR)")
	fs.StringVar(&f.secretKey, "secret-key", "", "key of stored secrets (env SECRET_KEY; default: the key file in DATA_DIR)")
	fs.StringVar(&f.redisURL, "redis-url", "", "use the Redis store at this URL (env REDIS_URL; default: the embedded store)")
	prefix := e.getenv("REDIS_PREFIX")
	if prefix == "" {
		prefix = redisstore.DefaultPrefix
	}
	fs.StringVar(&f.redisPrefix, "redis-prefix", prefix, "prefix of the Redis keys (env REDIS_PREFIX)")
}

// settings resolves the flags and the environment into store settings.
func (f *storeFlags) settings(e env) (storeSettings, error) {
	s := storeSettings{DataDir: f.dataDir, SecretKey: f.secretKey, RedisURL: f.redisURL,
		RedisPassword: e.getenv("REDIS_PASSWORD"), RedisPrefix: f.redisPrefix}
	if s.SecretKey == "" {
		s.SecretKey = e.getenv("SECRET_KEY")
	}
	if s.RedisURL == "" {
		s.RedisURL = e.getenv("REDIS_URL")
	}
	if err := parseRedisURL(s.RedisURL, &s.RedisURL); err != nil {
		return s, fmt.Errorf("%w: invalid REDIS_URL: %w", errUsage, err)
	}
	return s, nil
}

// open opens the store named by the flags.
func (f *storeFlags) open(ctx context.Context, e env) (openedStore, error) {
	s, err := f.settings(e)
	if err != nil {
		return openedStore{}, err
	}
	if s.RedisURL != "" {
		goredis.SetLogger(redisstore.Logger{L: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	}
	if s.RedisURL == "" {
		if _, err := os.Stat(filepath.Join(s.DataDir, dbFileName)); errors.Is(err, fs.ErrNotExist) {
			// Most likely a first set-up before the first start; but say so, in
			// case DATA_DIR points somewhere else than the server's.
			fmt.Fprintf(e.stderr, "note: no store in %s yet; creating a new one (the server must use the same DATA_DIR)\n", s.DataDir)
		}
	}
	return openStore(ctx, s)
}

// withService opens the store named by the flags and runs fn with a service on it.
func (f *storeFlags) withService(ctx context.Context, e env, fn func(*adminui.Service) error) error {
	st, err := f.open(ctx, e)
	if err != nil {
		return err
	}
	defer st.Close()
	logger := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// The server's catalog (MODELS_FILE too): a token limited to a model
	// the server does not serve would be refused on every request.
	catalog := gateway.DefaultCatalog()
	if path, _ := e.lookupEnv("MODELS_FILE"); path != "" {
		if catalog, err = loadCatalogFile(path); err != nil {
			return err
		}
	}
	return fn(adminui.NewService(st.Store, st.cipher, logger, catalog))
}

func newFlagSet(name, synopsis string, e env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: atlassian-proxy %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseArgs parses flags that may come before or after positional
// arguments. A bad flag is a usage error (exit status 2).
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %w", errUsage, err)
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func subcommand(e env, group string, args []string, subs map[string]func([]string) error, synopsis string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(e.stdout, "Usage: atlassian-proxy %s %s\n", group, synopsis)
		if len(args) == 0 {
			return fmt.Errorf("%w: %s needs a subcommand", errUsage, group)
		}
		return nil
	}
	fn, ok := subs[args[0]]
	if !ok {
		return fmt.Errorf("%w: unknown subcommand %q of %s (%s)", errUsage, args[0], group, synopsis)
	}
	return fn(args[1:])
}

func credentialCmd(ctx context.Context, e env, args []string) error {
	return subcommand(e, "credential", args, map[string]func([]string) error{
		"add":     func(a []string) error { return credentialAdd(ctx, e, a) },
		"list":    func(a []string) error { return credentialList(ctx, e, a) },
		"remove":  func(a []string) error { return credentialRemove(ctx, e, a) },
		"enable":  func(a []string) error { return credentialSetEnabled(ctx, e, a, true) },
		"disable": func(a []string) error { return credentialSetEnabled(ctx, e, a, false) },
		"reset":   func(a []string) error { return credentialReset(ctx, e, a) },
	}, "add|list|remove|enable|disable|reset")
}

func credentialAdd(ctx context.Context, e env, args []string) error {
	fs := newFlagSet("credential add", "credential add --email EMAIL --token TOKEN|- [--cloud-id ID] [--label LABEL] [--max-concurrency N]", e)
	var sf storeFlags
	sf.register(fs, e)
	var in adminui.CredentialInput
	fs.StringVar(&in.Email, "email", "", "Atlassian account email (required)")
	token := fs.String("token", "", `Atlassian API token; "-" reads it from standard input (keeps it out of the shell history)`)
	fs.StringVar(&in.CloudID, "cloud-id", "", "optional site cloud id (UUID) whose credits pay")
	fs.StringVar(&in.Label, "label", "", "optional label")
	fs.IntVar(&in.MaxConcurrency, "max-concurrency", 0, "in-flight requests allowed on this credential (0: the server default)")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	in.Token = *token
	if in.Token == "-" {
		line, err := bufio.NewReader(e.stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read the token from standard input: %w", err)
		}
		in.Token = strings.TrimSpace(line)
	}
	return sf.withService(ctx, e, func(svc *adminui.Service) error {
		c, err := svc.AddCredential(ctx, in)
		if err != nil {
			return describe(err)
		}
		fmt.Fprintf(e.stdout, "added credential %s (%s)\n", c.ID, c.Email)
		return nil
	})
}

func credentialList(ctx context.Context, e env, args []string) error {
	return listCommand(ctx, e, args, "credential list", (*adminui.Service).ListCredentials,
		"ID\tEMAIL\tTOKEN\tLABEL\tCLOUD ID\tENABLED\tMAX\tCREATED",
		func(c adminui.CredentialView) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%t\t%d\t%s", c.ID, c.Email, c.TokenMasked, dash(c.Label), dash(c.CloudID),
				c.Enabled, c.MaxConcurrency, c.CreatedAt.Format(time.DateTime))
		})
}

// listCommand runs a list subcommand: a table of one row per record, or
// JSON with --json.
func listCommand[T any](ctx context.Context, e env, args []string, name string,
	list func(*adminui.Service, context.Context) ([]T, error), header string, row func(T) string) error {
	fs := newFlagSet(name, name+" [--json]", e)
	var sf storeFlags
	sf.register(fs, e)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	return sf.withService(ctx, e, func(svc *adminui.Service) error {
		records, err := list(svc, ctx)
		if err != nil {
			return describe(err)
		}
		if *asJSON {
			return writeJSON(e.stdout, records)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, header)
		for _, r := range records {
			fmt.Fprintln(tw, row(r))
		}
		return tw.Flush()
	})
}

func credentialRemove(ctx context.Context, e env, args []string) error {
	return idCommand(ctx, e, args, "credential remove", "credential", "", func(svc *adminui.Service, id string) (string, error) {
		return "removed credential " + id, svc.RemoveCredential(ctx, id)
	})
}

// idCommand runs a subcommand that takes the store flags and exactly one
// record id, and prints what fn reports on success. about, when set, is a
// paragraph of its --help.
func idCommand(ctx context.Context, e env, args []string, name, what, about string, fn func(*adminui.Service, string) (string, error)) error {
	synopsis := name + " ID"
	if about != "" {
		synopsis += "\n\n" + about
	}
	fs := newFlagSet(name, synopsis, e)
	var sf storeFlags
	sf.register(fs, e)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: %s takes one %s id", errUsage, name, what)
	}
	return sf.withService(ctx, e, func(svc *adminui.Service) error {
		done, err := fn(svc, pos[0])
		if err != nil {
			return describe(err)
		}
		fmt.Fprintln(e.stdout, done)
		return nil
	})
}

// credentialSetEnabled takes a credential out of rotation or puts it back;
// enabling a disabled one also resets it as credentialReset does (a running
// server picks the change up within 2 s).
func credentialSetEnabled(ctx context.Context, e env, args []string, enabled bool) error {
	verb := map[bool]string{true: "enable", false: "disable"}[enabled]
	about := map[bool]string{
		true: "Puts a disabled credential back in rotation and clears its cooldown or invalid state\n" +
			"(as credential reset does); a running server (every replica) applies it within 2 s.",
		false: "Takes the credential out of rotation; requests in flight on it finish.",
	}[enabled]
	return idCommand(ctx, e, args, "credential "+verb, "credential", about, func(svc *adminui.Service, id string) (string, error) {
		return verb + "d credential " + id, svc.SetCredentialEnabled(ctx, id, enabled)
	})
}

// credentialReset clears a credential's cooldown or invalid state at once,
// as the admin API's reset does: it is stored as a recovery, so a running
// server and every replica apply it within a syncer round.
func credentialReset(ctx context.Context, e env, args []string) error {
	return idCommand(ctx, e, args, "credential reset", "credential",
		"Clears the credential's cooldown or invalid state at once (a rate limit, a refused or revoked\n"+
			"token), so the proxy tries it again; a running server (every replica) applies it within 2 s.\n"+
			"It does not enable a disabled credential.",
		func(svc *adminui.Service, id string) (string, error) {
			return "reset credential " + id, svc.ResetCredential(ctx, id)
		})
}

func tokenCmd(ctx context.Context, e env, args []string) error {
	return subcommand(e, "token", args, map[string]func([]string) error{
		"create": func(a []string) error { return tokenCreate(ctx, e, a) },
		"list":   func(a []string) error { return tokenList(ctx, e, a) },
		"revoke": func(a []string) error { return tokenRevoke(ctx, e, a) },
	}, "create|list|revoke")
}

func tokenCreate(ctx context.Context, e env, args []string) error {
	fs := newFlagSet("token create", "token create --name NAME [--expires 720h] [--models a,b] [--rate-limit N]", e)
	var sf storeFlags
	sf.register(fs, e)
	var in adminui.TokenInput
	fs.StringVar(&in.Name, "name", "", "a name for the token (required)")
	expires := fs.Duration("expires", 0, "lifetime of the token, e.g. 720h (0: never expires)")
	models := fs.String("models", "", "comma-separated models the token may use (empty: all)")
	fs.IntVar(&in.RateLimit, "rate-limit", 0, "requests per minute (0: unlimited)")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	if *expires < 0 {
		return fmt.Errorf("%w: --expires must not be negative", errUsage)
	}
	if *expires > 0 {
		in.ExpiresAt = time.Now().Add(*expires)
	}
	for m := range strings.SplitSeq(*models, ",") {
		if m = strings.TrimSpace(m); m != "" {
			in.AllowedModels = append(in.AllowedModels, m)
		}
	}
	return sf.withService(ctx, e, func(svc *adminui.Service) error {
		plain, t, err := svc.CreateToken(ctx, in)
		if err != nil {
			return describe(err)
		}
		fmt.Fprintf(e.stderr, "created token %s (%s); it is shown once, store it now:\n", t.ID, t.Name)
		fmt.Fprintln(e.stdout, plain)
		return nil
	})
}

func tokenList(ctx context.Context, e env, args []string) error {
	return listCommand(ctx, e, args, "token list", (*adminui.Service).ListTokens,
		"ID\tNAME\tPREFIX\tCREATED\tLAST USED\tEXPIRES",
		func(t adminui.TokenView) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", t.ID, t.Name, t.Prefix, t.CreatedAt.Format(time.DateTime),
				timeOrDash(t.LastUsedAt), timeOrDash(t.ExpiresAt))
		})
}

func tokenRevoke(ctx context.Context, e env, args []string) error {
	return idCommand(ctx, e, args, "token revoke", "token", "", func(svc *adminui.Service, id string) (string, error) {
		return "revoked token " + id, svc.RevokeToken(ctx, id)
	})
}

func resetPasswordCmd(ctx context.Context, e env, args []string) error {
	fs := newFlagSet("reset-password", "reset-password", e)
	var sf storeFlags
	sf.register(fs, e)
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	return sf.withService(ctx, e, func(svc *adminui.Service) error {
		pw, err := svc.ResetPassword(ctx)
		if err != nil {
			return describe(err)
		}
		fmt.Fprintln(e.stderr, "new admin password (must be changed at next login; every session was ended):")
		fmt.Fprintln(e.stdout, pw)
		return nil
	})
}

// describe turns service errors into messages for a terminal.
func describe(err error) error {
	var ve *adminui.ValidationError
	if errors.As(err, &ve) {
		return fmt.Errorf("%w: %s: %s", errUsage, ve.Field, ve.Message)
	}
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

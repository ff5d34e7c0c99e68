package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/auth"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// exportFormat names the file format of `export`; importVersion is the
// version this program writes and reads.
const (
	exportFormat  = "atlassian-proxy-export"
	exportVersion = 1
	// keyCheckID is the associated data of the export's key check: a
	// sealed known text that tells import whether SECRET_KEY is the one
	// the credentials were sealed with, before anything is written.
	keyCheckID   = "atlassian-proxy-export-key-check"
	keyCheckText = "atlassian-proxy"
	allDaysFrom  = "0001-01-01"
	allDaysTo    = "9999-12-31"
)

// dump is the whole store as `export` writes it. Credential tokens stay
// sealed with SECRET_KEY; API tokens are hashes; the admin password is its
// argon2id hash. Sessions are not exported: they are short-lived.
type dump struct {
	Format        string                  `json:"format"`
	Version       int                     `json:"version"`
	ExportedAt    time.Time               `json:"exported_at"`
	KeyCheck      []byte                  `json:"key_check"`
	Credentials   []store.Credential      `json:"credentials"`
	Tokens        []store.APIToken        `json:"tokens"`
	AdminPassword *store.AdminPassword    `json:"admin_password,omitempty"`
	States        []store.CredentialState `json:"credential_states"`
	Usage         []store.Usage           `json:"usage"`
}

func exportCmd(ctx context.Context, e env, args []string) error {
	fs := newFlagSet("export", "export [--force] [FILE]   (default: standard output)", e)
	var sf storeFlags
	sf.register(fs, e)
	force := fs.Bool("force", false, "export even while the Redis store records a data loss (the file would lack what was lost)")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 1 {
		return fmt.Errorf("%w: export takes at most one file name", errUsage)
	}
	st, err := sf.open(ctx, e)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := checkNoLoss(ctx, st, *force); err != nil {
		return err
	}
	d, err := readDump(ctx, st)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		if err := writeJSON(e.stdout, d); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	} else if err := writeFileAtomic(rest[0], d); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	fmt.Fprintf(e.stderr, "exported %d credentials, %d tokens, %d states, %d usage rows%s\n",
		len(d.Credentials), len(d.Tokens), len(d.States), len(d.Usage), map[bool]string{true: " and the admin password"}[d.AdminPassword != nil])
	return nil
}

// checkNoLoss refuses to export a Redis store that records a data loss:
// it holds only what was written since, and a daily export of it would
// pass for a backup (and be restored one day instead of the last good one).
func checkNoLoss(ctx context.Context, st openedStore, force bool) error {
	if st.redis == nil || force {
		return nil
	}
	rec, err := st.redis.Loss(ctx)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if rec != nil {
		return fmt.Errorf("export: the store lost its data (%s) and holds only what was written since; "+
			"an export now is no backup. Restore the last good export with `atlassian-proxy import` first "+
			"(see docs/operations.md), or pass --force to export what there is", rec)
	}
	return nil
}

// writeFileAtomic writes v as JSON to a new file of mode 0600 (it holds
// sealed secrets and password hashes) next to path, then renames it over
// path: an existing file keeps no looser mode, and a failed write leaves
// the previous backup whole.
func writeFileAtomic(path string, v any) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".export-*") // mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := writeJSON(tmp, v); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func readDump(ctx context.Context, st openedStore) (*dump, error) {
	d := &dump{Format: exportFormat, Version: exportVersion, ExportedAt: time.Now().UTC()}
	var err error
	if d.KeyCheck, err = st.cipher.Seal(keyCheckID, []byte(keyCheckText)); err != nil {
		return nil, err
	}
	if d.Credentials, err = st.ListCredentials(ctx); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if d.Tokens, err = st.ListTokens(ctx); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	switch pw, err := st.AdminPassword(ctx); {
	case err == nil:
		d.AdminPassword = &pw
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("export: %w", err)
	}
	if d.States, err = st.ListCredentialStates(ctx); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if d.Usage, err = st.ListUsage(ctx, allDaysFrom, allDaysTo); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	return d, nil
}

func importCmd(ctx context.Context, e env, args []string) error {
	fs := newFlagSet("import", "import [--keep-password] FILE   (- reads standard input)\n"+
		"       atlassian-proxy import --clear-loss   (Redis: the store was re-seeded by hand)", e)
	var sf storeFlags
	sf.register(fs, e)
	keepPassword := fs.Bool("keep-password", false, "leave the target's admin password as it is")
	clearLoss := fs.Bool("clear-loss", false, "import nothing, only clear the record of a Redis data loss "+
		"(after re-seeding the store by hand; an import clears it by itself)")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *clearLoss {
		return clearLossCmd(ctx, e, &sf, rest)
	}
	if len(rest) != 1 {
		return fmt.Errorf("%w: import takes one file name (- for standard input)", errUsage)
	}
	var in io.Reader = e.stdin
	if rest[0] != "-" {
		f, err := os.Open(rest[0])
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		defer f.Close()
		in = f
	}
	var d dump
	dec := json.NewDecoder(in)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return fmt.Errorf("%w: import: %s is not an export file: %w", errUsage, rest[0], err)
	}
	if d.Format != exportFormat || d.Version != exportVersion {
		return fmt.Errorf("%w: import: %s is not a version %d %s file", errUsage, rest[0], exportVersion, exportFormat)
	}
	st, err := sf.open(ctx, e)
	if err != nil {
		return err
	}
	defer st.Close()
	// Check the key before writing anything: credentials sealed with
	// another key would be useless in the target.
	if _, err := st.cipher.Open(keyCheckID, d.KeyCheck); err != nil {
		return fmt.Errorf("%w: import: SECRET_KEY is not the key this export was made with; "+
			"use the same SECRET_KEY (rotate it afterwards with rotate-key)", errUsage)
	}
	for _, c := range d.Credentials {
		if _, err := st.cipher.Open(c.ID, c.Token); err != nil {
			return fmt.Errorf("import: credential %s cannot be opened with SECRET_KEY; nothing was imported", c.ID)
		}
	}
	r, err := applyDump(ctx, st, &d, !*keepPassword)
	fmt.Fprintf(e.stderr, "imported %d credentials (%d already there), %d tokens (%d already there), %d states, %d usage rows (%d already there)%s\n",
		r.creds, r.credsSkipped, r.tokens, r.tokensSkipped, r.states, r.usage, r.usageSkipped,
		map[bool]string{true: ", the admin password"}[r.password])
	if err != nil || st.redis == nil {
		return err
	}
	// The data is back: the replicas may stop reporting its loss. (A failed
	// import leaves the record: run it again, it is safe to.)
	rec, err := st.redis.ClearLoss(ctx)
	if err != nil {
		return fmt.Errorf("import: the data is in, but the record of the store's data loss could not be cleared "+
			"(run `atlassian-proxy import --clear-loss`): %w", err)
	}
	if rec != nil {
		fmt.Fprintf(e.stderr, "cleared the record of the store's data loss (%s): the replicas report ready within 2 s\n", rec)
	}
	return nil
}

// clearLossCmd is `import --clear-loss`: the operator re-seeded a Redis
// that lost its data by hand (no export to import) and says it is whole
// again, so that the replicas stop reporting the loss.
func clearLossCmd(ctx context.Context, e env, sf *storeFlags, rest []string) error {
	if len(rest) != 0 {
		return fmt.Errorf("%w: import --clear-loss takes no file (an import clears the record by itself)", errUsage)
	}
	settings, err := sf.settings(e)
	if err != nil {
		return err
	}
	if settings.RedisURL == "" {
		return fmt.Errorf("%w: import --clear-loss: only a Redis store (REDIS_URL) records a data loss", errUsage)
	}
	st, err := sf.open(ctx, e)
	if err != nil {
		return err
	}
	defer st.Close()
	rec, err := st.redis.ClearLoss(ctx)
	if err != nil {
		return fmt.Errorf("import --clear-loss: %w", err)
	}
	if rec == nil {
		fmt.Fprintln(e.stderr, "no data loss is recorded: nothing to clear")
		return nil
	}
	fmt.Fprintf(e.stderr, "cleared the record of the store's data loss (%s): the replicas take the store as it is "+
		"and report ready within 2 s\n", rec)
	return nil
}

type importResult struct {
	creds, credsSkipped, tokens, tokensSkipped, states, usage, usageSkipped int
	password                                                                bool
}

// applyDump writes d into st. Records already there (same identity) are
// kept as they are, so an import can be run again safely; usage rows whose
// key is already in the target are skipped so they are not counted twice.
func applyDump(ctx context.Context, st store.Store, d *dump, password bool) (importResult, error) {
	var r importResult
	// Tokens and the password first, credentials last: a replica reloading
	// while the import runs never sees credentials without their tokens.
	// (A replica holding its state after a data loss waits for the loss
	// record to be cleared, which import does only once all is written.)
	for _, t := range d.Tokens {
		switch err := st.CreateToken(ctx, t); {
		case err == nil:
			r.tokens++
		case errors.Is(err, store.ErrDuplicate):
			r.tokensSkipped++
		default:
			return r, fmt.Errorf("import token %s: %w", t.ID, err)
		}
	}
	if password && d.AdminPassword != nil {
		if err := st.SetAdminPassword(ctx, *d.AdminPassword); err != nil {
			return r, fmt.Errorf("import admin password: %w", err)
		}
		r.password = true
	}
	created := make(map[string]bool, len(d.Credentials))
	for _, c := range d.Credentials {
		switch err := st.CreateCredential(ctx, c); {
		case err == nil:
			r.creds++
			created[c.ID] = true
		case errors.Is(err, store.ErrDuplicate):
			r.credsSkipped++
		default:
			return r, fmt.Errorf("import credential %s: %w", c.ID, err)
		}
	}
	// States only of the credentials imported now: a credential that was
	// already there keeps its own (newer) state.
	for _, s := range d.States {
		if !created[s.CredentialID] {
			continue
		}
		if err := st.SetCredentialState(ctx, s); err != nil {
			return r, fmt.Errorf("import state of %s: %w", s.CredentialID, err)
		}
		r.states++
	}
	if len(d.Usage) > 0 {
		have, err := st.ListUsage(ctx, allDaysFrom, allDaysTo)
		if err != nil {
			return r, fmt.Errorf("import usage: %w", err)
		}
		type key struct{ day, cred, token, model string }
		seen := make(map[key]bool, len(have))
		for _, u := range have {
			seen[key{u.Day, u.CredentialID, u.TokenID, u.Model}] = true
		}
		var rows []store.Usage
		for _, u := range d.Usage {
			if seen[key{u.Day, u.CredentialID, u.TokenID, u.Model}] {
				r.usageSkipped++
				continue
			}
			rows = append(rows, u)
		}
		if len(rows) > 0 {
			if err := st.AddUsage(ctx, rows); err != nil {
				return r, fmt.Errorf("import usage: %w", err)
			}
		}
		r.usage = len(rows)
	}
	return r, nil
}

// rotateKeyCmd re-seals every credential's token from the current key
// (SECRET_KEY, or the key file in DATA_DIR) to NEW_SECRET_KEY. It is safe
// to run again after an interruption: tokens already sealed with the new
// key are left alone.
func rotateKeyCmd(ctx context.Context, e env, args []string) error {
	fs := newFlagSet("rotate-key", "rotate-key   (old key: SECRET_KEY or the key file; new key: NEW_SECRET_KEY)", e)
	var sf storeFlags
	sf.register(fs, e)
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	newKey, err := auth.ParseKey(e.getenv("NEW_SECRET_KEY"))
	if e.getenv("NEW_SECRET_KEY") == "" || err != nil {
		return fmt.Errorf("%w: rotate-key needs the new key in NEW_SECRET_KEY (32 random bytes, base64: openssl rand -base64 32)", errUsage)
	}
	newCipher, err := auth.NewCipher(newKey)
	if err != nil {
		return err
	}
	settings, err := sf.settings(e)
	if err != nil {
		return err
	}
	st, err := sf.open(ctx, e)
	if err != nil {
		return err
	}
	defer st.Close()
	creds, err := st.ListCredentials(ctx)
	if err != nil {
		return err
	}
	// Open every token first: one that opens with neither key stops the
	// rotation before anything is written.
	plain := make([][]byte, len(creds))
	for i, c := range creds {
		if _, err := newCipher.Open(c.ID, c.Token); err == nil {
			continue // already sealed with the new key
		}
		p, err := st.cipher.Open(c.ID, c.Token)
		if err != nil {
			return fmt.Errorf("rotate-key: credential %s opens with neither the current nor the new key; nothing was changed", c.ID)
		}
		plain[i] = p
	}
	rotated := 0
	for i, listed := range creds {
		if plain[i] == nil {
			continue // already rotated
		}
		// Read it again just before the write, so that a change made
		// meanwhile (enabled, label, limit) is kept.
		c, err := st.GetCredential(ctx, listed.ID)
		if errors.Is(err, store.ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return fmt.Errorf("rotate-key: credential %s: %w (run rotate-key again to finish)", listed.ID, err)
		}
		if !bytes.Equal(c.Token, listed.Token) {
			return fmt.Errorf("rotate-key: credential %s changed while rotating; run rotate-key again", c.ID)
		}
		sealed, err := newCipher.Seal(c.ID, plain[i])
		if err != nil {
			return err
		}
		c.Token = sealed
		c.UpdatedAt = time.Now().UTC()
		if err := st.UpdateCredential(ctx, c); err != nil {
			return fmt.Errorf("rotate-key: credential %s: %w (run rotate-key again to finish)", c.ID, err)
		}
		rotated++
	}
	// A credential added while this ran was sealed with the old key.
	if again, err := st.ListCredentials(ctx); err == nil {
		for _, c := range again {
			if _, err := newCipher.Open(c.ID, c.Token); err != nil {
				return fmt.Errorf("rotate-key: credential %s was added during the rotation with the old key; run rotate-key again", c.ID)
			}
		}
	}
	if settings.SecretKey == "" && settings.RedisURL == "" {
		if err := auth.ReplaceKeyFile(filepath.Join(settings.DataDir, keyFileName), newKey); err != nil {
			return fmt.Errorf("rotate-key: the credentials are sealed with NEW_SECRET_KEY but the key file was not replaced "+
				"(set SECRET_KEY to the new key): %w", err)
		}
		fmt.Fprintf(e.stderr, "re-sealed %d credentials; the key file in %s now holds the new key\n", rotated, settings.DataDir)
		return nil
	}
	fmt.Fprintf(e.stderr, "re-sealed %d credentials with NEW_SECRET_KEY; now restart every replica with SECRET_KEY set to it\n", rotated)
	return nil
}

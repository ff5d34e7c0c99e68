package redis

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// touchBatch is how many tokens one script of TouchTokens updates.
const touchBatch = 500

func decodeToken(id string, r record) (store.APIToken, error) {
	t := store.APIToken{ID: id, Name: r["name"], Prefix: r["prefix"]}
	if h := r["hash"]; h != "" {
		t.Hash = []byte(h)
	}
	var err error
	if t.CreatedAt, err = r.time("created"); err != nil {
		return store.APIToken{}, err
	}
	if t.ExpiresAt, err = r.time("expires"); err != nil {
		return store.APIToken{}, err
	}
	if t.LastUsedAt, err = r.time("used"); err != nil {
		return store.APIToken{}, err
	}
	rl, err := r.int("rl")
	if err != nil {
		return store.APIToken{}, err
	}
	t.RateLimit = int(rl)
	if t.AllowedModels, err = store.DecodeModels(r["models"]); err != nil {
		return store.APIToken{}, err
	}
	return t, nil
}

// ListTokens returns every API token, sorted by CreatedAt then ID.
func (s *Store) ListTokens(ctx context.Context) ([]store.APIToken, error) {
	out := []store.APIToken{}
	err := s.run(ctx, "list tokens", func(ctx context.Context) error {
		return s.listed(ctx, listRecords, []string{s.k.toks}, []any{s.k.tok}, func(id string, r record) error {
			t, err := decodeToken(id, r)
			out = append(out, t)
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b store.APIToken) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// CreateToken stores t; store.ErrDuplicate when its ID or its hash exists.
func (s *Store) CreateToken(ctx context.Context, t store.APIToken) error {
	op := fmt.Sprintf("create token %q", t.ID)
	if err := checkID("token", t.ID); err != nil {
		return s.invalid(op, err)
	}
	ts, err := nanos(t.CreatedAt, t.ExpiresAt, t.LastUsedAt)
	if err != nil {
		return s.invalid(op, err)
	}
	models, err := store.EncodeModels(t.AllowedModels)
	if err != nil {
		return s.invalid(op, err)
	}
	return s.run(ctx, op, func(ctx context.Context) error {
		return s.script(ctx, tokCreate, []string{s.k.tok + t.ID, s.k.toks, s.k.tokHash, s.k.gen},
			t.ID, string(t.Hash), s.k.events,
			"name", t.Name, "prefix", t.Prefix, "hash", string(t.Hash), "created", ts[0], "expires", ts[1],
			"used", ts[2], "models", models, "rl", strconv.Itoa(t.RateLimit))
	})
}

// UpdateToken changes the name, expiry, allowed models and rate limit of
// the token t.ID; the other fields are left as they are. store.ErrNotFound
// when it does not exist.
func (s *Store) UpdateToken(ctx context.Context, t store.APIToken) error {
	op := fmt.Sprintf("update token %q", t.ID)
	ts, err := nanos(t.ExpiresAt)
	if err != nil {
		return s.invalid(op, err)
	}
	models, err := store.EncodeModels(t.AllowedModels)
	if err != nil {
		return s.invalid(op, err)
	}
	return s.run(ctx, op, func(ctx context.Context) error {
		return s.script(ctx, tokUpdate, []string{s.k.tok + t.ID, s.k.gen}, s.k.events,
			"name", t.Name, "expires", ts[0], "models", models, "rl", strconv.Itoa(t.RateLimit))
	})
}

// DeleteToken removes a token; store.ErrNotFound when it does not exist.
func (s *Store) DeleteToken(ctx context.Context, id string) error {
	return s.run(ctx, fmt.Sprintf("delete token %q", id), func(ctx context.Context) error {
		return s.script(ctx, tokDelete, []string{s.k.tok + id, s.k.toks, s.k.tokHash, s.k.gen}, id, s.k.events)
	})
}

// TouchTokens sets the last-used time of every listed token that exists;
// unknown ids are ignored. Each batch of touchBatch tokens is one script.
func (s *Store) TouchTokens(ctx context.Context, lastUsed map[string]time.Time) error {
	const op = "touch tokens"
	if len(lastUsed) == 0 {
		return nil
	}
	ids := slices.Sorted(maps.Keys(lastUsed))
	keys := make([]string, len(ids))
	args := make([]any, len(ids))
	for i, id := range ids {
		n, err := store.UnixNanos(lastUsed[id])
		if err != nil {
			return fmt.Errorf("redis: %s: token %q: %w", op, id, err)
		}
		keys[i], args[i] = s.k.tok+id, strconv.FormatInt(n, 10)
	}
	for start := 0; start < len(ids); start += touchBatch {
		end := min(start+touchBatch, len(ids))
		err := s.run(ctx, op, func(ctx context.Context) error {
			return s.script(ctx, tokTouch, keys[start:end], args[start:end]...)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

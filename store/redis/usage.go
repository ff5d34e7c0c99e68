package redis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

const (
	// usageTTL is how long the counters of a day live after their last
	// change.
	usageTTL = 400 * 24 * time.Hour
	// usageBatch is how many rows one script of AddUsage adds.
	usageBatch = 256
)

// The counters of a day are one hash, usage:<day>. Each row has four
// fields: a letter naming the counter (r requests, f failures, i input
// tokens, o output tokens) followed by the row's key, encoded as
// <len>:<credential id><len>:<token id><model>, which no two keys share.

func usageKey(u store.Usage) string {
	return strconv.Itoa(len(u.CredentialID)) + ":" + u.CredentialID + strconv.Itoa(len(u.TokenID)) + ":" + u.TokenID + u.Model
}

var errUsageField = errors.New("malformed usage field")

// parseUsageKey reverses usageKey into the key fields of u.
func parseUsageKey(f string, u *store.Usage) error {
	var parts [2]string
	for i := range parts {
		n, rest, ok := strings.Cut(f, ":")
		if !ok {
			return errUsageField
		}
		l, err := strconv.Atoi(n)
		if err != nil || l < 0 || l > len(rest) {
			return errUsageField
		}
		parts[i], f = rest[:l], rest[l:]
	}
	u.CredentialID, u.TokenID, u.Model = parts[0], parts[1], f
	return nil
}

// AddUsage adds the counts of every row to the stored row with the same
// (Day, CredentialID, TokenID, Model), creating it when absent. The rows
// are checked first (a batch with an invalid day writes nothing), then
// added by scripts of up to usageBatch rows, each atomic. The counters of
// a day expire usageTTL after their last change.
func (s *Store) AddUsage(ctx context.Context, rows []store.Usage) error {
	const op = "add usage"
	for _, u := range rows {
		if err := store.CheckDay(u.Day); err != nil {
			return s.invalid(op, err)
		}
	}
	ttl := strconv.FormatInt(int64(usageTTL/time.Second), 10)
	for start := 0; start < len(rows); start += usageBatch {
		batch := rows[start:min(start+usageBatch, len(rows))]
		keys := []string{s.k.usageDays}
		var days []any
		dayNum := map[string]int{}
		var counts []any
		for _, u := range batch {
			n, ok := dayNum[u.Day]
			if !ok {
				n = len(days) + 1
				dayNum[u.Day] = n
				days = append(days, u.Day)
				keys = append(keys, s.k.usage+u.Day)
			}
			counts = append(counts, n, usageKey(u), u.Requests, u.Failures, u.InputTokens, u.OutputTokens)
		}
		args := append([]any{s.k.usage, ttl, len(days)}, days...)
		args = append(args, counts...)
		err := s.run(ctx, op, func(ctx context.Context) error {
			return s.script(ctx, usageAdd, keys, args...)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// ListUsage returns the rows of the days from fromDay to toDay (both
// included), sorted by Day, CredentialID, TokenID, Model.
func (s *Store) ListUsage(ctx context.Context, fromDay, toDay string) ([]store.Usage, error) {
	const op = "list usage"
	for _, d := range []string{fromDay, toDay} {
		if err := store.CheckDay(d); err != nil {
			return nil, s.invalid(op, err)
		}
	}
	out := []store.Usage{}
	err := s.run(ctx, op, func(ctx context.Context) error {
		return s.listed(ctx, usageList, []string{s.k.usageDays}, []any{s.k.usage, "[" + fromDay, "[" + toDay},
			func(day string, r record) error {
				rows := map[string]*store.Usage{}
				for field, v := range r {
					if field == "" {
						return errUsageField
					}
					key := field[1:]
					u := rows[key]
					if u == nil {
						u = &store.Usage{Day: day}
						if err := parseUsageKey(key, u); err != nil {
							return err
						}
						rows[key] = u
					}
					n, err := strconv.ParseInt(v, 10, 64)
					if err != nil {
						return fmt.Errorf("usage counter: %w", err)
					}
					switch field[0] {
					case 'r':
						u.Requests = n
					case 'f':
						u.Failures = n
					case 'i':
						u.InputTokens = n
					case 'o':
						u.OutputTokens = n
					default:
						return errUsageField
					}
				}
				for _, u := range rows {
					out = append(out, *u)
				}
				return nil
			})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b store.Usage) int {
		return cmp.Or(strings.Compare(a.Day, b.Day), strings.Compare(a.CredentialID, b.CredentialID),
			strings.Compare(a.TokenID, b.TokenID), strings.Compare(a.Model, b.Model))
	})
	return out, nil
}

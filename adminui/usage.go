package adminui

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/store"
	"github.com/atlassian-proxy/atlassian-proxy/usage"
)

// Usage days are UTC dates (store.Usage.Day).
const (
	dayLayout        = usage.DayLayout
	defaultUsageDays = 7
	maxUsageDays     = 366
)

// UsageCounts are the counters of a set of usage rows.
type UsageCounts struct {
	Requests     int64 `json:"requests"`
	Failures     int64 `json:"failures"`
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

func (c *UsageCounts) add(u store.Usage) {
	c.Requests += u.Requests
	c.Failures += u.Failures
	c.InputTokens += u.InputTokens
	c.OutputTokens += u.OutputTokens
}

// Tokens is input plus output tokens.
func (c UsageCounts) Tokens() int64 { return c.InputTokens + c.OutputTokens }

// UsageByID are the counters of one credential, API token or model. Name is
// the credential's label (or email) or the token's name, when it still
// exists; ID is "" for requests that no credential served.
type UsageByID struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	UsageCounts
}

// UsageByDay are the counters of one UTC day.
type UsageByDay struct {
	Day string `json:"day"`
	UsageCounts
}

// UsageReport is the usage of a range of days, totalled four ways.
type UsageReport struct {
	Object       string       `json:"object"` // "usage"
	From         string       `json:"from"`
	To           string       `json:"to"`
	Totals       UsageCounts  `json:"totals"`
	ByCredential []UsageByID  `json:"by_credential"`
	ByToken      []UsageByID  `json:"by_token"`
	ByModel      []UsageByID  `json:"by_model"`
	ByDay        []UsageByDay `json:"by_day"` // every day of the range, oldest first
}

// Usage aggregates the usage rows of [from, to] (UTC days, both included,
// already validated by parseUsageRange).
func (s *Service) Usage(ctx context.Context, from, to string) (UsageReport, error) {
	rows, err := s.st.ListUsage(ctx, from, to)
	if err != nil {
		return UsageReport{}, fmt.Errorf("usage: %w", err)
	}
	rep := UsageReport{Object: "usage", From: from, To: to}
	creds, toks, models := map[string]*UsageCounts{}, map[string]*UsageCounts{}, map[string]*UsageCounts{}
	days := map[string]*UsageCounts{}
	for _, u := range rows {
		rep.Totals.add(u)
		for _, g := range []struct {
			m map[string]*UsageCounts
			k string
		}{{creds, u.CredentialID}, {toks, u.TokenID}, {models, u.Model}, {days, u.Day}} {
			c := g.m[g.k]
			if c == nil {
				c = &UsageCounts{}
				g.m[g.k] = c
			}
			c.add(u)
		}
	}
	credNames, tokNames := s.names(ctx)
	rep.ByCredential = byID(creds, credNames)
	rep.ByToken = byID(toks, tokNames)
	rep.ByModel = byID(models, nil)
	start, _ := time.Parse(dayLayout, from)
	end, _ := time.Parse(dayLayout, to)
	for d := start; !d.After(end); d = d.AddDate(0, 0, 1) {
		day := UsageByDay{Day: d.Format(dayLayout)}
		if c := days[day.Day]; c != nil {
			day.UsageCounts = *c
		}
		rep.ByDay = append(rep.ByDay, day)
	}
	return rep, nil
}

// names maps credential ids to their label (or email) and token ids to
// their names. A store error leaves the names out: they are a convenience.
func (s *Service) names(ctx context.Context) (creds, toks map[string]string) {
	creds, toks = map[string]string{}, map[string]string{}
	if cs, err := s.st.ListCredentials(ctx); err == nil {
		for _, c := range cs {
			creds[c.ID] = cmp.Or(c.Label, c.Email)
		}
	}
	if ts, err := s.st.ListTokens(ctx); err == nil {
		for _, t := range ts {
			toks[t.ID] = t.Name
		}
	}
	return creds, toks
}

func byID(m map[string]*UsageCounts, names map[string]string) []UsageByID {
	out := make([]UsageByID, 0, len(m))
	for id, c := range m {
		out = append(out, UsageByID{ID: id, Name: names[id], UsageCounts: *c})
	}
	slices.SortFunc(out, func(a, b UsageByID) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// UsageToday is today's (UTC) usage, totalled and per API token.
func (s *Service) UsageToday(ctx context.Context) (UsageCounts, map[string]UsageCounts, error) {
	today := s.now().UTC().Format(dayLayout)
	rows, err := s.st.ListUsage(ctx, today, today)
	if err != nil {
		return UsageCounts{}, nil, fmt.Errorf("usage today: %w", err)
	}
	var total UsageCounts
	perToken := map[string]UsageCounts{}
	for _, u := range rows {
		total.add(u)
		c := perToken[u.TokenID]
		c.add(u)
		perToken[u.TokenID] = c
	}
	return total, perToken, nil
}

// parseUsageRange reads ?from=YYYY-MM-DD&to=YYYY-MM-DD. Without from the
// range is the 7 days ending at to (default today, UTC); without to it ends
// today. from must not be after to, and the range spans at most 366 days.
func parseUsageRange(q url.Values, now time.Time) (from, to string, err error) {
	today := now.UTC().Truncate(24 * time.Hour)
	end := today
	if v := q.Get("to"); v != "" {
		if end, err = parseDay(v); err != nil {
			return "", "", invalid("to", "to must be a date as YYYY-MM-DD")
		}
	}
	start := end.AddDate(0, 0, -(defaultUsageDays - 1))
	if v := q.Get("from"); v != "" {
		if start, err = parseDay(v); err != nil {
			return "", "", invalid("from", "from must be a date as YYYY-MM-DD")
		}
	}
	switch {
	case start.After(end):
		return "", "", invalid("from", "from must not be after to")
	case end.Sub(start) >= maxUsageDays*24*time.Hour:
		return "", "", invalid("from", fmt.Sprintf("the range must span at most %d days", maxUsageDays))
	}
	return start.Format(dayLayout), end.Format(dayLayout), nil
}

func parseDay(s string) (time.Time, error) {
	if len(s) != len(dayLayout) {
		return time.Time{}, fmt.Errorf("bad day %q", s)
	}
	return time.Parse(dayLayout, s)
}

package adminui

import (
	"cmp"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/usage"
)

// The dashboard: the pool at a glance, the last hour of this process as a
// server-rendered SVG chart, today's usage (from the store, shared by all
// replicas) and the upstream's recent errors. The "live" part is also
// served alone as a fragment, which the page's script fetches every few
// seconds.

const (
	chartMinutes = 60
	recentShown  = 10
)

type dashboardPage struct {
	page
	HasPool   bool
	Totals    pool.Totals
	Attention []credRow // cooling or invalid credentials

	HasActivity  bool
	Chart        chart
	HourRequests int64
	HourFailures int64
	HourTokens   int64
	// HourAttemptFailures are the upstream attempts that failed in the
	// last hour, whether failover then served the request or not: the
	// upstream's trouble that clients may never have seen.
	HourAttemptFailures int64
	Errors              []errorRow

	Today      UsageCounts
	TodayError bool // the store could not be read
}

type errorRow struct {
	At         time.Time
	Credential string
	Model      string
	Error      string
	// Attempt: one failed attempt, after which the request moved on to
	// another credential (or failed, which is its own row); else what the
	// client was told.
	Attempt bool
}

func (a *Admin) pageDashboard(w http.ResponseWriter, r *http.Request) {
	a.renderPage(w, r, http.StatusOK, "dashboard", a.dashboard(r))
}

func (a *Admin) fragmentDashboard(w http.ResponseWriter, r *http.Request) {
	a.render(w, r, http.StatusOK, "dashboard", "live", a.dashboard(r))
}

func (a *Admin) dashboard(r *http.Request) dashboardPage {
	d := dashboardPage{page: a.basePage(r, "Dashboard", "dashboard")}
	names := map[string]string{}
	if a.pool != nil {
		st := a.pool.Status()
		d.HasPool, d.Totals = true, st.Totals
		for _, c := range st.Credentials {
			names[c.ID] = cmp.Or(c.Label, c.Email)
			if c.State == pool.StateCooling || c.State == pool.StateInvalid {
				d.Attention = append(d.Attention, rowFromStatus(c))
			}
		}
	}
	if a.activity != nil {
		d.HasActivity = true
		mins := a.activity.Minutes(chartMinutes)
		for _, m := range mins {
			d.HourRequests += m.Requests
			d.HourFailures += m.Failures
			d.HourTokens += m.InputTokens + m.OutputTokens
			d.HourAttemptFailures += m.AttemptFailures
		}
		d.Chart = newChart(mins)
		for _, e := range a.activity.RecentErrors(recentShown) {
			d.Errors = append(d.Errors, errorRow{At: e.At, Credential: cmp.Or(names[e.CredentialID], e.CredentialID, "–"),
				Model: cmp.Or(e.Model, "–"), Error: e.Error, Attempt: e.Attempt})
		}
	}
	today, _, err := a.svc.UsageToday(r.Context())
	if err != nil {
		a.logger.LogAttrs(r.Context(), slog.LevelWarn, "dashboard: usage today", slog.String("error", err.Error()))
		d.TodayError = true
	}
	d.Today = today
	return d
}

// chart is a bar chart of requests per minute (failures stacked in red),
// drawn in a fixed viewBox; the page's CSS scales it.
type chart struct {
	Bars    []chartBar
	Max     int64 // the top of the scale
	Half    int64 // the middle grid line
	Summary string
}

// chartBar is one minute: the requests bar (X, Y, W, H), the failures part
// of it (FY, FH), and a tooltip.
type chartBar struct {
	X, Y, W, H, FY, FH float64
	Title              string
}

// Chart geometry: the viewBox is 0 0 960 200; the plot spans x 48–944
// and y 10–170 (the bottom line is 0).
const (
	chartLeft   = 48.0
	chartRight  = 944.0
	chartTop    = 10.0
	chartBottom = 170.0
)

func newChart(mins []usage.Minute) chart {
	var peak, total, failed int64
	for _, m := range mins {
		peak = max(peak, m.Requests)
		total += m.Requests
		failed += m.Failures
	}
	c := chart{Max: niceCeil(peak)}
	c.Half = c.Max / 2
	scale := (chartBottom - chartTop) / float64(c.Max)
	slot := (chartRight - chartLeft) / float64(max(len(mins), 1))
	for i, m := range mins {
		b := chartBar{X: chartLeft + float64(i)*slot + 1, W: slot - 2}
		b.H = float64(m.Requests) * scale
		b.Y = chartBottom - b.H
		b.FH = float64(min(m.Failures, m.Requests)) * scale
		b.FY = chartBottom - b.FH
		b.Title = fmt.Sprintf("%s UTC: %s requests, %s failed, %s tokens, %s failed upstream attempts", m.Start.UTC().Format("15:04"),
			groupDigits(m.Requests), groupDigits(m.Failures), groupDigits(m.InputTokens+m.OutputTokens), groupDigits(m.AttemptFailures))
		c.Bars = append(c.Bars, b)
	}
	c.Summary = fmt.Sprintf("Requests per minute over the last %d minutes: %s in total, %s failed, at most %s in one minute.",
		len(mins), groupDigits(total), groupDigits(failed), groupDigits(peak))
	return c
}

// niceCeil rounds n up to 2, 4 or 10 times a power of ten (at least 2),
// so that the half-way grid line is a whole number too.
func niceCeil(n int64) int64 {
	for p := int64(1); ; p *= 10 {
		for _, m := range []int64{2, 4, 10} {
			if m*p >= n {
				return m * p
			}
		}
	}
}

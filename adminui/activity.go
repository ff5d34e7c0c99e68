package adminui

import (
	"context"

	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/usage"
)

// Activity is the recent traffic of this process, for the dashboard.
// *usage.Recorder implements it.
type Activity interface {
	// Minutes returns the last n minutes, oldest first, the current last.
	Minutes(n int) []usage.Minute
	// RecentErrors returns up to n of the latest failures, newest first.
	RecentErrors(n int) []usage.ErrorEvent
}

// Checker asks the upstream's credits check about a credential before it
// is added. *gateway.Client implements it; a refusal is a *gateway.Error.
type Checker interface {
	CheckCredits(ctx context.Context, c pool.Credential) (*gateway.Credits, error)
}

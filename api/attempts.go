package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/atlassian-proxy/atlassian-proxy/dispatch"
	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// attemptFailed tells the usage accounting about one upstream attempt that
// failed on a credential (rate limited, refused, failing, unreachable), so
// that the dashboard shows the upstream's trouble even when failover hides
// it from the client. A client's own error and a client that went away are
// not the upstream's trouble. The text is the error kind and the
// upstream's cleaned message: never a secret.
func (a *API) attemptFailed(ctx context.Context, cred pool.Credential, model string, err error) {
	if a.usage == nil || err == nil {
		return
	}
	switch o := dispatch.Classify(ctx, err); o {
	case pool.OutcomeSuccess, pool.OutcomeClientError, pool.OutcomeCanceled:
		return
	default:
		var ge *gateway.Error
		msg := o.String() + ": the upstream could not be reached"
		if errors.As(err, &ge) {
			msg = fmt.Sprintf("%s (HTTP %d): %s", ge.Kind, ge.Status, ge.Message)
			if ge.Status == 0 {
				msg = fmt.Sprintf("%s: %s", ge.Kind, ge.Message)
			}
		}
		a.usage.RecordAttemptFailure(cred.ID, model, clip(msg, 300))
	}
}

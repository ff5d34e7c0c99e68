package api

import (
	"context"
	"errors"

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
	o := dispatch.Classify(ctx, err)
	switch o {
	case pool.OutcomeSuccess, pool.OutcomeClientError, pool.OutcomeCanceled:
		return
	}
	msg := o.String() + ": the upstream could not be reached"
	if ge, ok := errors.AsType[*gateway.Error](err); ok {
		msg = gatewayErrorText(ge)
	}
	a.usage.RecordAttemptFailure(cred.ID, model, clip(msg, 300))
}

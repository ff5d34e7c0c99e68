package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/dispatch"
	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/observability"
	"github.com/atlassian-proxy/atlassian-proxy/openaierr"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/usage"
)

// statusClientClosed is written (for the access log only: nobody reads
// it) when the client went away before an answer was ready.
const statusClientClosed = 499

// renderInternal is the 500 the recovery middleware writes after a panic.
func renderInternal(w http.ResponseWriter, _ *http.Request) {
	openaierr.Render(w, http.StatusInternalServerError, openaierr.TypeServer, "internal_error", "",
		"The server had an error while processing your request. Please retry, and report it if it keeps happening.")
}

// apiError is a client-facing error produced while handling a request:
// validation, authentication, model lookup.
type apiError struct {
	status  int
	typ     string
	code    string
	param   string
	message string
}

// log adds the error's code and param to the request's access log line.
func (e *apiError) log(ctx context.Context) {
	if e.code != "" {
		observability.AddLogAttrs(ctx, slog.String("error_code", e.code))
	}
	if e.param != "" {
		observability.AddLogAttrs(ctx, slog.String("error_param", e.param))
	}
}

func (e *apiError) render(w http.ResponseWriter) {
	openaierr.Render(w, e.status, e.typ, e.code, e.param, e.message)
}

func badRequest(param, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: openaierr.TypeInvalidRequest, param: param, message: fmt.Sprintf(format, args...)}
}

// retryAfterSeconds rounds d up to whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) int64 {
	s := int64(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return s
}

// errorAnswer is where an error answer goes: an HTTP response (httpAnswer)
// while nothing of the answer was sent, or an SSE error event (sseAnswer)
// once an event stream started.
type errorAnswer interface {
	// fail answers status with OpenAI's error shape; retryAfter (0: none)
	// becomes a Retry-After header where there are headers to send.
	fail(status int, typ, code, msg string, retryAfter time.Duration)
	// gone notes that the client went away: nobody reads an answer.
	gone()
}

type httpAnswer struct{ w http.ResponseWriter }

func (h httpAnswer) fail(status int, typ, code, msg string, retryAfter time.Duration) {
	if retryAfter > 0 && (status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable) {
		h.w.Header().Set("Retry-After", strconv.FormatInt(retryAfterSeconds(retryAfter), 10))
	}
	openaierr.Render(h.w, status, typ, code, "", msg)
}

func (h httpAnswer) gone() { h.w.WriteHeader(statusClientClosed) }

// sseAnswer ends an event stream with an error event and no [DONE], so
// that no client takes the stream for a complete answer. The access log
// records the status the answer would have had (the response's is 200).
type sseAnswer struct {
	ctx context.Context
	sw  *sseWriter
}

func (s sseAnswer) fail(status int, typ, code, msg string, _ time.Duration) {
	observability.AddLogAttrs(s.ctx, slog.Int("error_event_status", status))
	_ = s.sw.data(openaierr.New(typ, code, "", msg))
}

func (s sseAnswer) gone() {}

// refusal reports whether err is the upstream refusing the request itself
// (the client's error, or a 403 given twice), not failing.
func refusal(err error) bool {
	ge, ok := errors.AsType[*gateway.Error](err)
	return ok && (ge.Kind == pool.OutcomeClientError || ge.Kind == pool.OutcomeForbidden)
}

// renderUpstreamError turns what Dispatcher.Do returned into a response.
func (a *API) renderUpstreamError(w http.ResponseWriter, r *http.Request, model string, err error) {
	a.answerUpstreamError(r.Context(), httpAnswer{w}, model, err)
}

// answerUpstreamError answers what Dispatcher.Do returned: a
// *dispatch.Error (no credential could serve), or an upstream error passed
// through as is (a client error, or the second 403).
func (a *API) answerUpstreamError(ctx context.Context, out errorAnswer, model string, err error) {
	a.recordFailure(ctx, model, err)
	var de *dispatch.Error
	var ge *gateway.Error
	switch {
	case errors.As(err, &de):
		status, typ, code := dispatchStatus(de.Kind)
		observability.AddLogAttrs(ctx, slog.String("dispatch_error", code))
		if status == statusClientClosed {
			out.gone()
			return
		}
		msg := de.Message
		if msg == "" {
			msg = http.StatusText(status)
		}
		out.fail(status, typ, code, msg, de.RetryAfter)
	case errors.As(err, &ge):
		a.answerGatewayError(ctx, out, ge)
	case errors.Is(err, context.Canceled) || ctx.Err() != nil:
		observability.AddLogAttrs(ctx, slog.String("outcome", pool.OutcomeCanceled.String()))
		out.gone()
	default:
		a.logger.LogAttrs(ctx, slog.LevelError, "upstream call failed", slog.Any("error", err))
		out.fail(http.StatusBadGateway, openaierr.TypeServer, "upstream_error",
			"The upstream AI gateway could not be reached. Please retry.", 0)
	}
}

// answerGatewayError answers an upstream answer that dispatch handed back
// as is: the client's own error (400, 404, 413, 422 …) with the upstream's
// status and message, or a 403 the upstream gave twice.
func (a *API) answerGatewayError(ctx context.Context, out errorAnswer, ge *gateway.Error) {
	observability.AddLogAttrs(ctx, slog.String("outcome", ge.Kind.String()), slog.Int("upstream_status", ge.Status))
	msg := ge.Message
	switch ge.Kind {
	case pool.OutcomeClientError:
		status := ge.Status
		if status < 400 || status > 499 {
			status = http.StatusBadRequest
		}
		if msg == "" {
			msg = fmt.Sprintf("The upstream AI gateway rejected the request (%d).", status)
		}
		out.fail(status, openaierr.TypeInvalidRequest, ge.Code, msg, 0)
	case pool.OutcomeForbidden:
		if msg == "" {
			msg = "The upstream AI gateway refused this request (403)."
		}
		code := ge.Code
		if code == "" {
			code = "upstream_forbidden"
		}
		out.fail(http.StatusForbidden, openaierr.TypePermission, code, msg, 0)
	case pool.OutcomeCanceled:
		out.gone()
	default:
		// Dispatch hands back only client errors and 403s; anything else
		// means the upstream failed.
		if msg == "" {
			msg = "The upstream AI gateway failed. Please retry."
		}
		out.fail(http.StatusBadGateway, openaierr.TypeServer, "upstream_error", msg, 0)
	}
}

// dispatchStatus maps a dispatch failure to a status, an error type and a code.
func dispatchStatus(k dispatch.Kind) (status int, typ, code string) {
	switch k {
	case dispatch.NoCredentials:
		return http.StatusServiceUnavailable, openaierr.TypeServer, "no_credentials"
	case dispatch.AllRateLimited:
		return http.StatusTooManyRequests, openaierr.TypeRateLimit, "rate_limit_exceeded"
	case dispatch.AllCooling:
		return http.StatusServiceUnavailable, openaierr.TypeServer, "credentials_cooling"
	case dispatch.CredentialsInvalid:
		return http.StatusServiceUnavailable, openaierr.TypeServer, "credentials_invalid"
	case dispatch.QueueFull:
		return http.StatusServiceUnavailable, openaierr.TypeServer, "queue_full"
	case dispatch.QueueTimeout:
		return http.StatusServiceUnavailable, openaierr.TypeServer, "queue_timeout"
	case dispatch.BudgetExhausted:
		return http.StatusBadGateway, openaierr.TypeServer, "retry_budget_exhausted"
	case dispatch.Canceled:
		return statusClientClosed, openaierr.TypeInvalidRequest, "canceled"
	default: // dispatch.UpstreamFailed and anything newer
		return http.StatusBadGateway, openaierr.TypeServer, "upstream_error"
	}
}

// recordFailure counts a request that got no answer from any credential in
// the usage accounting (a client that went away is not counted). The error
// text kept for the dashboard is what the client is told, never a secret.
func (a *API) recordFailure(ctx context.Context, model string, err error) {
	if a.usage == nil || errors.Is(err, context.Canceled) || ctx.Err() != nil {
		return
	}
	var (
		de  *dispatch.Error
		ge  *gateway.Error
		msg string
	)
	switch {
	case errors.As(err, &de):
		status, _, code := dispatchStatus(de.Kind)
		if status == statusClientClosed {
			return
		}
		msg = code + ": " + de.Message
	case errors.As(err, &ge):
		msg = gatewayErrorText(ge)
	default:
		msg = "upstream_error: the upstream AI gateway could not be reached"
	}
	a.usage.Record(usage.Event{TokenID: tokenID(ctx), Model: model, Failed: true, Error: clip(msg, 300)})
}

// gatewayErrorText is a gateway.Error as the dashboard's recent errors show
// it: "kind (HTTP status): message", without the status when no response
// arrived. The message is the gateway's cleaned one: never a secret.
func gatewayErrorText(ge *gateway.Error) string {
	if ge.Status == 0 {
		return ge.Kind.String() + ": " + ge.Message
	}
	return fmt.Sprintf("%s (HTTP %d): %s", ge.Kind, ge.Status, ge.Message)
}

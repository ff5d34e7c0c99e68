package adminui

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/atlassian-proxy/atlassian-proxy/gateway"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
)

// checkTimeout bounds one credits check with the upstream.
const checkTimeout = 15 * time.Second

// errNoChecker: the handler was built without a Checker.
var errNoChecker = errors.New("adminui: no credential checker configured")

// CheckResult is the verdict of a credits check, as the API and the pages
// show it. Message is a fixed, safe sentence: never the token, never the
// upstream's raw answer.
type CheckResult struct {
	// OK: the upstream accepted the email and token.
	OK bool `json:"ok"`
	// Status is the upstream's own status when it answered 200 (OK,
	// RATE_LIMITED, UNKNOWN…).
	Status string `json:"status,omitempty"`
	// Outcome classifies a refusal: unauthorized, forbidden, rate_limited,
	// quota_exhausted, server_error, client_error, transport_error,
	// timeout or unknown.
	Outcome string                  `json:"outcome,omitempty"`
	Message string                  `json:"message"`
	Balance *gateway.CreditsBalance `json:"balance,omitempty"`
	// RetryAfterSeconds is when a rate-limited credential may be tried again.
	RetryAfterSeconds int64 `json:"retry_after_seconds,omitempty"`
}

// checkCredential validates in (email, token, cloud id) and asks the
// upstream's credits check about it. Errors: *ValidationError, or
// errNoChecker; an upstream refusal is a result, not an error.
func (a *Admin) checkCredential(ctx context.Context, in CredentialInput) (CheckResult, error) {
	in.Label, in.MaxConcurrency = "", 0 // not sent upstream; not checked here
	in, err := validateCredential(in)
	if err != nil {
		return CheckResult{}, err
	}
	if a.checker == nil {
		return CheckResult{}, errNoChecker
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	cred := pool.Credential{ID: "check", Email: in.Email, Token: in.Token, CloudID: in.CloudID}
	cr, err := a.checker.CheckCredits(ctx, cred)
	if err == nil && cr == nil {
		err = errors.New("credits check: empty answer")
	}
	if err != nil {
		res := refusal(ctx, err)
		// The gateway's errors carry no credential secret; the email is
		// not logged either (credentials are logged by id only).
		a.logger.LogAttrs(ctx, slog.LevelWarn, "credential check refused",
			slog.String("outcome", res.Outcome), slog.String("error", err.Error()))
		return res, nil
	}
	return accepted(cr), nil
}

func accepted(cr *gateway.Credits) CheckResult {
	b := cr.Balance
	res := CheckResult{Status: cr.Status, Balance: &b}
	switch cr.Status {
	case "OK":
		res.OK = true
		res.Message = "Atlassian accepted this credential."
	case "RATE_LIMITED":
		res.OK = true
		res.RetryAfterSeconds = cr.RetryAfterSeconds
		res.Message = "Atlassian accepted this credential, but it is rate limited for now"
		if cr.RetryAfterSeconds > 0 {
			res.Message += " (try again in " + strconv.FormatInt(cr.RetryAfterSeconds, 10) + " s)"
		}
		res.Message += "."
	default:
		res.Outcome = "unknown"
		res.Message = "Atlassian answered the check without saying whether the credential works (status " +
			safeStatus(cr.Status) + "); try again later."
	}
	return res
}

// refusal turns a failed check into its verdict.
func refusal(ctx context.Context, err error) CheckResult {
	var ge *gateway.Error
	outcome := pool.OutcomeTransport
	switch {
	case errors.As(err, &ge):
		outcome = ge.Outcome()
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		outcome = pool.OutcomeTimeout
	}
	res := CheckResult{Outcome: outcome.String()}
	switch outcome {
	case pool.OutcomeUnauthorized:
		res.Message = "Atlassian refused this email and API token (401 Unauthorized): check both; the token may be revoked or expired."
	case pool.OutcomeForbidden:
		res.Message = "Atlassian refused access (403 Forbidden): the user may lack access to the AI gateway."
		if gateway.IsUserBlocked(err) {
			res.Message = "Atlassian refused access (403 Forbidden): the Atlassian user is blocked."
		}
	case pool.OutcomeRateLimited:
		res.Message = "Atlassian is rate limiting this credential right now; check again later."
		res.RetryAfterSeconds = int64(pool.RetryAfterOf(err) / time.Second)
	case pool.OutcomeQuotaExhausted:
		res.Message = "This credential has no credits left for now."
		res.RetryAfterSeconds = int64(pool.RetryAfterOf(err) / time.Second)
	case pool.OutcomeServerError, pool.OutcomeStreamBroken:
		res.Outcome = pool.OutcomeServerError.String()
		res.Message = "The Atlassian gateway failed to answer (server error); try again later."
	case pool.OutcomeClientError:
		res.Message = "The Atlassian gateway refused the check request."
	case pool.OutcomeTimeout:
		res.Message = "The Atlassian gateway did not answer in time; try again later."
	case pool.OutcomeTransport:
		res.Message = "The Atlassian gateway could not be reached."
	default:
		res.Outcome = "unknown"
		res.Message = "The check failed."
	}
	return res
}

// safeStatus shows an upstream status word only when it is a short
// identifier, so that no odd upstream text reaches a page.
func safeStatus(s string) string {
	if s == "" || len(s) > 40 {
		return "unknown"
	}
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return "unknown"
		}
	}
	return s
}

// balanceLine summarises a balance for a page ("1,200 of 5,000 credits left
// this month; 80 of 100 today").
func balanceLine(b *gateway.CreditsBalance) string {
	if b == nil || (b.MonthlyTotal == 0 && b.DailyTotal == 0) {
		return ""
	}
	var s string
	if b.MonthlyTotal > 0 {
		s = fmt.Sprintf("%s of %s credits left this month", groupDigits(b.MonthlyRemaining), groupDigits(b.MonthlyTotal))
	}
	if b.DailyTotal > 0 {
		d := fmt.Sprintf("%s of %s today", groupDigits(b.DailyRemaining), groupDigits(b.DailyTotal))
		if s == "" {
			s = d + " (credits)"
		} else {
			s += "; " + d
		}
	}
	return s
}

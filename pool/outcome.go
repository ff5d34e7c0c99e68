package pool

// Outcome is the classification of one upstream attempt. It is a bounded
// enum: its String values are also Prometheus label values and the reasons
// stored with a cooldown.
type Outcome uint8

const (
	// OutcomeSuccess: 2xx (and, for streams, the stream ended cleanly).
	OutcomeSuccess Outcome = iota
	// OutcomeRateLimited: 429 with a per-minute (or unknown) limit.
	OutcomeRateLimited
	// OutcomeQuotaExhausted: 429 DAILY_LIMIT_EXCEEDED (or a credits quota).
	OutcomeQuotaExhausted
	// OutcomeUnauthorized: 401, the credential is bad.
	OutcomeUnauthorized
	// OutcomeForbidden: 403, not entitled, blocked, or the request is refused.
	OutcomeForbidden
	// OutcomeServerError: 5xx, 529.
	OutcomeServerError
	// OutcomeTransport: connection refused/reset, DNS, TLS.
	OutcomeTransport
	// OutcomeTimeout: the upstream did not answer in time.
	OutcomeTimeout
	// OutcomeStreamBroken: the stream broke (before or after its first event).
	OutcomeStreamBroken
	// OutcomeClientError: 400, 404, 413, 422 …: the client's own fault, no penalty.
	OutcomeClientError
	// OutcomeCanceled: the client went away; never counts against a credential.
	OutcomeCanceled

	numOutcomes
)

var outcomeNames = [numOutcomes]string{
	OutcomeSuccess:        "success",
	OutcomeRateLimited:    "rate_limited",
	OutcomeQuotaExhausted: "quota_exhausted",
	OutcomeUnauthorized:   "unauthorized",
	OutcomeForbidden:      "forbidden",
	OutcomeServerError:    "server_error",
	OutcomeTransport:      "transport_error",
	OutcomeTimeout:        "timeout",
	OutcomeStreamBroken:   "stream_broken",
	OutcomeClientError:    "client_error",
	OutcomeCanceled:       "canceled",
}

func (o Outcome) String() string {
	if o < numOutcomes {
		return outcomeNames[o]
	}
	return "unknown"
}

// Outcomes lists every outcome, for pre-registering metric label values.
func Outcomes() []Outcome {
	out := make([]Outcome, numOutcomes)
	for i := range out {
		out[i] = Outcome(i)
	}
	return out
}

// ParseOutcome is the inverse of String.
func ParseOutcome(s string) (Outcome, bool) {
	for i, n := range outcomeNames {
		if n == s {
			return Outcome(i), true
		}
	}
	return 0, false
}

// Retryable reports whether another credential may be tried after this outcome.
func (o Outcome) Retryable() bool {
	switch o {
	case OutcomeRateLimited, OutcomeQuotaExhausted, OutcomeUnauthorized, OutcomeForbidden,
		OutcomeServerError, OutcomeTransport, OutcomeTimeout, OutcomeStreamBroken:
		return true
	}
	return false
}

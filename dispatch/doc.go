// Package dispatch finds a credential for each request and fails over.
//
// Do leases a credential from the pool, runs one upstream attempt on the
// request's goroutine, classifies a failure into a pool.Outcome, reports it
// on the lease and moves on: at once after a 429, 401 or a first 403; after
// the request's back-off (0.5 s doubling to 16 s) after a 5xx, transport
// error, timeout or broken stream. Client errors and cancellation return at
// once without penalty; a second 403 from another credential is returned to
// the client. Attempts (MaxAttempts), time (RetryDeadline, the request's own
// deadline, which also ends each attempt's context: see Config.RetryDeadline
// for what the api runs under it) and a retry budget shared by all requests
// (charged only for retries actually made) bound the failover. When every usable
// credential is at its limit the request waits in a bounded FIFO queue
// woken by the pool's capacity notifications; a new request queues behind
// waiting ones instead of overtaking them. Failures that are not the
// upstream's own error come back as *Error with a Kind, a client-safe
// message and a Retry-After (see giveUp for which answer a request that
// ran out of options gets).
package dispatch

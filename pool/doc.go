// Package pool runs the Atlassian credentials as actors and leases them to
// requests.
//
// Each credential is a goroutine actor that owns its health (ready, cooling
// until a time with a reason, invalid), its in-flight count against a
// concurrency limit, its back-off and its counters. Every change goes
// through a pure transition function, (state, event, now) → (state,
// effects), so the rules are table-tested; the actor carries out the
// effects, none of which is I/O: writing cooldowns to the StateStore, the
// credits checks of invalid or 403'd credentials and the actors' log lines
// run on pool-owned loops (the log queue is bounded and drops, counted,
// when full).
//
// Picking never messages every actor. Each actor publishes its place in a
// lock-free index (a bitset per in-flight level, with summary words, read
// through an atomically swapped snapshot): Acquire finds the least-loaded
// ready credential after a round-robin cursor in near-constant time, then
// sends one non-blocking admission message to that actor, which grants a
// slot or refuses (pick again). The upstream call runs on the request's own
// goroutine under the returned Lease; Lease.Done sends the outcome back to
// the actor (never dropped; see actor). Sync starts, updates and stops
// actors to match the store while the pool runs; Status and Availability
// read what the actors publish.
package pool

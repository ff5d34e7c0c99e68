// Package redis is the shared store of atlassian-proxy: a store.Store on one
// Redis (standalone, or a primary with replicas behind one address; not
// Redis Cluster), so that several replicas use one pool of credentials,
// tokens, sessions, cooldowns and usage counters. It also pushes change
// notices (store.Watcher), detects a Redis that lost its data and keeps a
// record of that until the data is restored (Marker, ClearLoss), and keeps
// go-limiter rate limits that hold across replicas (Limiter).
//
// Every key starts with Options.Prefix (default "atlassian-proxy:"), so
// that deployments can share a Redis:
//
//	gen                 string  the generation counter (INCR)
//	cred:<id>           hash    a credential; creds: set of ids;
//	                            credidx: hash of lower-cased email NUL cloud id → id
//	state:<id>          hash    a credential state (with a TTL while "cooling");
//	                            states: set of ids
//	tok:<id>            hash    an API token; toks: set of ids; tokhash: hash of hash → id
//	admin               hash    the admin password
//	sess:<id>           hash    a session; sessions: sorted set of
//	                            <sortable last-seen time><id>, by bytes
//	usage:<day>         hash    a day's usage counters (TTL 400 days after the
//	                            last change); usagedays: sorted set of days
//	marker              string  see Store.Marker
//	lost                hash    the record of a data loss (at, by, reason), kept
//	                            until ClearLoss: see Store.Marker
//	rl:<name>:<key>     hash    a rate-limit bucket (see LimiterStore)
//	events              pub/sub channel of change notices (see Store.Watch)
//
// Every write is one Lua script, atomic: it checks existence and
// uniqueness before it writes anything, and a configuration change
// increments the generation and publishes a notice in the same script.
// Times are decimal Unix nanoseconds, the zero time as 0, like the SQLite
// store. Reads of lists are scripts too, so that a list is one consistent
// snapshot.
//
// Every call runs under Options.OpTimeout (default 2 s). Commands are never
// retried by the client (a script that ran before its connection broke
// must not run twice); a call that fails because Redis cannot be reached,
// timed out or refused to serve returns an error wrapping
// store.ErrUnavailable, and counts in Errors. The password never appears
// in an error message.
package redis

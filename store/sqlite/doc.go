// Package sqlite is the embedded store of atlassian-proxy: a store.Store on
// one SQLite file, through the pure-Go driver modernc.org/sqlite.
//
// The file is in WAL mode so that a second process (the CLI) can change it
// while the server runs. Each Store keeps one write connection, on which
// every mutation is a BEGIN IMMEDIATE transaction, and a pool of read-only
// connections; busy_timeout makes writers of different processes wait for
// each other instead of failing. Every transaction that changes something
// also increments a counter row, which Generation reads: that is how the
// server notices changes made by another process.
//
// Times are stored as Unix nanoseconds (the zero time as 0) and come back in
// UTC; times outside the years 1678 to 2262 are refused. The schema is
// versioned: Open applies missing migrations in one transaction and refuses
// a file written by a newer schema.
package sqlite

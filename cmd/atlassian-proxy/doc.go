// Command atlassian-proxy serves an OpenAI-compatible API in front of the
// Atlassian AI Gateway, spreading requests over a pool of Atlassian
// credentials. With no subcommand it runs the server; the other
// subcommands manage the store directly (they work while a server runs,
// which picks their changes up within 2 s).
//
// This package is the only place that reads configuration (config.go:
// environment variables and matching flags) and wires the components
// (serve.go: newApp builds them in dependency order, app.serve runs them
// under one errgroup and drains them in order on SIGTERM). The syncer
// (syncer.go) keeps the running pool and token cache in step with the
// store. The end-to-end tests build and run the binary itself.
package main

// Package observability sets up what operators see of atlassian-proxy:
// structured logging with log/slog and redaction of secrets (NewLogger,
// RedactString), the HTTP middlewares every route goes through (RequestID,
// AccessLog with AddLogAttrs, Recover, HTTPMetrics), the Prometheus
// registry with build information (NewRegistry), and the liveness handler
// (Health).
//
// The middlewares go on the chi router in this order, outermost first:
// RequestID, AccessLog, HTTPMetrics, Recover. They share one response
// writer wrapper per request that records status and size and still
// supports http.Flusher and http.ResponseController (Unwrap), so that
// server-sent event streams flush through them. The route label of logs
// and metrics is the chi route pattern, read after the request was served.
//
// The package imports no other package of the project.
package observability

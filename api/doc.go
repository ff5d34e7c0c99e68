// Package api is the OpenAI-compatible HTTP surface of atlassian-proxy:
// GET /v1/models and /v1/models/{id}, POST /v1/chat/completions (streamed
// as Server-Sent Events or not), GET /health and GET /ready. It checks the
// client's API token, limits, decodes and validates the request (every
// error names the offending field), resolves the model in the catalog and
// runs the upstream call through the dispatcher, which picks a credential
// and fails over between them. A stream is committed to a credential only
// once its first event with more than the role and usage arrived (content
// of any part type, text or not, but not an empty text; a tool call; or a
// finish reason); after that an upstream failure ends the client's stream
// with an SSE error event and no [DONE]. Every error, of
// the API or of the upstream, goes out through openaierr.Render in OpenAI's
// shape, without secrets or internals.
package api

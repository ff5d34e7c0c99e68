// Package fake is a fake Atlassian AI Gateway that follows the project's
// protocol page (shared/upstream-protocol.md): the unified chat route,
// streamed and not, credits/check and sites. It checks what the real one
// is known to check — Basic auth and X-Atlassian-EncodedToken of a
// registered credential, a body with platform_attributes.model and no model
// or unknown field in request_payload — and answers each credential's
// requests according to a Behavior: a normal answer shaped as asked
// (content forms, tool calls, usage, with or without [DONE], slow, a
// "thinking" part before the text) or a
// fault of §3 (429 minute/daily, 401, 403, 400, 413, 5xx, 529, a hang, a
// dropped connection, a stream cut before or after its first event). A
// behaviour can be permanent or queued for the next N requests, and changed
// at runtime. Every request is recorded, with the current and highest number
// of concurrent chat requests per credential. Start serves one for a test;
// cmd/fake-gateway serves one for local demos.
package fake

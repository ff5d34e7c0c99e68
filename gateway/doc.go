// Package gateway speaks the Atlassian AI Gateway's protocol (Rovo Dev) on
// behalf of OpenAI clients. It holds the OpenAI wire types, the model
// catalog (embedded models.json: client names, aliases, upstream ids and
// routes), the translation of an OpenAI Chat Completions request into the
// unified-chat envelope and of its answers (a JSON body or an SSE stream)
// back into chat.completion objects and chunks, and the Client that sends
// them with a credential's Basic auth and classifies every result into a
// *Error whose Outcome the credential pool acts on. It never imitates
// Atlassian's own CLI: requests carry only the documented fields and an
// honest User-Agent. Where the protocol is unknown, the Client copes with
// every plausible variant and, given Config.Logger, logs each distinct one
// it meets once (observe.go), never with a secret. Subpackage fake is a
// fake gateway for tests and demos.
package gateway

// Package schematest forwards to gateway/schematest, the OpenAI response
// schema validator for tests. Go's internal/ rule lets only packages under
// gateway/ import this path; other packages import gateway/schematest.
package schematest

import (
	"testing"

	"github.com/atlassian-proxy/atlassian-proxy/gateway/schematest"
)

// Roots of the bundled schema file.
const (
	ChatCompletion      = schematest.ChatCompletion
	ChatCompletionChunk = schematest.ChatCompletionChunk
	ModelList           = schematest.ModelList
	Model               = schematest.Model
	ErrorResponse       = schematest.ErrorResponse
)

// Validate fails t unless body is valid against root (see schematest.Validate).
func Validate(t testing.TB, root string, body []byte) {
	t.Helper()
	schematest.Validate(t, root, body)
}

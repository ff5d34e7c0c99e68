package adminui

import "github.com/atlassian-proxy/atlassian-proxy/openaierr"

// errorDetail is the "error" member of an error body as the tests read it
// (helpers_test.go adds param and code accessors).
type errorDetail openaierr.Object

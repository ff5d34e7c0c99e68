// Package openaierr owns the OpenAI error shape that every HTTP error of
// the proxy uses, on the OpenAI API and on the admin API alike:
// {"error":{"message","type","param","code"}}, param and code null when
// empty. It holds the body type, the error type names OpenAI puts in
// "type", Render (the one error renderer) and WriteJSON (the JSON writer
// both surfaces answer with). It imports no project package.
package openaierr

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// Error types, as OpenAI names them in the "type" field of an error body.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeAuthentication = "authentication_error"
	TypePermission     = "permission_error"
	TypeNotFound       = "not_found_error"
	TypeRateLimit      = "rate_limit_error"
	TypeServer         = "server_error"
	// TypeRequests is what OpenAI names a requests-per-minute limit of an
	// API key (with code "rate_limit_exceeded").
	TypeRequests = "requests"
)

// Body is OpenAI's error body.
type Body struct {
	Error Object `json:"error"`
}

// Object is the "error" member of a Body. Param and Code are null when nil.
type Object struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// New returns the body of an error; an empty param or code is null.
func New(typ, code, param, message string) Body {
	b := Body{Error: Object{Message: message, Type: typ}}
	if param != "" {
		b.Error.Param = &param
	}
	if code != "" {
		b.Error.Code = &code
	}
	return b
}

// Render writes an error response: status and the body of New. The
// message must be safe for the client (no secret, no stack trace).
func Render(w http.ResponseWriter, status int, typ, code, param, message string) {
	WriteJSON(w, status, New(typ, code, param, message))
}

// internalBody is written when a value cannot be encoded (a bug).
const internalBody = `{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":"internal_error"}}` + "\n"

// WriteJSON writes v as a JSON response with status: Content-Type
// application/json, X-Content-Type-Options nosniff, <, > and & left
// unescaped (the body is JSON, never HTML), one trailing newline. The body
// is encoded before anything is written, so a value that cannot be encoded
// becomes a 500 in the error shape rather than a truncated answer.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(internalBody)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(status)
	// A write error means the client went away; the status is logged.
	_, _ = w.Write(buf.Bytes())
}

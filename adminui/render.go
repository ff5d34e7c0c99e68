package adminui

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/atlassian-proxy/atlassian-proxy/openaierr"
	"github.com/atlassian-proxy/atlassian-proxy/pool"
	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// The admin API answers in the OpenAI error shape of package openaierr.
// These short names keep the handlers readable.
const (
	typeInvalidRequest = openaierr.TypeInvalidRequest
	typeAuthentication = openaierr.TypeAuthentication
	typePermission     = openaierr.TypePermission
	typeNotFound       = openaierr.TypeNotFound
	typeRateLimit      = openaierr.TypeRateLimit
	typeServer         = openaierr.TypeServer
)

// renderError writes {"error":{"message","type","param","code"}}; an empty
// param or code is null (openaierr.Render).
func renderError(w http.ResponseWriter, status int, typ, code, param, message string) {
	openaierr.Render(w, status, typ, code, param, message)
}

// writeJSON writes v as the JSON body of a response (openaierr.WriteJSON).
func writeJSON(w http.ResponseWriter, status int, v any) {
	openaierr.WriteJSON(w, status, v)
}

// renderServiceError maps a Service (or pool) error to its HTTP answer.
// Only safe, fixed messages (and a ValidationError's own message) reach
// the client; the detail goes to the log.
func (a *Admin) renderServiceError(w http.ResponseWriter, r *http.Request, err error) {
	var ve *ValidationError
	var ce *ConflictError
	switch {
	case errors.Is(err, ErrBusy):
		w.Header().Set("Retry-After", "1")
		renderError(w, http.StatusServiceUnavailable, typeServer, "busy", "", "too many password checks at once; try again in a moment")
	case errors.As(err, &ve):
		renderError(w, http.StatusBadRequest, typeInvalidRequest, "invalid_value", ve.Field, ve.Message)
	case errors.As(err, &ce):
		renderError(w, http.StatusConflict, typeInvalidRequest, "duplicate", ce.Field, ce.Message)
	case errors.Is(err, store.ErrDuplicate):
		renderError(w, http.StatusConflict, typeInvalidRequest, "duplicate", "", "a record with the same identity already exists")
	case errors.Is(err, store.ErrNotFound), errors.Is(err, pool.ErrUnknownCredential):
		renderError(w, http.StatusNotFound, typeNotFound, "not_found", "", "not found")
	case errors.Is(err, errNoChecker):
		renderError(w, http.StatusServiceUnavailable, typeServer, "checker_unavailable", "", "credential checks are not available")
	case errors.Is(err, store.ErrUnavailable):
		a.logger.LogAttrs(r.Context(), slog.LevelError, "admin request failed", slog.String("error", err.Error()))
		renderError(w, http.StatusServiceUnavailable, typeServer, "store_unavailable", "", "store unavailable")
	default:
		a.logger.LogAttrs(r.Context(), slog.LevelError, "admin request failed", slog.String("error", err.Error()))
		renderError(w, http.StatusInternalServerError, typeServer, "internal_error", "", "internal error")
	}
}

// decodeJSON reads a JSON object body into v: the content type must be
// JSON (415), the body at most MaxBodyBytes (413) and sent within
// BodyReadTimeout (408), well-formed, one value, no unknown fields, right
// types (400 naming the field). On failure it has answered and returns
// false.
func (a *Admin) decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		renderError(w, http.StatusUnsupportedMediaType, typeInvalidRequest, "unsupported_media_type", "", "the request body must be JSON (Content-Type: application/json)")
		return false
	}
	// A deadline for the body only, lifted once it is read; after a failed
	// read it stays, so that the server drops the connection rather than
	// wait for the rest. ErrNotSupported (a writer without deadlines) is
	// ignored: the server's ReadTimeout is the only bound then.
	rc := http.NewResponseController(w)
	if r.ContentLength != 0 { // an empty body has nothing to wait for
		_ = rc.SetReadDeadline(time.Now().Add(a.cfg.BodyReadTimeout))
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errTrailing
			if errors.Is(terr, os.ErrDeadlineExceeded) {
				err = terr
			}
		}
	}
	if err == nil {
		if r.ContentLength != 0 {
			_ = rc.SetReadDeadline(time.Time{})
		}
		return true
	}
	var (
		mbe *http.MaxBytesError
		ute *json.UnmarshalTypeError
		se  *json.SyntaxError
	)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		w.Header().Set("Connection", "close")
		renderError(w, http.StatusRequestTimeout, typeInvalidRequest, "request_timeout", "", "the request body was not received in time")
	case errors.As(err, &mbe):
		renderError(w, http.StatusRequestEntityTooLarge, typeInvalidRequest, "request_too_large", "", "the request body is too large")
	case errors.Is(err, io.EOF):
		renderError(w, http.StatusBadRequest, typeInvalidRequest, "invalid_json", "", "the request body is empty")
	case errors.As(err, &ute):
		field := ute.Field
		if field == "" {
			renderError(w, http.StatusBadRequest, typeInvalidRequest, "invalid_json", "", "the request body must be a JSON object")
			return false
		}
		renderError(w, http.StatusBadRequest, typeInvalidRequest, "invalid_type", field, field+" must be a "+jsonKind(ute.Type.Kind().String()))
	case errors.As(err, &se), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, errTrailing):
		renderError(w, http.StatusBadRequest, typeInvalidRequest, "invalid_json", "", "the request body is not valid JSON")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		if len(field) > 64 || !utf8.ValidString(field) {
			field = "(a long field name)"
		}
		renderError(w, http.StatusBadRequest, typeInvalidRequest, "unknown_field", field, "unknown field "+field)
	default:
		// e.g. a time that does not parse
		renderError(w, http.StatusBadRequest, typeInvalidRequest, "invalid_json", "", "the request body is not valid")
	}
	return false
}

var errTrailing = errors.New("trailing data after the JSON value")

func jsonKind(goKind string) string {
	switch goKind {
	case "bool":
		return "boolean"
	case "string":
		return "string"
	case "slice", "array":
		return "list"
	case "struct", "map", "ptr":
		return "object"
	case "int", "int64", "int32", "uint", "uint64", "float64":
		return "number"
	}
	return "value of another type"
}

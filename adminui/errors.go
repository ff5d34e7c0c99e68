package adminui

import (
	"errors"

	"github.com/atlassian-proxy/atlassian-proxy/store"
)

// ValidationError reports one bad input field. Field is the JSON/form name
// of the field ("email", "token", "new"…); Message is safe to show a user
// next to that field: it never contains a submitted secret, and names a
// submitted value only where that value is a name (an unknown model).
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string {
	return "invalid " + e.Field + ": " + e.Message
}

func invalid(field, message string) *ValidationError {
	return &ValidationError{Field: field, Message: message}
}

// ConflictError reports that the record would duplicate an existing one
// (a credential with the same email and cloud id). It unwraps to
// store.ErrDuplicate.
type ConflictError struct {
	Field   string
	Message string
}

func (e *ConflictError) Error() string { return e.Message }

// Unwrap makes errors.Is(err, store.ErrDuplicate) hold.
func (e *ConflictError) Unwrap() error { return store.ErrDuplicate }

var (
	// ErrInvalidPassword is the one answer to every failed login (wrong
	// password, or no admin password set yet).
	ErrInvalidPassword = errors.New("adminui: invalid password")
	// ErrBusy: too many password checks are running at once; retry shortly.
	ErrBusy = errors.New("adminui: too many password checks at once; try again in a moment")
	// ErrNoSession: the session id is unknown, expired or ended.
	ErrNoSession = errors.New("adminui: no valid session")
)

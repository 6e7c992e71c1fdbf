package rackplane

import (
	"errors"
	"fmt"
)

// Error codes. They are part of the API: clients match on them, so a code
// never changes meaning once released.
const (
	EINVALID      = "invalid"             // the caller sent something malformed
	ENOTFOUND     = "not_found"           // the thing asked for does not exist
	ECONFLICT     = "conflict"            // the request clashes with current state
	EPRECONDITION = "precondition_failed" // If-Match and the like did not hold
	EUNAUTHORIZED = "unauthorized"        // no or bad credentials
	EFORBIDDEN    = "forbidden"           // credentials fine, action not allowed
	EUNAVAILABLE  = "unavailable"         // a dependency (rack, NATS, Postgres) is away
	ETIMEOUT      = "timeout"             // the deadline passed before an answer came
	EINTERNAL     = "internal"            // a bug or an unexpected failure
)

// Error is the one error type that crosses package boundaries with a code
// attached. Message is safe to show to a client; Err carries the internal
// cause, which is logged but never sent.
type Error struct {
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	switch {
	case e.Err != nil && e.Message != "":
		return e.Message + ": " + e.Err.Error()
	case e.Err != nil:
		return e.Err.Error()
	default:
		return e.Message
	}
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a client-safe message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WrapError attaches a code and a client-safe message to an internal error.
func WrapError(code string, err error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
}

// ErrorCode returns the code of the first *Error in err's chain, or
// EINTERNAL when there is none: an error nobody classified is a bug.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	}
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the client-safe message of err. Unclassified errors
// get a generic text so that internal details never leak to clients.
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	}
	if errors.As(err, &e) && e.Message != "" {
		return e.Message
	}
	return "internal error"
}

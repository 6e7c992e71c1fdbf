package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rackplane/rackplane"
)

// Classify gives an error nobody classified the code its PostgreSQL cause
// deserves, for the edge of the API to answer with: the server away,
// restarting or refusing connections is EUNAVAILABLE (answered 503: try
// again), and text PostgreSQL cannot store (a NUL, bytes that are not
// UTF-8) is EINVALID: the client sent it. Any other error comes back as
// it is.
func Classify(err error) error {
	if err == nil || rackplane.ErrorCode(err) != rackplane.EINTERNAL ||
		// The caller's deadline or the client gone: theirs to say, not
		// the database's (context's errors are net.Errors too).
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "22021", pgErr.Code == "22P05": // character_not_in_repertoire, untranslatable_character
			return rackplane.WrapError(rackplane.EINVALID, err, "text with a NUL or bytes that are not UTF-8: send UTF-8 without NULs")
		case unavailableCode(pgErr.Code):
			return unavailable(err)
		}
		return err
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr), errors.As(err, &netErr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		// pgx's own word that the query never went out: its connection
		// was closed (by the server going away) or broken.
		pgconn.SafeToRetry(err):
		return unavailable(err)
	}
	return err
}

// unavailableCode reports whether a SQLSTATE says the server cannot serve
// now rather than that the query is wrong.
func unavailableCode(code string) bool {
	switch code {
	case "57P01", "57P02", "57P03", // admin_shutdown, crash_shutdown, cannot_connect_now
		"53300", // too_many_connections
		"53100", // disk_full
		"53200": // out_of_memory
		return true
	}
	return strings.HasPrefix(code, "08") // connection_exception
}

// ErrUnavailable is in the chain of the errors Classify finds are the
// database's absence.
var ErrUnavailable = errors.New("database unavailable")

func unavailable(err error) error {
	return rackplane.WrapError(rackplane.EUNAVAILABLE, fmt.Errorf("%w: %w", ErrUnavailable, err), "the database is unavailable; try again shortly")
}

package ingest

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// isDataError reports whether Postgres refused the content of a statement
// (a constraint, a bad value) rather than failing to run it: retrying such
// an event can never succeed, so it is rejected instead.
func isDataError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code[:2] {
	case "22", "23": // data exception, integrity constraint violation
		return true
	}
	return false
}

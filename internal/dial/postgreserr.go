package dial

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// PostgresTarget is where a connection went, for saying what failed.
type PostgresTarget struct {
	Host     string // a host name, an address or a Unix socket's directory
	Port     uint16
	User     string
	Database string
}

func (t PostgresTarget) where() string {
	if strings.HasPrefix(t.Host, "/") {
		return fmt.Sprintf("PostgreSQL at %s (socket of port %d)", t.Host, t.Port)
	}
	return "PostgreSQL at " + net.JoinHostPort(t.Host, fmt.Sprint(t.Port))
}

// url is a connection URL for t with role, as an example to give.
func (t PostgresTarget) url(role string) string {
	host := t.Host
	if strings.HasPrefix(host, "/") || host == "" {
		host = "127.0.0.1"
	}
	return fmt.Sprintf("postgres://%s@%s/%s", role, net.JoinHostPort(host, fmt.Sprint(t.Port)), t.Database)
}

// ExplainPostgres says why a connection to t failed and what to do about
// it: PostgreSQL not running, a role that does not exist or whose
// password or pg_hba.conf entry is wrong, a database that does not
// exist. The message's first line is the explanation; err, pgx's own
// account, follows on the next, and stays in the chain.
func ExplainPostgres(err error, t PostgresTarget) error {
	if err == nil {
		return nil
	}
	const flag = "-database-url (or DATABASE_URL)"
	var why string
	var pgErr *pgconn.PgError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &pgErr):
		switch pgErr.Code {
		case "28000":
			if strings.Contains(pgErr.Message, "role") && strings.Contains(pgErr.Message, "does not exist") {
				why = fmt.Sprintf("%s has no role %q: create it (as the postgres user: createuser --createdb %s), or connect as a role that exists with %s, such as %s",
					t.where(), t.User, t.User, flag, t.url("postgres"))
			} else {
				why = fmt.Sprintf("%s refuses role %q from this host (pg_hba.conf has no entry that lets it in): add one, or connect as another role with %s",
					t.where(), t.User, flag)
			}
		case "28P01":
			why = fmt.Sprintf("%s refused the password of role %q: give the right one in %s (%s) or in PGPASSWORD or ~/.pgpass",
				t.where(), t.User, flag, strings.Replace(t.url(t.User), "@", ":PASSWORD@", 1))
		case "3D000":
			why = fmt.Sprintf("%s has no database %q: create it (createdb -O %s %s), or name one that exists in %s",
				t.where(), t.Database, t.User, t.Database, flag)
		case "42501":
			why = fmt.Sprintf("%s does not let role %q do this (%s): grant it, or connect as a role that may with %s",
				t.where(), t.User, pgErr.Message, flag)
		case "53300":
			why = fmt.Sprintf("%s has no connection to spare (max_connections reached): close some, or raise max_connections", t.where())
		case "57P03":
			why = fmt.Sprintf("%s is starting up or shutting down: wait for it, or start it", t.where())
		}
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, os.ErrNotExist) && strings.HasPrefix(t.Host, "/"):
		why = fmt.Sprintf("nothing answers as %s: start PostgreSQL (systemctl start postgresql, or docker compose up -d postgres), or point %s at yours",
			t.where(), flag)
	case errors.As(err, &dnsErr):
		why = fmt.Sprintf("the host %q of PostgreSQL is not known here (%s): fix the host in %s", t.Host, dnsErr.Err, flag)
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		why = fmt.Sprintf("%s did not answer in time: is the host up and its port open to this one? (%s)", t.where(), flag)
	}
	if why == "" {
		return fmt.Errorf("%s as role %q, database %q: %w", t.where(), t.User, t.Database, err)
	}
	return fmt.Errorf("%s\n(%w)", why, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

package dial

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rackplane/rackplane/internal/pgtest"
)

// TestPostgresFailuresSayWhatToDo: each way PostgreSQL can refuse a
// connection is told apart, with what to do about it: start it, create the
// role or fix its password or pg_hba.conf entry, create the database.
func TestPostgresFailuresSayWhatToDo(t *testing.T) {
	admin, err := pgx.ParseConfig(pgtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	url := func(user, db string, port uint16) string {
		return fmt.Sprintf("postgres://%s@%s/%s?connect_timeout=5", user, net.JoinHostPort(admin.Host, fmt.Sprint(port)), db)
	}
	// A port nothing listens on: one just given up.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	target := PostgresTarget{Host: "db.example", Port: 5432, User: "rp", Database: "rackplane"}
	tests := []struct {
		name string
		err  func() error
		want []string
	}{
		{"not running", func() error {
			_, err := Postgres(context.Background(), url("postgres", "postgres", closed))
			return err
		},
			[]string{fmt.Sprintf("nothing answers as PostgreSQL at 127.0.0.1:%d: start PostgreSQL", closed), "point -database-url (or DATABASE_URL) at yours"}},
		{"no such role", func() error {
			_, err := Postgres(context.Background(), url("no_such_role_rp", admin.Database, admin.Port))
			return err
		}, []string{`has no role "no_such_role_rp": create it (as the postgres user: createuser --createdb no_such_role_rp)`,
			"or connect as a role that exists with -database-url (or DATABASE_URL)"}},
		{"no such database", func() error {
			_, err := Postgres(context.Background(), url(admin.User, "no_such_db_rp", admin.Port))
			return err
		}, []string{`has no database "no_such_db_rp": create it (createdb -O ` + admin.User + ` no_such_db_rp)`}},
		{"a wrong password", func() error {
			return ExplainPostgres(&pgconn.PgError{Code: "28P01", Message: `password authentication failed for user "rp"`}, target)
		}, []string{`PostgreSQL at db.example:5432 refused the password of role "rp"`, "postgres://rp:PASSWORD@db.example:5432/rackplane", "PGPASSWORD"}},
		{"no pg_hba.conf entry", func() error {
			return ExplainPostgres(&pgconn.PgError{Code: "28000", Message: `no pg_hba.conf entry for host "10.0.0.9", user "rp"`}, target)
		}, []string{`refuses role "rp" from this host (pg_hba.conf has no entry that lets it in)`}},
		{"an unknown host", func() error {
			return ExplainPostgres(&net.DNSError{Err: "no such host", Name: "db.example", IsNotFound: true}, target)
		}, []string{`the host "db.example" of PostgreSQL is not known here (no such host)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.err()
			if err == nil {
				t.Fatal("connected")
			}
			first, _, _ := strings.Cut(err.Error(), "\n")
			for _, w := range tt.want {
				if !strings.Contains(first, w) {
					t.Errorf("%q missing from the first line %q", w, first)
				}
			}
		})
	}
}

// Package pgtest gives each test its own Postgres database, created on the
// server named by RACKPLANE_TEST_DATABASE_URL (default: the local server on
// 127.0.0.1:5432 as user postgres) and dropped when the test ends. A test
// that cannot reach the server fails with a message saying how to start it;
// it never skips.
package pgtest

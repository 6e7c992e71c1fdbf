// Package api is the region's web API (v1), health and metrics endpoints.
// Handlers speak JSON; errors are {"error":{"code":…,"message":…}} with the
// codes of rackplane.Error mapped to HTTP statuses here, at the edge, and
// internal details logged, never sent. PostgreSQL's errors are classified
// at the same edge (postgres.Classify): the database away is 503 with
// Retry-After, text it cannot store 400. The server's bounds (timeouts,
// sizes, connections, bad bytes in paths and queries) are
// internal/httpserver's.
package api

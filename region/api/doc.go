// Package api is the region's web API (v1), health and metrics endpoints.
// Handlers speak JSON; errors are {"error":{"code":…,"message":…}} with the
// codes of rackplane.Error mapped to HTTP statuses here, at the edge, and
// internal details logged, never sent.
package api

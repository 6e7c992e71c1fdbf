// Package power is the region's side of power control: a machine's power
// parameters (driver, BMC address, credentials, and which rack drives it)
// and the power actions the region asks of that rack.
//
// The BMC password is sealed with the region's secrets keyring as
// power/<machine id> (so key rotation reseals it with every other secret)
// and opened only to build the one PowerRequest sent on the driving
// rack's own rpc subject. Events (power_parameters_set, _cleared,
// power_action_requested), the audit log, the log and API responses say
// only whether a password is set and its keyed fingerprint.
//
// Which rack drives a machine: the rack the operator named in the
// parameters (rack_id), else the machine's boot rack. The region does not
// guess further: a machine with neither is refused with a conflict that
// says to name one. Before asking, the region checks that the rack
// reports the driver available and offering the action, so the refusal
// names the rack's reason rather than a generic failure.
//
// A rack's failure of an action maps to an API error by its outcome: the
// BMC refusing the credentials (auth_failed) is a conflict (409) with the
// reason, never 401, which would say the API caller's token was bad;
// timeout is 504; unreachable and busy are 503 (worth a retry); failed,
// invalid and unsupported are conflicts.
package power

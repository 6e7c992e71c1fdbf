// Package flagenv parses a flag set where every flag may also come from an
// environment variable: RACKPLANE_<FLAG> with dashes as underscores (for
// -http-addr, RACKPLANE_HTTP_ADDR). A flag on the command line wins over
// the environment, which wins over the default.
package flagenv

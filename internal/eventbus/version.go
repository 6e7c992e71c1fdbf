package eventbus

import (
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane"
)

// MinServerVersion is the oldest NATS server Rackplane works with.
//
// NATS 2.10 brought consumers with several filter subjects: the rack's
// boot decision follower reads the region stream through one ordered
// consumer filtered to both boot_decision_set and boot_decision_cleared
// (rack/bootconfig). Against a 2.9 server nats.go refuses that consumer
// ("multiple consumer filter subjects not supported by nats-server"), so
// the rack never learns the region's boot decisions and retries for ever.
// Debian 12 ships 2.9.10.
const MinServerVersion = "2.10.0"

// CheckServerVersion returns an *rackplane.Error with code EINVALID naming
// both versions when the server nc is connected to is older than
// MinServerVersion, and one with code EUNAVAILABLE when nc is not
// connected (the check is to be made again once it is).
func CheckServerVersion(nc *nats.Conn) error {
	if !nc.IsConnected() {
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "NATS server version: not connected")
	}
	found := nc.ConnectedServerVersion()
	if !versionAtLeast(found, MinServerVersion) {
		return rackplane.Errorf(rackplane.EINVALID,
			"NATS server %s (%s) runs version %s; Rackplane needs %s or later (consumers with several filter subjects): upgrade nats-server",
			nc.ConnectedServerName(), nc.ConnectedUrlRedacted(), found, MinServerVersion)
	}
	return nil
}

// versionAtLeast compares major.minor.patch; a pre-release suffix
// (2.10.0-beta.1) counts as its release, and a version that does not
// parse as older than any.
func versionAtLeast(version, minimum string) bool {
	v, ok := parseVersion(version)
	if !ok {
		return false
	}
	m, _ := parseVersion(minimum)
	for i := range v {
		if v[i] != m[i] {
			return v[i] > m[i]
		}
	}
	return true
}

func parseVersion(s string) ([3]int, bool) {
	var out [3]int
	s = strings.TrimPrefix(s, "v")
	if i := strings.IndexAny(s, "-+"); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return out, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return out, false
		}
		out[i] = n
	}
	return out, true
}

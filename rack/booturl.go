package rack

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"

	"github.com/rackplane/rackplane/internal/flagenv"
)

// PlaceholderBootURL is what the container image and docker-compose.yml
// set -boot-url to until the operator gives the real one: in a container
// the rack's own first address is the container's, which no machine on
// the provisioning network can reach, so the rack must not guess it.
// Names under .invalid never resolve (RFC 6761), so CheckBootURL refuses
// it, saying what to set.
const PlaceholderBootURL = "http://set-RACKPLANE_BOOT_URL.invalid:5248"

// CheckBootURL reports what is wrong with u as the URL machines reach a
// rack's HTTP server at. It goes into every boot config, preseed URL and
// metadata answer, so a URL no machine can reach fails every boot, late
// and far from the rack's own log; it is refused at start instead. Empty
// is fine: the rack then makes one from its HTTP address.
func CheckBootURL(u string) error {
	if u == "" {
		return nil
	}
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") {
		return fmt.Errorf("-boot-url %q: want an http:// URL", u)
	}
	host := p.Hostname()
	set := fmt.Sprintf("set -boot-url (%s) to the URL machines on the provisioning network reach this rack's HTTP server at, such as http://10.20.0.2:5248",
		flagenv.EnvName("boot-url"))
	switch {
	case host == "":
		return fmt.Errorf("-boot-url %q has no host: %s", u, set)
	case strings.HasSuffix(strings.TrimSuffix(strings.ToLower(host), "."), ".invalid"):
		return fmt.Errorf("-boot-url %q is a placeholder (.invalid never resolves): %s", u, set)
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		return fmt.Errorf("-boot-url %q: %s is where a server listens, not an address a machine can reach: %s", u, host, set)
	}
	if p.Port() != "" {
		if _, err := net.LookupPort("tcp", p.Port()); err != nil {
			return fmt.Errorf("-boot-url %q: port %q: %s", u, p.Port(), set)
		}
	}
	return nil
}

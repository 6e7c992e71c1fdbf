package rack

import (
	"fmt"
	"net"

	"github.com/rackplane/rackplane/rack/dhcp"
)

// openDHCP builds the DHCP server when -dhcp-mode is not off and binds its
// sockets, so a port already taken or a missing interface stops the rack
// at start rather than later.
func (r *Rack) openDHCP(dataDir string) error {
	if r.cfg.DHCP.Mode == "" || r.cfg.DHCP.Mode == dhcp.ModeOff {
		return nil
	}
	var err error
	r.dhcp, err = dhcp.New(r.cfg.DHCP, dhcp.Env{
		RackID: r.id, RackName: r.cfg.Name, DataDir: dataDir, HTTPPort: r.ln.Addr().(*net.TCPAddr).Port,
		Publisher: r.publisher, Logger: r.log.With("service", "dhcp"), Registerer: r.registry,
		// BootOverride stays nil until boot decisions carry a boot file.
	})
	if err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	if err := r.dhcp.Listen(); err != nil {
		r.dhcp.Close()
		return err
	}
	return nil
}

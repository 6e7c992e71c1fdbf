package rack

import (
	"fmt"
	"net"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/dhcp"
	"github.com/rackplane/rackplane/rack/subnets"
)

// openDHCP builds the DHCP server when -dhcp-mode is not off and binds its
// sockets, so a port already taken or a missing interface stops the rack
// at start rather than later. In managed mode it also opens the cache of
// the region's subnets; those are served once Run starts it, and one that
// cannot be served is reported, never fatal.
func (r *Rack) openDHCP(js jetstream.JetStream, dataDir string) error {
	if r.cfg.DHCP.Mode == "" || r.cfg.DHCP.Mode == dhcp.ModeOff {
		return nil
	}
	var err error
	r.dhcp, err = dhcp.New(r.cfg.DHCP, dhcp.Env{
		RackID: r.id, RackName: r.cfg.Name, DataDir: dataDir, HTTPPort: r.ln.Addr().(*net.TCPAddr).Port,
		Publisher: r.publisher, Logger: r.log.With("service", "dhcp"), Registerer: r.registry,
		BootOverride: r.bootFile,
	})
	if err != nil {
		return fmt.Errorf("dhcp: %w", err)
	}
	if err := r.dhcp.Listen(); err != nil {
		r.dhcp.Close()
		return err
	}
	if r.cfg.DHCP.Mode == dhcp.ModeManaged {
		r.regionSubnets, err = subnets.New(subnets.Config{RackID: r.id, DataDir: dataDir, JetStream: js, NATS: r.nc,
			OnChange: r.regionSubnetsChanged, Logger: r.log.With("service", "region-subnets"), Registerer: r.registry})
		if err != nil {
			r.dhcp.Close()
			return fmt.Errorf("region subnets: %w", err)
		}
	}
	return nil
}

// bootFile is a machine's own boot file, from its cached boot decision:
// the DHCP server answers at once, so it never waits for the region.
func (r *Rack) bootFile(mac string) string {
	d, ok := r.decisions.Cached(mac)
	if !ok {
		return ""
	}
	return d.BootFile
}

// regionSubnetsChanged serves the region's subnets of this rack as they
// are now, and tells the region what the DHCP server serves.
func (r *Rack) regionSubnetsChanged(list []events.Subnet) {
	if err := r.dhcp.SetRegionSubnets(list); err != nil {
		r.log.Warn("region subnets partly served", "err", err)
	}
	if !r.started.IsZero() {
		if err := r.register(); err != nil {
			r.log.Warn("rack registration with the new DHCP subnets not sent", "err", err)
		}
	}
}

// dhcpStatus is what the DHCP server does, as rack_registered reports it.
func (r *Rack) dhcpStatus() *events.RackDHCP {
	if r.dhcp == nil {
		return &events.RackDHCP{Mode: string(dhcp.ModeOff)}
	}
	st := r.dhcp.Status()
	return &events.RackDHCP{Mode: string(st.Mode), Interfaces: st.Interfaces, Subnets: st.Subnets}
}

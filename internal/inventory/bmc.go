package inventory

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/rackplane/rackplane/events"
)

// The request the BMC is asked its LAN address with: Get LAN
// Configuration Parameters (IPMI 2.0, 23.2), parameter 3, IP Address,
// of a LAN channel, through the system interface (ipmitool lan print
// asks the same).
const (
	netfnTransport  = 0x0c
	cmdGetLANConfig = 0x02
	lanParamIP      = 3

	// LAN channels asked, from 1: BMCs put their LAN on channel 1 (most),
	// 2 (HPE iLO) or 3 (some Intel boards); 0 is IPMB and 0x0c to 0x0f
	// are reserved or not LAN, so 1 to 8 covers the boards there are
	// without asking channels that cannot be one.
	maxLANChannel = 8

	// ipmiTimeout bounds each request: a BMC answers in milliseconds,
	// or, busy with a firmware task, not at all.
	ipmiTimeout = 2 * time.Second
	// bmcTimeout bounds the whole of asking the BMC, which the inventory
	// waits for.
	bmcTimeout = 10 * time.Second
)

// DefaultIPMIDevices are the nodes of the first interface of the Linux
// IPMI device interface (ipmi_devintf) as devtmpfs and udev name it, and
// as older setups did.
var DefaultIPMIDevices = []string{"/dev/ipmi0", "/dev/ipmi/0", "/dev/ipmidev/0"}

// errNoIPMIDevice: none of the device nodes is there. The machine has no
// BMC the kernel found (or no driver for it): nothing to report, and
// nothing wrong.
var errNoIPMIDevice = errors.New("no IPMI device")

// ipmiAsk sends one request to the BMC and returns its answer's data,
// completion code first.
type ipmiAsk func(ctx context.Context, netfn, cmd byte, data []byte) ([]byte, error)

// lanAddress asks LAN channels 1 to maxLANChannel for their IP address
// and returns the first that has one. A request that fails (the device
// errs, the BMC does not answer) ends it: a BMC that does not answer
// about one channel answers about none.
func lanAddress(ctx context.Context, ask ipmiAsk) (*events.InventoryBMC, error) {
	var why []string
	for ch := byte(1); ch <= maxLANChannel; ch++ {
		ans, err := ask(ctx, netfnTransport, cmdGetLANConfig, []byte{ch, lanParamIP, 0, 0})
		if err != nil {
			return nil, fmt.Errorf("LAN channel %d: %w", ch, err)
		}
		addr, err := parseLANAddress(ans)
		if err == nil {
			return &events.InventoryBMC{IPv4: addr.String()}, nil
		}
		why = append(why, fmt.Sprintf("%d: %v", ch, err))
	}
	return nil, fmt.Errorf("no LAN channel has an IP address (channel %s)", strings.Join(why, "; channel "))
}

// parseLANAddress reads the answer to Get LAN Configuration Parameters
// for parameter 3: completion code, parameter revision, then the
// address, most significant byte first. 0.0.0.0 is a LAN without an
// address (no DHCP lease yet, never configured); an address no BMC can
// be reached at (loopback, multicast, broadcast) is refused as well.
func parseLANAddress(b []byte) (netip.Addr, error) {
	if len(b) == 0 {
		return netip.Addr{}, errors.New("empty answer")
	}
	if b[0] != 0 {
		return netip.Addr{}, completionError(b[0])
	}
	if len(b) < 6 {
		return netip.Addr{}, fmt.Errorf("answer of %d bytes, want 6", len(b))
	}
	a := netip.AddrFrom4([4]byte(b[2:6]))
	switch {
	case a.IsUnspecified():
		return netip.Addr{}, errors.New("no address (0.0.0.0)")
	case !a.IsGlobalUnicast() && !a.IsLinkLocalUnicast():
		return netip.Addr{}, fmt.Errorf("%s is not a unicast address", a)
	}
	return a, nil
}

// completionError names an IPMI completion code, as ipmitool does, for
// the log.
func completionError(cc byte) error {
	names := map[byte]string{
		0x80: "parameter not supported",
		0xc0: "node busy",
		0xc1: "invalid command",
		0xc3: "timeout",
		0xc9: "parameter out of range",
		0xcb: "requested data not present",
		0xcc: "invalid data field",
		0xd4: "insufficient privilege",
		0xd5: "command not supported in present state",
		0xff: "unspecified error",
	}
	if n, ok := names[cc]; ok {
		return fmt.Errorf("completion code %#02x (%s)", cc, n)
	}
	return fmt.Errorf("completion code %#02x", cc)
}

// readBMC returns the BMC's LAN address, asked through the first of
// devices that exists; nil and errNoIPMIDevice when none does. Bounded
// by bmcTimeout.
func readBMC(ctx context.Context, devices []string) (*events.InventoryBMC, error) {
	ctx, cancel := context.WithTimeout(ctx, bmcTimeout)
	defer cancel()
	d, err := openIPMI(devices)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	b, err := lanAddress(ctx, d.ask)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.path, err)
	}
	return b, nil
}

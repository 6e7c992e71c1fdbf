package dhcp

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/flagenv"
)

// Mode is what the rack's DHCP server does.
type Mode string

// Modes.
const (
	// ModeOff runs no DHCP server.
	ModeOff Mode = "off"
	// ModeProxy answers PXE and HTTP boot clients with boot information
	// only (proxyDHCP), beside the site's DHCP server, which hands out the
	// addresses.
	ModeProxy Mode = "proxy"
	// ModeManaged hands out addresses of the subnets in Config.Subnets,
	// and boot information to PXE and HTTP boot clients.
	ModeManaged Mode = "managed"
)

// Boot loader choices per firmware family.
const (
	LoaderIPXE     = "ipxe"
	LoaderPXELinux = "pxelinux"
	// LoaderLPXELinux is pxelinux's lpxelinux.0, given the rack's HTTP
	// server as its path prefix (option 210): ldlinux.c32, its config,
	// kernel and initrd come over HTTP.
	LoaderLPXELinux = "lpxelinux"
	LoaderGRUB      = "grub"
	LoaderShim      = "shim"
)

// Config is the operator's configuration of the rack's DHCP server. Zero
// values take the defaults of DefaultConfig (see withDefaults, the one
// place defaults are applied). Subnets is the part the region will send
// in an event; the rest is the rack's own.
type Config struct {
	Mode Mode `json:"mode"`
	// Interface is the interface the server listens on in proxy mode,
	// and the interface of managed subnets that name none.
	Interface string `json:"interface,omitempty"`
	// ServerIP is the rack's address on that segment: next-server and
	// server identifier. Default: the interface's first IPv4 address (in
	// managed mode, its address inside the subnet). Set it only when the
	// server listens on one interface.
	ServerIP netip.Addr `json:"server_ip,omitzero"`
	// HTTPURL is where clients on the segment reach the rack's HTTP boot
	// server (UEFI HTTP boot, iPXE scripts). Default
	// http://<ServerIP>:<the rack's HTTP port>.
	HTTPURL string `json:"http_url,omitempty"`

	// Boot loaders per firmware: BIOS ipxe (undionly.kpxe), pxelinux
	// (pxelinux.0) or lpxelinux (lpxelinux.0, over HTTP); x64 UEFI ipxe (snponly.efi), grub (grubx64.efi) or
	// shim (bootx64.efi, the signed shim, which loads grubx64.efi); arm64
	// UEFI grub (grubaa64.efi), shim (bootaa64.efi, then grubaa64.efi) or
	// ipxe (ipxe-arm64.efi).
	BIOSLoader  string `json:"bios_loader,omitempty"`
	UEFILoader  string `json:"uefi_loader,omitempty"`
	ARM64Loader string `json:"arm64_loader,omitempty"`

	// ProxyPeers names every rack answering proxyDHCP on this segment,
	// this one included (by rack name). Empty: this rack answers every
	// PXE client. With peers, each client has one owner among them (by
	// rendezvous hash of its MAC), and only the owner answers, until the
	// client has been trying for ProxyTakeover: then every rack does.
	ProxyPeers    []string      `json:"proxy_peers,omitempty"`
	ProxyTakeover time.Duration `json:"proxy_takeover,omitempty"`

	// Subnets the rack serves in managed mode besides the region's (see
	// Server.SetRegionSubnets): the rack's own, which win over the
	// region's where they overlap. Managed mode may start with none and
	// wait for the region's.
	Subnets []Subnet `json:"subnets,omitempty"`
	// LeaseTime is the lease time of subnets that give none.
	LeaseTime time.Duration `json:"lease_time,omitempty"`
	// OfferHold is how long an offered address is kept for its client.
	OfferHold time.Duration `json:"offer_hold,omitempty"`
	// DeclineHold is how long an address a client declined (it found it
	// in use) is not handed out.
	DeclineHold time.Duration `json:"decline_hold,omitempty"`
	// MaxOffers bounds the offers outstanding at once, whatever the
	// traffic; past it, a DISCOVER is not answered until offers expire.
	MaxOffers int `json:"max_offers,omitempty"`

	// EventInterval is how often lease changes and counters go out as one
	// dhcp_leases_changed event (only when there is something to say).
	EventInterval time.Duration `json:"event_interval,omitempty"`
	// MaxEventChanges bounds the changes one event carries; more are
	// counted, not listed.
	MaxEventChanges int `json:"max_event_changes,omitempty"`
}

// Subnet is one subnet served in managed mode, in the form the region
// sends it (events.Subnet): the rack's subnets file holds the same form.
type Subnet = events.Subnet

// Range is an inclusive range of dynamic addresses.
type Range = events.SubnetRange

// Reservation is a static address of one MAC.
type Reservation = events.SubnetReservation

// MaxPoolSize bounds the dynamic addresses of one subnet, which bounds
// the lease table (one record per address at most).
const MaxPoolSize = events.MaxSubnetPool

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Mode:            ModeOff,
		BIOSLoader:      LoaderIPXE,
		UEFILoader:      LoaderIPXE,
		ARM64Loader:     LoaderGRUB,
		ProxyTakeover:   3 * time.Second,
		LeaseTime:       time.Hour,
		OfferHold:       time.Minute,
		DeclineHold:     10 * time.Minute,
		MaxOffers:       1024,
		EventInterval:   10 * time.Second,
		MaxEventChanges: 256,
	}
}

// withDefaults returns c with every zero setting that has a default set
// to it. It is the one place defaults are applied.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	orDefault(&c.Mode, d.Mode)
	orDefault(&c.BIOSLoader, d.BIOSLoader)
	orDefault(&c.UEFILoader, d.UEFILoader)
	orDefault(&c.ARM64Loader, d.ARM64Loader)
	orDefault(&c.ProxyTakeover, d.ProxyTakeover)
	orDefault(&c.LeaseTime, d.LeaseTime)
	orDefault(&c.OfferHold, d.OfferHold)
	orDefault(&c.DeclineHold, d.DeclineHold)
	orDefault(&c.MaxOffers, d.MaxOffers)
	orDefault(&c.EventInterval, d.EventInterval)
	orDefault(&c.MaxEventChanges, d.MaxEventChanges)
	return c
}

func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Validate reports every bad setting of c (after defaults) in one error,
// each named as its flag or JSON field. It changes nothing.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	switch c.Mode {
	case ModeOff:
		return nil // nothing else is used
	case ModeProxy, ModeManaged:
	default:
		bad("-dhcp-mode %q: want off, proxy or managed", c.Mode)
	}
	if c.Mode == ModeProxy && c.Interface == "" {
		bad("-dhcp-interface is empty: proxy mode listens on one interface; name it")
	}
	if c.ServerIP.IsValid() && !c.ServerIP.Is4() {
		bad("-dhcp-server-ip %s: want an IPv4 address", c.ServerIP)
	}
	if c.HTTPURL != "" && !strings.HasPrefix(c.HTTPURL, "http://") && !strings.HasPrefix(c.HTTPURL, "https://") {
		bad("-dhcp-http-url %q: want an http:// URL", c.HTTPURL)
	}
	if len(c.HTTPURL) > 80 {
		bad("-dhcp-http-url %q: longer than 80 characters, it would not fit the boot file field with a path", c.HTTPURL)
	}
	if c.BIOSLoader != LoaderIPXE && c.BIOSLoader != LoaderPXELinux && c.BIOSLoader != LoaderLPXELinux {
		bad("-dhcp-bios-loader %q: want ipxe, pxelinux or lpxelinux", c.BIOSLoader)
	}
	if c.UEFILoader != LoaderIPXE && c.UEFILoader != LoaderGRUB && c.UEFILoader != LoaderShim {
		bad("-dhcp-uefi-loader %q: want ipxe, grub or shim", c.UEFILoader)
	}
	if c.ARM64Loader != LoaderIPXE && c.ARM64Loader != LoaderGRUB && c.ARM64Loader != LoaderShim {
		bad("-dhcp-arm64-loader %q: want grub, shim or ipxe", c.ARM64Loader)
	}
	seen := map[string]bool{}
	for _, p := range c.ProxyPeers {
		if p == "" || seen[p] {
			bad("-dhcp-proxy-peers: %q is empty or named twice", p)
		}
		seen[p] = true
	}
	if c.ProxyTakeover < time.Second || c.ProxyTakeover > time.Minute {
		bad("-dhcp-proxy-takeover %s: want 1s to 1m", c.ProxyTakeover)
	}
	if c.Mode == ModeManaged {
		for i, s := range c.Subnets {
			if s.Interface == "" && c.Interface == "" {
				bad("subnets[%d] (%s): no interface, and -dhcp-interface is empty", i, s.CIDR)
			}
		}
	}
	if err := ValidateSubnets(c.Subnets); err != nil {
		errs = append(errs, err)
	}
	if c.LeaseTime < time.Minute || c.LeaseTime > 365*24*time.Hour {
		bad("lease_time %s: want 1m to 365 days", c.LeaseTime)
	}
	if c.OfferHold < time.Second || c.OfferHold > 10*time.Minute {
		bad("offer_hold %s: want 1s to 10m", c.OfferHold)
	}
	if c.DeclineHold < time.Second || c.DeclineHold > 7*24*time.Hour {
		bad("decline_hold %s: want 1s to 7 days", c.DeclineHold)
	}
	if c.MaxOffers < 1 || c.MaxOffers > MaxPoolSize {
		bad("max_offers %d: want 1 to %d", c.MaxOffers, MaxPoolSize)
	}
	if c.EventInterval < 100*time.Millisecond || c.EventInterval > time.Hour {
		bad("-dhcp-event-interval %s: want 100ms to 1h", c.EventInterval)
	}
	if c.MaxEventChanges < 1 || c.MaxEventChanges > 2048 {
		bad("max_event_changes %d: want 1 to 2048", c.MaxEventChanges)
	}
	return errors.Join(errs...)
}

// ValidateSubnets checks subnets as they would arrive in an event: each
// on its own, and no two overlapping. Every problem is reported.
func ValidateSubnets(subnets []Subnet) error {
	var errs []error
	for i, s := range subnets {
		for _, err := range s.Problems() {
			errs = append(errs, fmt.Errorf("subnets[%d]: %w", i, err))
		}
		for j := range i {
			if o := subnets[j]; s.CIDR.IsValid() && o.CIDR.IsValid() && s.CIDR.Overlaps(o.CIDR) {
				errs = append(errs, fmt.Errorf("subnets[%d] (%s) overlaps subnets[%d] (%s)", i, s.CIDR, j, o.CIDR))
			}
		}
	}
	return errors.Join(errs...)
}

// validHostname reports whether h is a host name a lease may carry.
func validHostname(h string) bool { return events.ValidHostLabel(h) }

func toU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromU32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func lastAddr(p netip.Prefix) netip.Addr {
	return fromU32(toU32(p.Addr()) | (1<<(32-p.Bits()) - 1))
}

// RegisterFlags binds c's rack-local settings to flags of fs; managed
// subnets come from a JSON file (-dhcp-subnets), in the form the region
// will send them.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Func("dhcp-mode", "DHCP server: off, proxy (boot information for PXE clients beside the site's DHCP) or managed (addresses of the region's subnets for this rack and of -dhcp-subnets) (default off)", func(v string) error {
		c.Mode = Mode(v)
		return nil
	})
	fs.StringVar(&c.Interface, "dhcp-interface", c.Interface, "interface the DHCP server listens on (proxy mode), and of managed subnets that name none")
	fs.Func("dhcp-server-ip", "the rack's IPv4 address on the DHCP segment: next-server and server identifier (default: the interface's)", func(v string) error {
		a, err := netip.ParseAddr(v)
		c.ServerIP = a
		return err
	})
	fs.StringVar(&c.HTTPURL, "dhcp-http-url", c.HTTPURL, "URL DHCP clients reach the rack's HTTP boot server at (default http://<server ip>:<http port>)")
	fs.StringVar(&c.BIOSLoader, "dhcp-bios-loader", c.BIOSLoader, "boot loader of BIOS PXE clients: ipxe (undionly.kpxe), pxelinux (pxelinux.0) or lpxelinux (lpxelinux.0, files over HTTP)")
	fs.StringVar(&c.UEFILoader, "dhcp-uefi-loader", c.UEFILoader, "boot loader of x64 UEFI clients: ipxe (snponly.efi), grub (grubx64.efi) or shim (bootx64.efi, then grubx64.efi)")
	fs.StringVar(&c.ARM64Loader, "dhcp-arm64-loader", c.ARM64Loader, "boot loader of arm64 UEFI clients: grub (grubaa64.efi), shim (bootaa64.efi, then grubaa64.efi) or ipxe (ipxe-arm64.efi)")
	fs.Func("dhcp-proxy-peers", "comma-separated names of every rack answering proxyDHCP on this segment, this one included; each PXE client is then answered by one of them", flagenv.List(&c.ProxyPeers))
	fs.DurationVar(&c.ProxyTakeover, "dhcp-proxy-takeover", c.ProxyTakeover, "with -dhcp-proxy-peers: how long a PXE client tries before every rack answers it")
	fs.DurationVar(&c.EventInterval, "dhcp-event-interval", c.EventInterval, "how often DHCP lease changes go out as one event")
	fs.Func("dhcp-subnets", "JSON file holding the array of the rack's own subnets of managed mode, which take precedence over the region's (see rack/dhcp's doc)", func(path string) error {
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var subnets []Subnet
		if err := json.Unmarshal(raw, &subnets); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		c.Subnets = subnets
		return nil
	})
}

package dhcp

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"path"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/rackplane/rackplane/events"
)

// handle turns one packet received on port of l into the reply to send
// and where to send it, or nil. Everything about the packet is counted.
func (s *Server) handle(l *listener, port int, raw []byte, peer *net.UDPAddr) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	m, err := dhcpv4.FromBytes(raw)
	if err != nil || m.OpCode != dhcpv4.OpcodeBootRequest || m.HWType != iana.HWTypeEthernet || len(m.ClientHWAddr) != 6 {
		s.metrics.malformed.Inc()
		s.report.malformedPacket()
		return nil, nil
	}
	var reply *dhcpv4.DHCPv4
	var dst *net.UDPAddr
	var reason string
	if s.cfg.Mode == ModeProxy {
		reply, dst, reason = s.proxy(l, port, m, peer)
	} else {
		reply, dst, reason = s.managed(l, m)
	}
	outcome := outcomeReplied
	switch {
	case reply != nil && reply.MessageType() == dhcpv4.MessageTypeNak:
		outcome = outcomeNAK
	case reply == nil && reason == ReasonError:
		outcome = outcomeError
	case reply == nil:
		outcome = outcomeIgnored
	}
	if reply == nil && reason != "" {
		s.report.ignore(reason)
	}
	s.metrics.packets.WithLabelValues(typeLabel(m.MessageType()), outcome).Inc()
	return reply, dst
}

func typeLabel(t dhcpv4.MessageType) string {
	switch t {
	case dhcpv4.MessageTypeDiscover:
		return "discover"
	case dhcpv4.MessageTypeRequest:
		return "request"
	case dhcpv4.MessageTypeDecline:
		return "decline"
	case dhcpv4.MessageTypeRelease:
		return "release"
	case dhcpv4.MessageTypeInform:
		return "inform"
	}
	return "other"
}

var broadcast = &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}

// replyTo is where a reply to m goes (RFC 2131 section 4.1): to the relay
// when there is one, to the client's address when it has one (not for a
// NAK), else broadcast. The rack does not unicast to an address the
// client does not hold yet (that needs an ARP entry injected): clients
// accept broadcast replies.
func replyTo(m *dhcpv4.DHCPv4, nak bool) *net.UDPAddr {
	if gi := m.GatewayIPAddr; gi != nil && !gi.IsUnspecified() {
		return &net.UDPAddr{IP: gi, Port: dhcpv4.ServerPort}
	}
	if ci := m.ClientIPAddr; !nak && ci != nil && !ci.IsUnspecified() {
		return &net.UDPAddr{IP: ci, Port: dhcpv4.ClientPort}
	}
	return broadcast
}

func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

func (s *Server) override(mac string) string {
	if s.env.BootOverride == nil || mac == "" {
		return ""
	}
	return s.env.BootOverride(mac)
}

// netboot adds the boot information of b to reply (PXE 2.1, RFC 4578,
// UEFI HTTP boot): next-server and sname are the rack, file the boot
// file, option 60 the client type; PXE clients also get option 43
// telling them to boot the file given (no boot server discovery, no
// menu), and their option 97 (machine GUID) back.
func netboot(reply, req *dhcpv4.DHCPv4, b Boot, l *listener) {
	reply.ServerIPAddr = net.IP(l.ip.AsSlice())
	reply.ServerHostName = l.ip.String()
	reply.BootFileName = b.File
	if len(b.File) > 127 {
		reply.UpdateOption(dhcpv4.OptBootFileName(b.File)) // the field holds 127 bytes
	}
	reply.UpdateOption(dhcpv4.OptClassIdentifier(b.ClientType))
	if b.ClientType == ClientPXE {
		// Sub-option 6 (PXE_DISCOVERY_CONTROL) = 8: boot the file in the
		// reply at once.
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{6, 1, 8, 255}))
	}
	if path.Base(b.File) == FileLPXELinux && b.ClientType == ClientPXE {
		// lpxelinux.0 takes the rack's HTTP server as its path prefix
		// (option 210, RFC 5071): everything it loads next comes over
		// HTTP, not TFTP.
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionPXELinuxPathPrefix, []byte(l.httpURL+"/")))
	}
	if guid := req.GetOneOption(dhcpv4.OptionClientMachineIdentifier); guid != nil {
		reply.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, guid))
	}
}

// proxy answers a PXE or HTTP boot client with boot information only:
// DHCPOFFER to its DISCOVER on port 67 (no address: the site's server
// gives that), DHCPACK to its DHCPREQUEST on 4011 (or on 67 when the
// request names this rack as server).
func (s *Server) proxy(l *listener, port int, m *dhcpv4.DHCPv4, peer *net.UDPAddr) (*dhcpv4.DHCPv4, *net.UDPAddr, string) {
	mt := m.MessageType()
	var answer dhcpv4.MessageType
	switch {
	case port == ServerPort && mt == dhcpv4.MessageTypeDiscover:
		answer = dhcpv4.MessageTypeOffer
	case mt == dhcpv4.MessageTypeRequest && (port == PXEPort || addrOf(m.ServerIdentifier()) == l.ip):
		answer = dhcpv4.MessageTypeAck
	case mt == dhcpv4.MessageTypeRequest:
		return nil, nil, ReasonOtherServer
	default:
		return nil, nil, ReasonMessageType
	}
	br := BootRequestOf(m)
	br.Override = s.override(br.MAC)
	b, err := ChooseBoot(br, s.loaders, l.httpURL)
	if err != nil {
		if errors.Is(err, ErrNotNetboot) {
			return nil, nil, ReasonNotNetboot
		}
		s.log.Debug("no boot loader for client", "mac", br.MAC, "err", err)
		return nil, nil, ReasonUnsupportedArch
	}
	now := s.now()
	if answer == dhcpv4.MessageTypeOffer && !s.answers(m, now) {
		return nil, nil, ReasonNotOwner
	}
	reply, err := dhcpv4.NewReplyFromRequest(m,
		dhcpv4.WithMessageType(answer),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(l.ip.AsSlice()))))
	if err != nil {
		return nil, nil, ReasonError
	}
	netboot(reply, m, b, l)
	action, op, dst := events.DHCPBootOffered, "boot_offer", replyTo(m, false)
	if answer == dhcpv4.MessageTypeAck {
		action, op = events.DHCPBootAcked, "boot_ack"
		if port == PXEPort && peer != nil {
			dst = peer // PXE 2.1: to the port the request came from
		}
	}
	s.metrics.leases.WithLabelValues(op).Inc()
	s.report.change(events.DHCPLeaseChange{Action: action, MAC: br.MAC, BootFile: b.File, At: now.UTC()})
	s.log.Debug("proxy dhcp reply", "message_type", answer.String(), "mac", br.MAC, "xid", m.TransactionID.String(),
		"boot_file", b.File, "interface", l.iface)
	return reply, dst, ""
}

// answers reports whether this rack answers m's client in proxy mode. On
// a segment with peers, each client has one owner, the peer with the
// highest rendezvous hash of (peer, MAC); the others answer only once
// the client has been trying for ProxyTakeover (the owner is down),
// judged by the request's secs field or, for firmware that leaves it at
// zero, by how long this rack has seen the client asking.
func (s *Server) answers(m *dhcpv4.DHCPv4, now time.Time) bool {
	if len(s.cfg.ProxyPeers) < 2 {
		return true
	}
	mac := m.ClientHWAddr.String()
	if ProxyOwner(s.cfg.ProxyPeers, mac) == s.env.RackName {
		return true
	}
	if time.Duration(m.NumSeconds)*time.Second >= s.cfg.ProxyTakeover {
		return true
	}
	return s.seen.waiting(mac, now) >= s.cfg.ProxyTakeover
}

// ProxyOwner is the rack of peers that answers the PXE client mac: the
// one with the highest hash of (rack name, MAC). Every rack computes the
// same owner from the same peer list, and a peer joining or leaving moves
// only the clients it wins or held.
func ProxyOwner(peers []string, mac string) string {
	var owner string
	var best uint64
	for _, p := range peers {
		if v := hash64(p, mac); owner == "" || v > best {
			owner, best = p, v
		}
	}
	return owner
}

// hash64 is a well-mixed hash of parts (SHA-256, so every bit of every
// part moves every bit of the result).
func hash64(parts ...string) uint64 {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return binary.BigEndian.Uint64(h.Sum(nil))
}

// seenTable remembers, in a fixed number of slots, since when a client
// has been asking. Its size never depends on traffic: a flood of MACs
// only overwrites slots, which at worst lets a rack answer a client
// early (the client then has two offers, which it can use either of).
type seenTable struct {
	mu    sync.Mutex
	slots [1024]seenSlot
}

type seenSlot struct {
	hash        uint64
	first, last time.Time
}

// seenGap ends an attempt: a client not heard of for this long starts
// again.
const seenGap = time.Minute

// waiting records that mac asks now and returns for how long it has.
func (t *seenTable) waiting(mac string, now time.Time) time.Duration {
	v := hash64(mac)
	t.mu.Lock()
	defer t.mu.Unlock()
	sl := &t.slots[v%uint64(len(t.slots))]
	if sl.hash != v || now.Sub(sl.last) > seenGap || now.Before(sl.first) {
		*sl = seenSlot{hash: v, first: now, last: now}
		return 0
	}
	sl.last = now
	return now.Sub(sl.first)
}

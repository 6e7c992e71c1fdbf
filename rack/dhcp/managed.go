package dhcp

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/rackplane/rackplane/events"
)

// managed answers m as the DHCP server of the subnets (RFC 2131): offers
// and leases addresses, and gives PXE and HTTP boot clients their boot
// information in the same replies.
//
// The subnet is looked up per packet from the current subnets, by the
// address it is known by (the rack's on the interface, or the relay's):
// the table's operations look it up again under their lock and return
// the pool they used, as the subnets may change in between.
func (s *Server) managed(l *listener, m *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, *net.UDPAddr, string) {
	at := l.ip
	if gi := addrOf(m.GatewayIPAddr); gi.IsValid() {
		at = gi // relayed: the relay's subnet
	}
	p := s.table.poolOf(at)
	if p == nil {
		return nil, nil, ReasonNoSubnet
	}
	mac := m.ClientHWAddr.String()
	now := s.now()
	log := s.log.With("mac", mac, "xid", m.TransactionID.String(), "interface", l.iface, "subnet", p.prefix.String())
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		ip, op, err := s.table.offer(at, mac, addrOf(m.RequestedIPAddress()), now)
		if err != nil {
			log.Debug("no address offered", "err", err) // counted; tick warns once per interval
			switch {
			case errors.Is(err, errOfferLimit):
				return nil, nil, ReasonOfferLimit
			case errors.Is(err, errNoSubnet):
				return nil, nil, ReasonNoSubnet
			}
			return nil, nil, ReasonNoAddress
		}
		p = op
		reply, err := s.leaseReply(l, p, m, dhcpv4.MessageTypeOffer, ip, s.reservedName(p, mac))
		if err != nil {
			return nil, nil, ReasonError
		}
		s.metrics.leases.WithLabelValues("offer").Inc()
		s.report.change(events.DHCPLeaseChange{Action: events.DHCPOffered, MAC: mac, IP: ip.String(), Subnet: p.prefix.String(),
			BootFile: reply.BootFileName, At: now.UTC()})
		log.Debug("offer", "ip", ip, "boot_file", reply.BootFileName)
		return reply, replyTo(m, false), ""

	case dhcpv4.MessageTypeRequest:
		if sid := addrOf(m.ServerIdentifier()); sid.IsValid() && sid != l.ip {
			s.table.forgetOffer(mac) // it chose another server's offer
			return nil, nil, ReasonOtherServer
		}
		ip := addrOf(m.RequestedIPAddress())
		if !ip.IsValid() {
			ip = addrOf(m.ClientIPAddr) // renewing or rebinding
		}
		if !ip.IsValid() {
			return nil, nil, ReasonMessageType
		}
		rec, bp, err := s.table.bind(at, mac, ip, hostnameOf(m), now)
		switch {
		case errors.Is(err, errWrongAddr):
			log.Info("request refused", "ip", ip)
			return s.nak(l, p, m, mac, ip, now)
		case errors.Is(err, errNoSubnet):
			return nil, nil, ReasonNoSubnet
		case err != nil:
			log.Error("lease not written: request not answered", "ip", ip, "err", err)
			return nil, nil, ReasonError
		}
		p = bp
		reply, err := s.leaseReply(l, p, m, dhcpv4.MessageTypeAck, ip, rec.Hostname)
		if err != nil {
			return nil, nil, ReasonError
		}
		s.metrics.leases.WithLabelValues("ack").Inc()
		s.report.change(events.DHCPLeaseChange{Action: events.DHCPAcked, MAC: mac, IP: ip.String(), Subnet: p.prefix.String(),
			Hostname: rec.Hostname, Expires: &rec.Until, BootFile: reply.BootFileName, At: now.UTC()})
		log.Info("lease", "ip", ip, "until", rec.Until, "hostname", rec.Hostname)
		return reply, replyTo(m, false), ""

	case dhcpv4.MessageTypeDecline:
		if sid := addrOf(m.ServerIdentifier()); sid.IsValid() && sid != l.ip {
			return nil, nil, ReasonOtherServer
		}
		ip := addrOf(m.RequestedIPAddress())
		rec, changed, err := s.table.decline(at, mac, ip, now)
		if err != nil {
			log.Error("decline not written", "ip", ip, "err", err)
			return nil, nil, ReasonError
		}
		if changed {
			s.metrics.leases.WithLabelValues("decline").Inc()
			s.report.change(events.DHCPLeaseChange{Action: events.DHCPDeclined, MAC: mac, IP: ip.String(), Subnet: p.prefix.String(),
				Expires: &rec.Until, At: now.UTC()})
			log.Warn("address declined: in use by another host", "ip", ip, "held_until", rec.Until)
		}
		return nil, nil, ""

	case dhcpv4.MessageTypeRelease:
		ip := addrOf(m.ClientIPAddr)
		_, changed, err := s.table.release(at, mac, ip, now)
		if err != nil {
			log.Error("release not written", "ip", ip, "err", err)
			return nil, nil, ReasonError
		}
		if changed {
			s.metrics.leases.WithLabelValues("release").Inc()
			s.report.change(events.DHCPLeaseChange{Action: events.DHCPReleased, MAC: mac, IP: ip.String(), Subnet: p.prefix.String(), At: now.UTC()})
			log.Info("lease released", "ip", ip)
		}
		return nil, nil, ""

	case dhcpv4.MessageTypeInform:
		// Configuration only: no address, no lease time (RFC 2131 4.3.5).
		reply, err := s.leaseReply(l, p, m, dhcpv4.MessageTypeAck, netip.Addr{}, "")
		if err != nil {
			return nil, nil, ReasonError
		}
		return reply, replyTo(m, false), ""
	}
	return nil, nil, ReasonMessageType
}

func (s *Server) nak(l *listener, p *pool, m *dhcpv4.DHCPv4, mac string, ip netip.Addr, now time.Time) (*dhcpv4.DHCPv4, *net.UDPAddr, string) {
	reply, err := dhcpv4.NewReplyFromRequest(m, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(l.ip.AsSlice()))))
	if err != nil {
		return nil, nil, ReasonError
	}
	s.metrics.leases.WithLabelValues("nak").Inc()
	s.report.change(events.DHCPLeaseChange{Action: events.DHCPRefused, MAC: mac, IP: ip.String(), Subnet: p.prefix.String(), At: now.UTC()})
	return reply, replyTo(m, true), ""
}

func (s *Server) reservedName(p *pool, mac string) string {
	return p.reserved[mac].Hostname // a pool's reservations never change; new subnets are new pools
}

// hostnameOf is the client's option 12 when it is a valid host name.
func hostnameOf(m *dhcpv4.DHCPv4) string {
	if h := m.HostName(); validHostname(h) {
		return h
	}
	return ""
}

// leaseReply builds an OFFER or ACK for ip (none for an INFORM's ACK)
// with the subnet's options, and boot information for netboot clients.
func (s *Server) leaseReply(l *listener, p *pool, req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, ip netip.Addr, hostname string) (*dhcpv4.DHCPv4, error) {
	sn := p.subnet
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(l.ip.AsSlice()))),
		dhcpv4.WithNetmask(net.CIDRMask(p.prefix.Bits(), 32)),
		dhcpv4.WithOption(dhcpv4.OptBroadcastAddress(net.IP(lastAddr(p.prefix).AsSlice()))),
	}
	if ip.IsValid() {
		lt := p.leaseTime
		mods = append(mods, dhcpv4.WithYourIP(net.IP(ip.AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(lt)),
			dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(lt/2)),
			dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(lt*7/8)))
	}
	if sn.Router.IsValid() {
		mods = append(mods, dhcpv4.WithRouter(net.IP(sn.Router.AsSlice())))
	}
	if len(sn.DNSServers) > 0 {
		dns := make([]net.IP, len(sn.DNSServers))
		for i, d := range sn.DNSServers {
			dns[i] = net.IP(d.AsSlice())
		}
		mods = append(mods, dhcpv4.WithDNS(dns...))
	}
	if sn.Domain != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(sn.Domain)))
	}
	if len(sn.SearchDomains) > 0 {
		mods = append(mods, dhcpv4.WithDomainSearchList(sn.SearchDomains...))
	}
	if hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(hostname)))
	}
	reply, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		return nil, err
	}
	br := BootRequestOf(req)
	if NetbootClient(br.VendorClass) {
		br.Override = s.override(br.MAC)
		if b, err := ChooseBoot(br, s.loaders, l.httpURL); err == nil {
			netboot(reply, req, b, l)
		} else {
			s.log.Debug("netboot client gets no boot file", "mac", br.MAC, "err", err)
		}
	}
	return reply, nil
}

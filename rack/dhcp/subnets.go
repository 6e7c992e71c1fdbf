package dhcp

import (
	"errors"
	"fmt"
	"slices"
)

// SetRegionSubnets makes subnets the ones the region gives this rack, in
// managed mode, and applies them at once: new interfaces are listened on,
// interfaces no subnet is on any more are closed, leases stay.
//
// The rack's own subnets (Config.Subnets, -dhcp-subnets) take
// precedence: a region subnet that overlaps one of them is not served,
// nor one that is invalid, has no interface (its own or -dhcp-interface)
// or overlaps an earlier one. Each of those is counted, logged and named
// in the error; the others are served all the same. Once the server has
// stopped it changes nothing and returns ErrStopped.
func (s *Server) SetRegionSubnets(subnets []Subnet) error {
	if s.table == nil {
		if len(subnets) > 0 {
			return fmt.Errorf("dhcp: %d subnet(s) from the region not served: the DHCP server is in %s mode, not managed", len(subnets), s.cfg.Mode)
		}
		return nil
	}
	effective := slices.Clone(s.cfg.Subnets)
	var errs []error
	skip := func(sn Subnet, format string, a ...any) {
		err := fmt.Errorf("dhcp: region subnet %s not served: %s", sn.CIDR, fmt.Sprintf(format, a...))
		s.metrics.skipped.Inc()
		s.log.Warn("region subnet not served", "subnet", sn.CIDR.String(), "err", err)
		errs = append(errs, err)
	}
	for _, sn := range subnets {
		if err := sn.Validate(); err != nil {
			skip(sn, "%v", err)
			continue
		}
		if sn.Interface == "" && s.cfg.Interface == "" {
			skip(sn, "it names no interface, and -dhcp-interface is empty")
			continue
		}
		i := slices.IndexFunc(effective, func(o Subnet) bool { return o.CIDR.Overlaps(sn.CIDR) })
		if i >= 0 {
			owner := "another region subnet"
			if i < len(s.cfg.Subnets) {
				owner = "the rack's own subnet (-dhcp-subnets), which takes precedence,"
			}
			skip(sn, "it overlaps %s %s", owner, effective[i].CIDR)
			continue
		}
		effective = append(effective, sn)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return fmt.Errorf("dhcp: %d region subnet(s) not applied: %w", len(subnets), ErrStopped)
	}
	s.table.setPools(effective)
	if s.listening {
		if err := s.relistenLocked(false); err != nil {
			s.log.Error("dhcp listeners after a subnet change", "err", err)
			errs = append(errs, err)
		}
	}
	s.log.Info("dhcp subnets applied", "region_subnets", len(subnets), "served", len(effective), "interfaces", s.interfaces())
	return errors.Join(errs...)
}

// Status is what the DHCP server does now, as the rack reports it.
type Status struct {
	Mode Mode
	// Interfaces are those listened on.
	Interfaces []string
	// Subnets are the CIDRs served (managed mode).
	Subnets []string
}

// Status returns what the server does now.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Mode: s.cfg.Mode}
	for _, l := range s.listeners {
		st.Interfaces = append(st.Interfaces, l.iface)
	}
	if !s.listening {
		st.Interfaces = s.interfaces()
	}
	if s.table != nil {
		for _, p := range s.table.poolList() {
			st.Subnets = append(st.Subnets, p.prefix.String())
		}
	}
	return st
}

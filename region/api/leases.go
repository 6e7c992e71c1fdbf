package api

import (
	"context"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
)

// Leases are the DHCP leases racks reported, as the region projects them
// from the racks' dhcp_leases_changed events.
type Leases interface {
	ListLeases(ctx context.Context, f postgres.LeaseFilter) ([]postgres.Lease, error)
}

func (s *Server) leaseRoutes() {
	s.handle("GET /api/v1/leases", s.listLeases, "rack_id", "subnet", "mac", "after", "limit")
	s.handle("GET /api/v1/subnets/{id}/leases", s.listSubnetLeases, "mac", "after", "limit")
}

type leasesResponse struct {
	Leases []postgres.Lease `json:"leases"`
	// Next is the after of the next page; empty on the last.
	Next string `json:"next"`
}

// listLeases lists current leases of every rack, or of one rack, one
// subnet (by id) or one MAC.
func (s *Server) listLeases(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f, err := leaseFilter(r)
	if err != nil {
		return err
	}
	if v := q.Get("rack_id"); v != "" {
		u, err := uuid.Parse(v)
		if err != nil {
			return rackplane.Errorf(rackplane.EINVALID, "rack_id %.80q is not a UUID", v)
		}
		f.RackID = u.String()
	}
	if v := q.Get("subnet"); v != "" {
		u, err := uuid.Parse(v)
		if err != nil {
			return rackplane.Errorf(rackplane.EINVALID, "subnet %.80q: want a subnet's id", v)
		}
		sn, err := s.subnets.Get(r.Context(), u.String())
		if err != nil {
			return err
		}
		if f.RackID != "" && f.RackID != sn.RackID {
			// Another rack's subnet: none of its leases are this rack's.
			return writeJSON(w, http.StatusOK, leasesResponse{Leases: []postgres.Lease{}})
		}
		f.RackID, f.Subnet = sn.RackID, &sn.CIDR
	}
	return s.writeLeases(r.Context(), w, f)
}

// listSubnetLeases lists the current leases of a subnet: those its rack
// gave of its addresses.
func (s *Server) listSubnetLeases(w http.ResponseWriter, r *http.Request) error {
	id, err := PathUUID(r, "id")
	if err != nil {
		return err
	}
	f, err := leaseFilter(r)
	if err != nil {
		return err
	}
	sn, err := s.subnets.Get(r.Context(), id)
	if err != nil {
		return err
	}
	f.RackID, f.Subnet = sn.RackID, &sn.CIDR
	return s.writeLeases(r.Context(), w, f)
}

// leaseFilter reads what both lists take: mac, after and limit.
func leaseFilter(r *http.Request) (postgres.LeaseFilter, error) {
	q := r.URL.Query()
	f := postgres.LeaseFilter{After: q.Get("after"), Now: time.Now()}
	if v := q.Get("mac"); v != "" {
		mac, err := events.CanonicalMAC(v)
		if err != nil {
			return f, rackplane.Errorf(rackplane.EINVALID, "mac: %v", err)
		}
		f.MAC = mac
	}
	limit, err := QueryInt(r, "limit", postgres.DefaultLeaseLimit, 1, postgres.MaxLeaseLimit)
	f.Limit = limit
	return f, err
}

func (s *Server) writeLeases(ctx context.Context, w http.ResponseWriter, f postgres.LeaseFilter) error {
	if s.leases == nil {
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "this region keeps no DHCP leases")
	}
	list, err := s.leases.ListLeases(ctx, f)
	if err != nil {
		return err
	}
	out := leasesResponse{Leases: list}
	if out.Leases == nil {
		out.Leases = []postgres.Lease{}
	}
	if len(list) == f.Limit {
		out.Next = postgres.LeaseCursor(list[len(list)-1])
	}
	return writeJSON(w, http.StatusOK, out)
}

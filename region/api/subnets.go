package api

import (
	"context"
	"net/http"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/subnet"
)

// Subnets are the subnets of managed DHCP; package region/subnet checks
// every change.
type Subnets interface {
	Get(ctx context.Context, id string) (postgres.Subnet, error)
	List(ctx context.Context, rackID string) ([]postgres.Subnet, error)
	Create(ctx context.Context, f subnet.Fields, meta subnet.Meta) (postgres.Subnet, error)
	Update(ctx context.Context, id string, f subnet.Fields, meta subnet.Meta) (before, after postgres.Subnet, err error)
	Delete(ctx context.Context, id string, meta subnet.Meta) (postgres.Subnet, error)
}

func (s *Server) subnetRoutes() {
	s.handle("POST /api/v1/subnets", s.createSubnet)
	s.handle("GET /api/v1/subnets", s.listSubnets, "rack_id")
	s.handle("GET /api/v1/subnets/{id}", s.getSubnet)
	s.handle("PATCH /api/v1/subnets/{id}", s.updateSubnet)
	s.handle("DELETE /api/v1/subnets/{id}", s.deleteSubnet)
}

func subnetMeta(r *http.Request) (subnet.Meta, error) {
	m, err := meta(r)
	return subnet.Meta{Actor: m.Actor, CorrelationID: m.CorrelationID, IfMatch: m.IfMatch}, err
}

func writeSubnet(w http.ResponseWriter, status int, sn postgres.Subnet) error {
	w.Header().Set("ETag", etag(sn.Version))
	return writeJSON(w, status, sn)
}

// subnetID returns the path's subnet id; failed changes are audited
// against the subnet too.
func subnetID(r *http.Request) (string, error) {
	id, err := PathUUID(r, "id")
	if err == nil {
		AuditNote(r.Context(), events.SubnetStreamName(id), nil, nil)
	}
	return id, err
}

func (s *Server) createSubnet(w http.ResponseWriter, r *http.Request) error {
	var f subnet.Fields
	if err := DecodeJSON(r, &f, "rack_id", "cidr"); err != nil {
		return err
	}
	md, err := subnetMeta(r)
	if err != nil {
		return err
	}
	sn, err := s.subnets.Create(r.Context(), f, md)
	if err != nil {
		return err
	}
	AuditNote(r.Context(), events.SubnetStreamName(sn.ID), nil, sn)
	w.Header().Set("Location", "/api/v1/subnets/"+sn.ID)
	return writeSubnet(w, http.StatusCreated, sn)
}

func (s *Server) listSubnets(w http.ResponseWriter, r *http.Request) error {
	list, err := s.subnets.List(r.Context(), r.URL.Query().Get("rack_id"))
	if err != nil {
		return err
	}
	if list == nil {
		list = []postgres.Subnet{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"subnets": list})
}

func (s *Server) getSubnet(w http.ResponseWriter, r *http.Request) error {
	id, err := PathUUID(r, "id")
	if err != nil {
		return err
	}
	sn, err := s.subnets.Get(r.Context(), id)
	if err != nil {
		return err
	}
	return writeSubnet(w, http.StatusOK, sn)
}

func (s *Server) updateSubnet(w http.ResponseWriter, r *http.Request) error {
	id, err := subnetID(r)
	if err != nil {
		return err
	}
	var f subnet.Fields
	if err := DecodeJSON(r, &f); err != nil {
		return err
	}
	md, err := subnetMeta(r)
	if err != nil {
		return err
	}
	before, after, err := s.subnets.Update(r.Context(), id, f, md)
	if err != nil {
		return err
	}
	AuditNote(r.Context(), events.SubnetStreamName(id), before, after)
	return writeSubnet(w, http.StatusOK, after)
}

func (s *Server) deleteSubnet(w http.ResponseWriter, r *http.Request) error {
	id, err := subnetID(r)
	if err != nil {
		return err
	}
	md, err := subnetMeta(r)
	if err != nil {
		return err
	}
	before, err := s.subnets.Delete(r.Context(), id, md)
	if err != nil {
		return err
	}
	AuditNote(r.Context(), events.SubnetStreamName(id), before, nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

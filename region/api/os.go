package api

import (
	"context"
	"net/http"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/region/osregistry"
	"github.com/rackplane/rackplane/region/postgres"
)

// Live queries wait DefaultLiveTimeout unless the request says otherwise,
// and never longer than MaxLiveTimeout.
const (
	DefaultLiveTimeout = 2 * time.Second
	MaxLiveTimeout     = 10 * time.Second
)

// OSRegistry is the OS registry as the API uses it; package
// region/osregistry answers it.
type OSRegistry interface {
	List(ctx context.Context, q osregistry.Query) (osregistry.Listing, error)
	RackCapabilities(ctx context.Context, rackID string, live bool, timeout time.Duration) (osregistry.RackView, error)
	LicenceKey(ctx context.Context, os, release string) (postgres.LicenceKey, error)
	SetLicenceKey(ctx context.Context, os, release, key, actor string) (postgres.LicenceKey, error)
}

// The JSON of GET /api/v1/os, for clients.
type (
	OSEntry      = osregistry.Entry
	OSEntryRack  = osregistry.EntryRack
	VersionBrief = osregistry.VersionBrief
	RackBrief    = osregistry.RackBrief
)

func (s *Server) osRoutes() {
	s.handle("GET /api/v1/os", s.listOS, "live", "timeout", "os", "release", "arch")
	s.handle("GET /api/v1/racks/{id}/capabilities", s.rackCapabilities, "live", "timeout")
	s.handle("PUT /api/v1/os/{os}/{release}/licence-key", s.putLicenceKey)
	s.handle("GET /api/v1/os/{os}/{release}/licence-key", s.getLicenceKey)
}

func liveTimeout(r *http.Request) (bool, time.Duration, error) {
	q := r.URL.Query()
	live := q.Get("live") == "true" || q.Get("live") == "1"
	if v := q.Get("live"); v != "" && v != "true" && v != "1" && v != "false" && v != "0" {
		return false, 0, rackplane.Errorf(rackplane.EINVALID, "live must be true or false")
	}
	d, err := QueryDuration(r, "timeout", DefaultLiveTimeout, 10*time.Millisecond, MaxLiveTimeout)
	return live, d, err
}

func (s *Server) listOS(w http.ResponseWriter, r *http.Request) error {
	live, timeout, err := liveTimeout(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	res, err := s.osRegistry.List(r.Context(), osregistry.Query{Live: live, Timeout: timeout,
		Filter: postgres.ImageFilter{OS: q.Get("os"), Release: q.Get("release"), Arch: q.Get("arch")}})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, res)
}

func (s *Server) rackCapabilities(w http.ResponseWriter, r *http.Request) error {
	id, err := PathUUID(r, "id")
	if err != nil {
		return err
	}
	live, timeout, err := liveTimeout(r)
	if err != nil {
		return err
	}
	v, err := s.osRegistry.RackCapabilities(r.Context(), id, live, timeout)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, v)
}

type licenceKeyRequest struct {
	Key string `json:"key"`
}

func (s *Server) putLicenceKey(w http.ResponseWriter, r *http.Request) error {
	var req licenceKeyRequest
	if err := DecodeJSON(r, &req, "key"); err != nil {
		return err
	}
	k, err := s.osRegistry.SetLicenceKey(r.Context(), r.PathValue("os"), r.PathValue("release"), req.Key, Actor(r.Context()))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, k)
}

func (s *Server) getLicenceKey(w http.ResponseWriter, r *http.Request) error {
	k, err := s.osRegistry.LicenceKey(r.Context(), r.PathValue("os"), r.PathValue("release"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, k)
}

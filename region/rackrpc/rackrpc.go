package rackrpc

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/preseed"
	"github.com/rackplane/rackplane/schema"
)

// Machines is the machine lifecycle as rack requests use it.
type Machines interface {
	Get(ctx context.Context, id string) (rackplane.Machine, error)
	InstallReported(ctx context.Context, id, deploymentID string, success bool, message string, meta machine.Meta) (machine.Result, error)
}

// Server answers rack requests.
type Server struct {
	db       *postgres.DB
	machines Machines
	log      *slog.Logger
	now      func() time.Time

	mu     sync.Mutex
	secret []byte // of install status tokens, loaded on first use
}

// New returns a server.
func New(db *postgres.DB, machines Machines, log *slog.Logger) *Server {
	return &Server{db: db, machines: machines, log: log, now: time.Now}
}

// Register subscribes the handlers on srv.
func (s *Server) Register(srv *rpc.Server) error {
	if err := srv.Handle(events.RegionRPCSubject(events.MethodBootDecision), events.RegionQueue, s.checked("rpc.region.boot_decision.request", s.bootDecision)); err != nil {
		return err
	}
	if err := srv.Handle(events.RegionRPCSubject(events.MethodPreseed), events.RegionQueue, s.checked("rpc.region.preseed.request", s.preseed)); err != nil {
		return err
	}
	if err := srv.Handle(events.RegionRPCSubject(events.MethodSubnets), events.RegionQueue, s.checked("rpc.region.subnets.request", s.subnets)); err != nil {
		return err
	}
	return srv.Handle(events.RegionRPCSubject(events.MethodInstallStatus), events.RegionQueue, s.checked("rpc.region.install_status.request", s.installStatus))
}

// subnets gives the rack the request names the subnets it serves. The
// rack_id is the request's word: it is not checked against the NATS
// identity of the caller, so any client allowed on the region's rpc
// subjects (every rack) can read any rack's subnets. A subnet holds no
// secret, but binding the answer to the caller's identity is still to
// be done.
//
// The id is parsed and used in canonical form, as Service.List does: an
// empty or malformed one is refused, never read as "every rack" or
// answered with an empty list (the rack would drop its subnets). The
// request schema refuses those already; this does not rely on it.
func (s *Server) subnets(ctx context.Context, data []byte) (any, error) {
	var req events.SubnetsRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "subnets: %v", err)
	}
	rack, err := uuid.Parse(req.RackID)
	if err != nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "subnets: rack_id %q is not a UUID", req.RackID)
	}
	list, err := s.db.ListSubnets(ctx, rack.String())
	if err != nil {
		return nil, err
	}
	reply := events.SubnetsReply{Subnets: make([]events.SubnetSet, 0, len(list))}
	for _, sn := range list {
		reply.Subnets = append(reply.Subnets, events.SubnetSet{SubnetID: sn.ID, RackID: sn.RackID, Subnet: sn.Subnet})
	}
	return reply, nil
}

func (s *Server) checked(name string, h rpc.HandlerFunc) rpc.HandlerFunc {
	return func(ctx context.Context, data []byte) (any, error) {
		set, err := schema.Default()
		if err != nil {
			return nil, err
		}
		if err := set.ValidateJSON(name, data); err != nil {
			return nil, rackplane.Errorf(rackplane.EINVALID, "%s: %v", name, err)
		}
		return h(ctx, data)
	}
}

func (s *Server) bootDecision(ctx context.Context, data []byte) (any, error) {
	var req events.BootDecisionRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "boot_decision: %v", err)
	}
	d, err := s.db.BootDecision(ctx, req.MAC)
	if err != nil {
		return nil, err
	}
	return events.BootDecisionReply{Decision: d}, nil
}

type preseedRequest struct {
	RackID    string `json:"rack_id"`
	MachineID string `json:"machine_id"`
	Remote    string `json:"remote"`
	// Prefetch is a rack filling its cache: no installer fetched it.
	Prefetch bool `json:"prefetch"`
}

// PreseedReply is the answer to the preseed rpc.
type PreseedReply struct {
	Name    string `json:"name"`
	Version int64  `json:"version"`
	Content string `json:"content"`
}

// preseed renders the version the machine's deployment pinned — never a
// newer one — and records that it was served. The machine stays deploying
// until its installer reports on {{.URLs.Status}} (or the deployment
// watch gives up on it).
func (s *Server) preseed(ctx context.Context, data []byte) (any, error) {
	var req preseedRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "preseed: %v", err)
	}
	m, err := s.machines.Get(ctx, req.MachineID)
	if err != nil {
		return nil, err
	}
	if !machine.ServesPreseed(m) {
		return nil, rackplane.Errorf(rackplane.ENOTFOUND, "machine %s is not being deployed with a preseed", m.Hostname)
	}
	v, err := s.db.GetPreseedVersion(ctx, m.PreseedName, m.PreseedVersion)
	if err != nil {
		return nil, err
	}
	vars := preseed.Vars{}
	vars.Machine.ID, vars.Machine.Hostname, vars.Machine.Arch, vars.Machine.MACs = m.ID, m.Hostname, m.Arch, m.MACs
	if len(m.MACs) > 0 {
		vars.Machine.MAC = m.MACs[0]
	}
	vars.OS.Name, vars.OS.Release, vars.OS.Arch, vars.OS.Subarch, vars.OS.ImageVersion = m.OS, m.Release, m.Arch, m.Subarch, m.ImageVersionID
	if rk, err := s.db.GetRack(ctx, req.RackID); err == nil {
		vars.Rack.ID, vars.Rack.Name, vars.Rack.BootURL = rk.ID, rk.Name, rk.BootURL
		vars.URLs.Boot = rk.BootURL
		vars.URLs.Preseed = rk.BootURL + "/preseed/" + m.ID
		if m.DeploymentID != nil {
			token, err := s.statusToken(ctx, *m.DeploymentID)
			if err != nil {
				return nil, err
			}
			vars.URLs.Status = rk.BootURL + "/status/" + m.ID + "/" + token
		}
	}
	vars.Preseed.Name, vars.Preseed.Version = v.Name, v.Version
	if key, err := s.db.LicenceKeyFor(ctx, m.OS, m.Release); err == nil {
		vars.LicenceKey = key
	}
	content, err := preseed.Render(v.Name, v.Content, vars)
	if err != nil {
		return nil, err
	}
	reply := PreseedReply{Name: v.Name, Version: v.Version, Content: content}
	if req.Prefetch {
		// The event says an installer got its preseed; this is only the
		// rack keeping a copy for when the region is away.
		s.log.Debug("preseed prefetched", "machine_id", m.ID, "preseed", v.Name, "version", v.Version, "rack_id", req.RackID)
		return reply, nil
	}
	served, err := events.New(events.RegionSource, events.TypePreseedServed, events.MachineStreamName(m.ID), s.now(),
		events.PreseedServed{MachineID: m.ID, Name: v.Name, Version: v.Version, RackID: req.RackID, Remote: req.Remote})
	if err != nil {
		return nil, err
	}
	evs := []events.Event{served}
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := s.db.Emit(ctx, tx, events.MachineStreamName(m.ID), postgres.ExpectAny, evs...)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("preseed served", "machine_id", m.ID, "preseed", v.Name, "version", v.Version, "rack_id", req.RackID)
	return reply, nil
}

package rackrpc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/preseed"
	"github.com/rackplane/rackplane/region/secrets"
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
	keys     *secrets.Keyring
	log      *slog.Logger
	now      func() time.Time
	refused  *prometheus.CounterVec

	mu     sync.Mutex
	secret []byte // of install status tokens, loaded on first use
}

// New returns a server; keys opens the secrets a preseed is rendered
// with.
func New(db *postgres.DB, machines Machines, keys *secrets.Keyring, log *slog.Logger) *Server {
	return &Server{db: db, machines: machines, keys: keys, log: log, now: time.Now,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_rack_rpc_refused_total",
			Help: "Rack rpc calls refused as not the asking rack's business, by method and reason.",
		}, []string{"method", "reason"}),
	}
}

// Collectors returns the server's metrics, for the region's registry.
func (s *Server) Collectors() []prometheus.Collector { return []prometheus.Collector{s.refused} }

// deployRack returns the rack machine m deploys from: the one holding its
// image, which is its boot rack when it has one ("" when neither is known).
func deployRack(m rackplane.Machine) string {
	for _, id := range []*string{m.DeployRackID, m.BootRackID} {
		if id != nil && *id != "" {
			return *id
		}
	}
	return ""
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

// preseed renders the version the machine's deployment pinned — never a
// newer one — and records that it was served. The machine stays deploying
// until its installer reports on {{.URLs.Status}} (or the deployment
// watch gives up on it).
func (s *Server) preseed(ctx context.Context, data []byte) (any, error) {
	var req events.PreseedRequest
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
	if req.Prefetch {
		// A prefetch is the whole rendered preseed, secrets and all, for
		// no installer: only the rack the machine deploys from needs it.
		if want := deployRack(m); want != "" && want != req.RackID {
			s.refused.WithLabelValues(events.MethodPreseed, "not_the_machines_rack").Inc()
			s.log.Warn("preseed prefetch refused: not the machine's rack", "machine_id", m.ID, "rack_id", req.RackID, "machine_rack_id", want)
			return nil, rackplane.Errorf(rackplane.EFORBIDDEN, "machine %s deploys from another rack than %s", m.Hostname, req.RackID)
		}
	}
	v, err := s.db.GetPreseedVersion(ctx, m.PreseedName, m.PreseedVersion)
	if err != nil {
		return nil, err
	}
	var tokenSum string
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
			sum := sha256.Sum256([]byte(token))
			tokenSum = hex.EncodeToString(sum[:])
		}
	}
	vars.Preseed.Name, vars.Preseed.Version = v.Name, v.Version
	// The key goes only into this reply, to the asking rack's own
	// inbox; a release that takes none has none.
	switch key, err := s.db.LicenceKeyFor(ctx, s.keys, m.OS, m.Release); {
	case err == nil:
		vars.LicenceKey = key
	case rackplane.ErrorCode(err) != rackplane.ENOTFOUND:
		return nil, err
	}
	content, err := preseed.Render(v.Name, v.Content, vars)
	if err != nil {
		return nil, err
	}
	reply := events.PreseedReply{Name: v.Name, Version: v.Version, Content: content, StatusTokenSHA256: tokenSum}
	if req.Prefetch {
		// The event says an installer got its preseed; this is only the
		// rack keeping a copy for when the region is away. It is logged
		// all the same: secrets left the region.
		s.log.Info("preseed prefetched", "machine_id", m.ID, "preseed", v.Name, "version", v.Version, "rack_id", req.RackID)
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

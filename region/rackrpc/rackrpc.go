package rackrpc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
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
	AdoptBootRack(ctx context.Context, id, rackID string) (rackplane.Machine, error)
	InstallReported(ctx context.Context, id, deploymentID string, success bool, message string, meta machine.Meta) (machine.Result, error)
}

// Server answers rack requests.
type Server struct {
	js       jetstream.JetStream // creates racks' consumers (follow)
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
// with; js (nil: no follow rpc) creates the consumers racks read the
// region's events through.
func New(db *postgres.DB, machines Machines, keys *secrets.Keyring, js jetstream.JetStream, log *slog.Logger) *Server {
	return &Server{db: db, machines: machines, keys: keys, js: js, log: log, now: time.Now,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_rack_rpc_refused_total",
			Help: "Rack rpc calls refused, by method and reason: not_the_machines_rack (about a machine of another rack), not_the_current_deployment (a preseed for a deployment no longer in progress), wrong_token (an installer report without its deployment's status token), and the rest named in the log.",
		}, []string{"method", "reason"}),
	}
}

// Collectors returns the server's metrics, for the region's registry.
func (s *Server) Collectors() []prometheus.Collector { return []prometheus.Collector{s.refused} }

// Register subscribes the handlers on srv, each on its method's subject of
// every rack: the rack id in the subject a request came on is who asks.
func (s *Server) Register(srv *rpc.Server) error {
	handlers := []struct {
		method string
		h      rackHandler
	}{
		{events.MethodBootDecision, s.bootDecision},
		{events.MethodPreseed, s.preseed},
		{events.MethodSubnets, s.subnets},
		{events.MethodInstallStatus, s.installStatus},
		{events.MethodFollow, s.follow},
		{events.MethodCommissioningScripts, s.commissioningScripts},
	}
	for _, h := range handlers {
		if err := srv.Handle(events.RegionRPCWildcard(h.method), events.RegionQueue, s.asRack(h.method, h.h)); err != nil {
			return err
		}
	}
	return nil
}

// rackHandler answers rack rack's request.
type rackHandler func(ctx context.Context, rack string, data []byte) (any, error)

// asRack checks a request against its schema and hands it to h with the
// asking rack: the rack id of the subject, which NATS lets only that rack
// publish under. A body that names another rack is refused: a rack asks
// about its own business only.
func (s *Server) asRack(method string, h rackHandler) rpc.HandlerFunc {
	name := "rpc.region." + method + ".request"
	return func(ctx context.Context, data []byte) (any, error) {
		set, err := schema.Default()
		if err != nil {
			return nil, err
		}
		if err := set.ValidateJSON(name, data); err != nil {
			return nil, rackplane.Errorf(rackplane.EINVALID, "%s: %v", name, err)
		}
		rack, err := uuid.Parse(events.RackIDFromRegionRPCSubject(rpc.Subject(ctx)))
		if err != nil {
			s.refused.WithLabelValues(method, "no_rack_in_subject").Inc()
			return nil, rackplane.Errorf(rackplane.EINVALID, "%s: ask on rackplane.region.rpc.<your rack id>.%s", method, method)
		}
		var body struct {
			RackID *string `json:"rack_id"`
		}
		if json.Unmarshal(data, &body) == nil && body.RackID != nil && *body.RackID != rack.String() {
			s.refused.WithLabelValues(method, "rack_id_not_the_callers").Inc()
			s.log.Warn("rack rpc refused: body names another rack", "method", method, "rack_id", rack.String(), "body_rack_id", *body.RackID)
			return nil, rackplane.Errorf(rackplane.EFORBIDDEN, "%s: rack %s may ask about itself only, not rack %s", method, rack, *body.RackID)
		}
		res, err := h(ctx, rack.String(), data)
		// PostgreSQL away is "unavailable" to the rack (it keeps the
		// call and tries again), not an internal error.
		return res, postgres.Classify(err)
	}
}

// refuse counts and logs a request about another rack's business.
func (s *Server) refuse(method, reason, rack, machineID string, msg string, args ...any) error {
	s.refused.WithLabelValues(method, reason).Inc()
	s.log.Warn("rack rpc refused", "method", method, "reason", reason, "rack_id", rack, "machine_id", machineID)
	return rackplane.Errorf(rackplane.EFORBIDDEN, msg, args...)
}

// subnets gives the asking rack the subnets it serves.
func (s *Server) subnets(ctx context.Context, rack string, _ []byte) (any, error) {
	list, err := s.db.ListSubnets(ctx, rack)
	if err != nil {
		return nil, err
	}
	reply := events.SubnetsReply{Subnets: make([]events.SubnetSet, 0, len(list))}
	for _, sn := range list {
		reply.Subnets = append(reply.Subnets, events.SubnetSet{SubnetID: sn.ID, RackID: sn.RackID, Subnet: sn.Subnet})
	}
	return reply, nil
}

// bootDecision answers a rack that sees a MAC boot it has no decision
// for. A machine that has a rack is that rack's alone: another rack is
// told nothing about it (its kernel parameters and preseed URL are its
// deployment's), and boots it as unknown until an operator moves the
// machine (boot_rack_id). A machine without one is adopted by the rack
// that asks.
func (s *Server) bootDecision(ctx context.Context, rack string, data []byte) (any, error) {
	var req events.BootDecisionRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "boot_decision: %v", err)
	}
	d, err := s.db.BootDecision(ctx, req.MAC)
	if err != nil || d == nil {
		return events.BootDecisionReply{Decision: d}, err
	}
	owner := d.RackID
	if owner == "" && d.MachineID != "" {
		// A machine without a rack (or a decision made before decisions
		// named their rack): the rack that sees it boot becomes its rack,
		// so that the decisions to come reach it.
		m, err := s.machines.AdoptBootRack(ctx, d.MachineID, rack)
		if err != nil {
			return nil, err
		}
		if owner = machine.BootRack(m); owner == rack {
			if d, err = s.db.BootDecision(ctx, req.MAC); err != nil || d == nil {
				return events.BootDecisionReply{Decision: d}, err
			}
		}
	}
	if owner != "" && owner != rack {
		return nil, s.refuse(events.MethodBootDecision, "not_the_machines_rack", rack, d.MachineID,
			"MAC %s belongs to a machine of another rack; move the machine (boot_rack_id) for this rack to boot it", req.MAC)
	}
	return events.BootDecisionReply{Decision: d}, nil
}

// preseed renders the version the machine's deployment pinned — never a
// newer one — and records that it was served. The machine stays deploying
// until its installer reports on {{.URLs.Status}} (or the deployment
// watch gives up on it).
func (s *Server) preseed(ctx context.Context, rack string, data []byte) (any, error) {
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
	// The rendered preseed holds the deployment's secrets (its status
	// token, licence key, passwords): only the rack the machine deploys
	// from serves its installer, so only it gets it.
	if want := machine.BootRack(m); want != rack {
		return nil, s.refuse(events.MethodPreseed, "not_the_machines_rack", rack, m.ID,
			"machine %s deploys from another rack", m.Hostname)
	}
	// The rack checked the credential of deployment req.DeploymentID; it
	// is good only for the deployment in progress, whatever the rack
	// still has cached.
	if req.DeploymentID != *m.DeploymentID {
		return nil, s.refuse(events.MethodPreseed, "not_the_current_deployment", rack, m.ID,
			"the credential is of another deployment than machine %s's current one", m.Hostname)
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
	if rk, err := s.db.GetRack(ctx, rack); err == nil {
		vars.Rack.ID, vars.Rack.Name, vars.Rack.BootURL = rk.ID, rk.Name, rk.BootURL
		vars.URLs.Boot = rk.BootURL
		// The URL the installer fetched, with its credential, as the rack
		// says (only it can make one); a URL of another machine's is not
		// taken.
		vars.URLs.Preseed = rk.BootURL + "/preseed/" + m.ID
		if strings.HasPrefix(req.URL, vars.URLs.Preseed+"/") {
			vars.URLs.Preseed = req.URL
		}
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
		s.log.Info("preseed prefetched", "machine_id", m.ID, "preseed", v.Name, "version", v.Version, "rack_id", rack)
		return reply, nil
	}
	served, err := events.New(events.RegionSource, events.TypePreseedServed, events.MachineStreamName(m.ID), s.now(),
		events.PreseedServed{MachineID: m.ID, Name: v.Name, Version: v.Version, RackID: rack, Remote: req.Remote})
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
	s.log.Info("preseed served", "machine_id", m.ID, "preseed", v.Name, "version", v.Version, "rack_id", rack)
	return reply, nil
}

// commissioningScripts gives the rack that serves a commissioning
// machine's boot (any rack while the machine has none, as the follower
// takes its agent's outcome) the scripts its agent runs, for the
// machine's current commissioning only: a credential of an earlier
// operation the rack still honours opens nothing.
func (s *Server) commissioningScripts(ctx context.Context, rack string, data []byte) (any, error) {
	var req events.CommissioningScriptsRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "commissioning_scripts: %v", err)
	}
	m, err := s.machines.Get(ctx, req.MachineID)
	if err != nil {
		return nil, err
	}
	if boot := machine.BootRack(m); boot != "" && boot != rack {
		return nil, s.refuse(events.MethodCommissioningScripts, "not_the_machines_rack", rack, m.ID,
			"machine %s boots from another rack", m.Hostname)
	}
	if m.Status != events.MachineCommissioning || m.DeploymentID == nil || *m.DeploymentID != req.OperationID {
		return nil, s.refuse(events.MethodCommissioningScripts, "not_the_current_commissioning", rack, m.ID,
			"operation %s is not machine %s's commissioning in progress", req.OperationID, m.Hostname)
	}
	list, err := s.db.ListCommissioningScripts(ctx, true)
	if err != nil {
		return nil, err
	}
	if len(list) > events.MaxScripts {
		return nil, rackplane.Errorf(rackplane.EINVALID, "%d commissioning scripts, an agent runs at most %d: delete some", len(list), events.MaxScripts)
	}
	reply := events.CommissioningScriptsReply{Scripts: make([]events.CommissioningScript, 0, len(list))}
	total := 0
	for _, sc := range list {
		if total += len(sc.Content); total > events.MaxScriptsTotal {
			return nil, rackplane.Errorf(rackplane.EINVALID, "the commissioning scripts together are over %d bytes: shorten or delete some",
				events.MaxScriptsTotal)
		}
		reply.Scripts = append(reply.Scripts, events.CommissioningScript{Name: sc.Name, Content: sc.Content,
			TimeoutSeconds: sc.TimeoutSeconds, SHA256: sc.SHA256})
	}
	return reply, nil
}

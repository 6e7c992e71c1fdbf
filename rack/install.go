package rack

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/machinecred"
	"github.com/rackplane/rackplane/rack/preseedcache"
	"github.com/rackplane/rackplane/rack/reportqueue"
)

// openInstall opens what lets installs finish while the region is away:
// the sealed cache of deploying machines' preseeds, filled as deployments
// start, and the durable queue of calls (installers' reports) the region
// could not take.
func (r *Rack) openInstall(dataDir string) error {
	store, err := preseedcache.Open(preseedcache.Config{DataDir: dataDir}, r.log.With("service", "preseed-cache"), r.registry)
	if err != nil {
		return fmt.Errorf("preseed cache: %w", err)
	}
	r.preseeds, err = preseedcache.NewPrefetcher(store, r.prefetchPreseed, r.log.With("service", "preseed-cache"), r.registry)
	if err != nil {
		return fmt.Errorf("preseed cache: %w", err)
	}
	// Installers' reports carry their status tokens: sealed at rest
	// as the preseeds are, with the same key.
	r.reports, err = reportqueue.Open(reportqueue.Config{DataDir: dataDir, Sealer: store}, r.deliverQueued, r.log.With("service", "region-call-queue"), r.registry)
	if err != nil {
		return fmt.Errorf("region call queue: %w", err)
	}
	r.reportsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rackplane_install_reports_refused_total",
		Help: "Installers' reports the rack would not keep for the region while it was away, by reason: wrong_token (not the token of the machine's deployment), not_deploying (no cached preseed of a deployment on this rack: answered 503).",
	}, []string{"reason"})
	if err := r.registry.Register(r.reportsRefused); err != nil {
		return fmt.Errorf("install metrics: %w", err)
	}
	r.machineRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rackplane_machine_requests_refused_total",
		Help: "Requests to the machine-facing endpoints (preseed, agent, metadata) the rack refused, by endpoint and reason: no_credential (a URL without the deployment's credential), wrong_credential (not the credential of the machine's deployment or agent boot in progress), not_deploying (no deployment of the machine in progress on this rack), no_agent_boot and not_a_machine (no boot of the machine whose agent reports here), bad_path (a path the endpoint does not serve: 404); of the preseed endpoint also region_refused (the region serves the machine no preseed, its deployment ended before the rack heard: 403). All refusals of a credential are answered 403 alike, so that nobody learns which machines deploy or commission. The agent's endpoint also counts rate (429: past the machine's rate), too_large (413) and malformed (400) requests, and of its commissioning scripts region_refused (403: the region knows no commissioning of this boot in progress), region_away (503: the region cannot be reached) and region_error (502: the region could not give them); of a deploy boot's task no_disk_image (409: the rack has not the disk image, or not usable). The metadata service counts not_deploying and wrong_credential (403), bad_path (404), method (405), region_refused (403), too_large, malformed and other_instance (a phone-home of another deployment's system: 409).",
	}, []string{"endpoint", "reason"})
	if err := r.registry.Register(r.machineRefused); err != nil {
		return fmt.Errorf("install metrics: %w", err)
	}
	if r.creds, err = machinecred.Open(dataDir); err != nil {
		return err
	}
	r.preseedStore = store
	r.fetchesQueued = map[string]string{}
	return nil
}

func (r *Rack) askPreseed(ctx context.Context, req events.PreseedRequest) (events.PreseedReply, error) {
	var out events.PreseedReply
	err := r.callRegion(ctx, events.MethodPreseed, req, &out)
	return out, err
}

// askCommissioningScripts asks the region for the scripts the agent of a
// machine commissioning from this rack runs.
func (r *Rack) askCommissioningScripts(ctx context.Context, req events.CommissioningScriptsRequest) (events.CommissioningScriptsReply, error) {
	var out events.CommissioningScriptsReply
	err := r.callRegion(ctx, events.MethodCommissioningScripts, req, &out)
	return out, err
}

// callRegion makes an rpc call on the region, or fails at once while NATS
// is away. The NATS client would otherwise keep the request in its
// reconnect buffer and send it on reconnecting, long after the rack gave
// up on it and served the installer from its cache and queue: the region
// would take that call and then the queued one.
func (r *Rack) callRegion(ctx context.Context, method string, req, out any) error {
	if !r.nc.IsConnected() {
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "not connected to NATS: the region cannot be asked")
	}
	return rpc.Call(ctx, r.nc, events.RegionRPCSubject(r.id, method), req, out)
}

// prefetchPreseed fills the cache: the region records no fetch for it.
func (r *Rack) prefetchPreseed(ctx context.Context, machineID string) (preseedcache.Preseed, error) {
	// The deployment in progress now: should it have changed since the
	// decision that asked for this fetch, the region serves the newer one
	// (and refuses one no longer in progress).
	d, _ := r.decisions.Deployment(machineID)
	out, err := r.askPreseed(ctx, events.PreseedRequest{RackID: r.id, MachineID: machineID, DeploymentID: d.DeploymentID,
		URL: bootconfig.PreseedURL(d, r.creds.For), Prefetch: true})
	return cachedPreseed(machineID, out), err
}

func cachedPreseed(machineID string, out events.PreseedReply) preseedcache.Preseed {
	return preseedcache.Preseed{MachineID: machineID, Name: out.Name, Version: out.Version, Content: out.Content,
		StatusTokenSHA256: out.StatusTokenSHA256}
}

// deliverQueued makes a queued call.
func (r *Rack) deliverQueued(ctx context.Context, method string, request json.RawMessage) error {
	return r.callRegion(ctx, method, request, nil)
}

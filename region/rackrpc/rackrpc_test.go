package rackrpc_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/machine/machinetest"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/preseed"
	"github.com/rackplane/rackplane/region/rackrpc"
	"github.com/rackplane/rackplane/region/regiontest"
	"github.com/rackplane/rackplane/region/subnet"
)

// What a rack asks the region while a machine installs, over a real NATS
// server and database: the boot decision, the pinned preseed (with the
// status URL in it) and the installer's report with that URL's token.
func TestInstallerConversation(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	db := machinetest.Database(t)
	machines := machine.NewService(db, nil, log)
	preseeds := preseed.NewService(db, nil, log)
	ns := natsserver.StartTest(t)
	srv := rpc.NewServer(ns.Connect(), "region", log, 4, 5*time.Second)
	t.Cleanup(srv.Close)
	if err := rackrpc.New(db, machines, regiontest.Keys(t), nil, log).Register(srv); err != nil {
		t.Fatal(err)
	}
	nc := ns.Connect()
	// A rack asks as itself: under its id in the subject, which NATS
	// permissions let only it publish under.
	call := func(method string, req map[string]any, out any) error {
		rack, _ := req["rack_id"].(string)
		return rpc.Call(ctx, nc, events.RegionRPCSubject(rack, method), req, out)
	}

	if err := preseeds.Create(ctx, "default", "#cloud-config\nhostname: {{.Machine.Hostname}}\nstatus: {{.URLs.Status}}\n", "", nil, "", preseed.Meta{Actor: "tester"}); err != nil {
		t.Fatal(err)
	}
	m, err := machines.Create(ctx, machine.CreateRequest{Hostname: "node1", MACs: []string{"52:54:00:00:05:01"}}, machine.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	asRack := map[string]any{"rack_id": machinetest.RackID, "machine_id": m.ID}

	// Before a deployment there is nothing to serve.
	if err := call("preseed", asRack, nil); rackplane.ErrorCode(err) != rackplane.ENOTFOUND {
		t.Fatalf("preseed of a ready machine: %v", err)
	}
	res, err := machines.Deploy(ctx, m.ID, machine.DeployRequest{OS: "ubuntu", Release: "noble"}, machine.Meta{})
	if err != nil {
		t.Fatal(err)
	}

	var bd events.BootDecisionReply
	if err := call("boot_decision", map[string]any{"rack_id": machinetest.RackID, "mac": "52:54:00:00:05:01"}, &bd); err != nil ||
		bd.Decision == nil || bd.Decision.Purpose != events.BootPurposeInstall || bd.Decision.PreseedURL != machinetest.BootURL+"/preseed/"+m.ID ||
		res.After.DeploymentID == nil || bd.Decision.DeploymentID != *res.After.DeploymentID {
		t.Fatalf("boot decision: %+v %v, want install naming deployment %v", bd.Decision, err, res.After.DeploymentID)
	}
	// The rack asks for the deployment whose credential the installer
	// showed it; only the one in progress is served.
	asRack["deployment_id"] = bd.Decision.DeploymentID
	const otherDeployment = "0190f0e0-0000-7000-8000-0000000000dd"
	for _, req := range []map[string]any{
		{"rack_id": machinetest.RackID, "machine_id": m.ID, "deployment_id": otherDeployment},
		{"rack_id": machinetest.RackID, "machine_id": m.ID, "deployment_id": otherDeployment, "prefetch": true},
		{"rack_id": machinetest.RackID, "machine_id": m.ID},
	} {
		if err := call("preseed", req, nil); rackplane.ErrorCode(err) != rackplane.EFORBIDDEN {
			t.Fatalf("preseed %v: %v, want refused", req, err)
		}
	}

	served := func() int {
		t.Helper()
		evs, _, err := db.ReadLastEvents(ctx, 100, postgres.ReadFilter{Stream: events.MachineStreamName(m.ID), Types: []string{events.TypePreseedServed}})
		if err != nil {
			t.Fatal(err)
		}
		return len(evs)
	}
	// A rack filling its cache as the deployment starts gets the preseed
	// the installer will, and no installer fetch is recorded.
	var pre events.PreseedReply
	if err := call("preseed", map[string]any{"rack_id": machinetest.RackID, "machine_id": m.ID, "deployment_id": bd.Decision.DeploymentID, "prefetch": true}, &pre); err != nil || pre.Version != res.After.PreseedVersion {
		t.Fatalf("prefetch: %+v %v", pre, err)
	}
	if n := served(); n != 0 {
		t.Fatalf("a prefetch recorded %d preseed_served", n)
	}
	// Another rack gets no copy of the machine's secrets, nor its boot
	// decision, whether it asks as itself or names the machine's rack in
	// the body.
	const otherRack = "0190f0e0-0000-7000-8000-0000000000bb"
	for _, tt := range []struct {
		name, method string
		req          map[string]any
	}{
		{"prefetch", "preseed", map[string]any{"rack_id": otherRack, "machine_id": m.ID, "prefetch": true}},
		{"fetch", "preseed", map[string]any{"rack_id": otherRack, "machine_id": m.ID}},
		{"boot decision", "boot_decision", map[string]any{"rack_id": otherRack, "mac": "52:54:00:00:05:01"}},
		{"report", "install_status", map[string]any{"rack_id": otherRack, "machine_id": m.ID, "token": "x", "result": "failure"}},
	} {
		if err := call(tt.method, tt.req, nil); rackplane.ErrorCode(err) != rackplane.EFORBIDDEN {
			t.Fatalf("%s by a rack the machine does not deploy from: %v", tt.name, err)
		}
		if err := rpc.Call(ctx, nc, events.RegionRPCSubject(otherRack, tt.method), withRack(tt.req, machinetest.RackID), nil); rackplane.ErrorCode(err) != rackplane.EFORBIDDEN {
			t.Fatalf("%s by another rack naming the machine's in the body: %v", tt.name, err)
		}
	}
	if n := served(); n != 0 {
		t.Fatalf("refused fetches recorded %d preseed_served", n)
	}
	var p events.PreseedReply
	if err := call("preseed", asRack, &p); err != nil || p.Name != "default" || p.Version != res.After.PreseedVersion {
		t.Fatalf("preseed: %+v %v", p, err)
	}
	if p.Content != pre.Content {
		t.Fatalf("the installer got\n%s\nthe rack cached\n%s", p.Content, pre.Content)
	}
	if n := served(); n != 1 {
		t.Fatalf("an installer's fetch recorded %d preseed_served, want 1", n)
	}
	tokenRE := regexp.MustCompile(`status: ` + regexp.QuoteMeta(machinetest.BootURL+"/status/"+m.ID+"/") + `(\S+)`)
	sm := tokenRE.FindStringSubmatch(p.Content)
	if sm == nil {
		t.Fatalf("the preseed has no status URL of this machine:\n%s", p.Content)
	}
	token := sm[1]
	// The rack checks reports it keeps while the region is away against
	// the token's hash.
	if sum := sha256.Sum256([]byte(token)); pre.StatusTokenSHA256 != hex.EncodeToString(sum[:]) || p.StatusTokenSHA256 != pre.StatusTokenSHA256 {
		t.Fatalf("status token hash %q (prefetch) %q (fetch), want the SHA-256 of %q", pre.StatusTokenSHA256, p.StatusTokenSHA256, token)
	}

	report := func(tok, result string) (events.InstallStatusReply, error) {
		var r events.InstallStatusReply
		err := call("install_status", map[string]any{"rack_id": machinetest.RackID, "machine_id": m.ID, "token": tok, "result": result}, &r)
		return r, err
	}
	if _, err := report("not-the-token", "success"); rackplane.ErrorCode(err) != rackplane.EFORBIDDEN {
		t.Fatalf("a report with a wrong token: %v", err)
	}
	if _, err := report(token, "maybe"); rackplane.ErrorCode(err) != rackplane.EINVALID {
		t.Fatalf("a report that is not success or failure: %v", err)
	}
	if r, err := report(token, "success"); err != nil || !r.Changed || r.Status != events.MachineDeployed {
		t.Fatalf("the report: %+v %v", r, err)
	}
	if r, err := report(token, "success"); err != nil || r.Changed || r.Status != events.MachineDeployed {
		t.Fatalf("the report again: %+v %v", r, err)
	}
	// The token was spent: a report saying otherwise changes nothing.
	if _, err := report(token, "failure"); rackplane.ErrorCode(err) != rackplane.ECONFLICT {
		t.Fatalf("another report with the spent token: %v", err)
	}
	// The deployment is over: its preseed, secrets and all, goes to
	// nobody, credential or not.
	if err := call("preseed", asRack, nil); rackplane.ErrorCode(err) != rackplane.ENOTFOUND {
		t.Fatalf("preseed of a deployed machine: %v", err)
	}

	// The token was the deployment's: after a release and a new
	// deployment it is worth nothing.
	if _, err := machines.Release(ctx, m.ID, machine.ReleaseRequest{}, machine.Meta{}); err != nil {
		t.Fatal(err)
	}
	if _, err := machines.Deploy(ctx, m.ID, machine.DeployRequest{OS: "ubuntu", Release: "noble"}, machine.Meta{}); err != nil {
		t.Fatal(err)
	}
	if _, err := report(token, "failure"); rackplane.ErrorCode(err) != rackplane.EFORBIDDEN {
		t.Fatalf("the old deployment's token on the new one: %v", err)
	}
	if got, _ := machines.Get(ctx, m.ID); got.Status != events.MachineDeploying {
		t.Fatalf("after a refused report the machine is %s", got.Status)
	}
}

// TestSubnetsOfRack: a rack asking for its subnets gets them and no
// other rack's, whatever rack its body names; a request whose rack_id is
// not a UUID is refused as invalid, never answered with an empty list (the
// rack would drop every subnet it serves) nor with every rack's.
func TestSubnetsOfRack(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	db := machinetest.Database(t)
	rack, cidr := machinetest.RackID, netip.MustParsePrefix("10.40.0.0/24")
	sn, err := subnet.NewService(db, nil, log).Create(ctx, subnet.Fields{RackID: &rack, CIDR: &cidr}, subnet.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	// Another rack's subnet, which no answer to the first rack has.
	other := "0190f0e0-0000-7000-8000-0000000000bb"
	reg, _ := events.New(events.RackSource(other), events.TypeRackRegistered, events.RackStreamName(other), time.Now(),
		events.RackRegistered{Name: "r2", Version: "test", StartedAt: time.Now()})
	if err := db.InTx(ctx, func(tx pgx.Tx) error { _, err := db.AppendAny(ctx, tx, []events.Event{reg}); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := subnet.NewService(db, nil, log).Create(ctx, subnet.Fields{RackID: &other, CIDR: &cidr}, subnet.Meta{}); err != nil {
		t.Fatal(err)
	}
	ns := natsserver.StartTest(t)
	srv := rpc.NewServer(ns.Connect(), "region", log, 4, 5*time.Second)
	t.Cleanup(srv.Close)
	if err := rackrpc.New(db, machine.NewService(db, nil, log), regiontest.Keys(t), nil, log).Register(srv); err != nil {
		t.Fatal(err)
	}
	nc := ns.Connect()
	for _, tt := range []struct {
		name, asker, rackID string
		code                string // error code; "" for an answer
		subnets             []string
	}{
		{"its own", rack, rack, "", []string{sn.ID}},
		{"a rack with none", "0190f0e0-0000-7000-8000-0000000000cc", "0190f0e0-0000-7000-8000-0000000000cc", "", nil},
		{"another rack's", other, rack, rackplane.EFORBIDDEN, nil},
		// The schema takes UUIDs in canonical form only.
		{"upper case", rack, strings.ToUpper(rack), rackplane.EINVALID, nil},
		{"empty", rack, "", rackplane.EINVALID, nil},
		{"not a UUID", rack, "rack-a", rackplane.EINVALID, nil},
		{"no rack in the subject", "rack-a", "rack-a", rackplane.EINVALID, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var reply events.SubnetsReply
			err := rpc.Call(ctx, nc, events.RegionRPCSubject(tt.asker, events.MethodSubnets), map[string]string{"rack_id": tt.rackID}, &reply)
			if rackplane.ErrorCode(err) != tt.code || tt.code != "" && err == nil {
				t.Fatalf("error %v, want code %q", err, tt.code)
			}
			var got []string
			for _, s := range reply.Subnets {
				got = append(got, s.SubnetID)
			}
			if !slices.Equal(got, tt.subnets) {
				t.Fatalf("subnets %v, want %v", got, tt.subnets)
			}
		})
	}
}

// withRack returns a copy of req naming rack as the asker.
func withRack(req map[string]any, rack string) map[string]any {
	out := make(map[string]any, len(req))
	for k, v := range req {
		out[k] = v
	}
	out["rack_id"] = rack
	return out
}

// TestFirstRackToAskAdoptsTheMachine: a machine made without a rack is
// adopted by the rack that first asks for its boot decision (it boots on
// that rack's network), whose decisions then name that rack; another rack
// asking after is refused.
func TestFirstRackToAskAdoptsTheMachine(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	db := machinetest.Database(t)
	machines := machine.NewService(db, nil, log)
	ns := natsserver.StartTest(t)
	srv := rpc.NewServer(ns.Connect(), "region", log, 4, 5*time.Second)
	t.Cleanup(srv.Close)
	if err := rackrpc.New(db, machines, regiontest.Keys(t), nil, log).Register(srv); err != nil {
		t.Fatal(err)
	}
	nc := ns.Connect()
	const mac = "52:54:00:00:07:01"
	m, err := machines.Create(ctx, machine.CreateRequest{Hostname: "roamer", MACs: []string{mac}}, machine.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	ask := func(rack string) (events.BootDecisionReply, error) {
		var r events.BootDecisionReply
		err := rpc.Call(ctx, nc, events.RegionRPCSubject(rack, events.MethodBootDecision), map[string]any{"rack_id": rack, "mac": mac}, &r)
		return r, err
	}
	r, err := ask(machinetest.RackID)
	if err != nil || r.Decision == nil || r.Decision.RackID != machinetest.RackID {
		t.Fatalf("first ask: %+v %v", r.Decision, err)
	}
	got, err := machines.Get(ctx, m.ID)
	if err != nil || got.BootRackID == nil || *got.BootRackID != machinetest.RackID {
		t.Fatalf("machine after the first ask: %+v %v", got.BootRackID, err)
	}
	if _, err := ask("0190f0e0-0000-7000-8000-0000000000bb"); rackplane.ErrorCode(err) != rackplane.EFORBIDDEN {
		t.Fatalf("another rack asking after: %v", err)
	}
}

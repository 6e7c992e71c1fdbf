package rackrpc_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"regexp"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/machine/machinetest"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/preseed"
	"github.com/rackplane/rackplane/region/rackrpc"
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
	if err := rackrpc.New(db, machines, log).Register(srv); err != nil {
		t.Fatal(err)
	}
	nc := ns.Connect()
	call := func(method string, req, out any) error {
		return rpc.Call(ctx, nc, events.RegionRPCSubject(method), req, out)
	}

	if err := preseeds.Create(ctx, "default", "#cloud-config\nhostname: {{.Machine.Hostname}}\nstatus: {{.URLs.Status}}\n", nil, "", preseed.Meta{Actor: "tester"}); err != nil {
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
		bd.Decision == nil || bd.Decision.Purpose != events.BootPurposeInstall || bd.Decision.PreseedURL != machinetest.BootURL+"/preseed/"+m.ID {
		t.Fatalf("boot decision: %+v %v", bd.Decision, err)
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
	if err := call("preseed", map[string]any{"rack_id": machinetest.RackID, "machine_id": m.ID, "prefetch": true}, &pre); err != nil || pre.Version != res.After.PreseedVersion {
		t.Fatalf("prefetch: %+v %v", pre, err)
	}
	if n := served(); n != 0 {
		t.Fatalf("a prefetch recorded %d preseed_served", n)
	}
	// Another rack gets no copy of the machine's secrets.
	const otherRack = "0190f0e0-0000-7000-8000-0000000000bb"
	if err := call("preseed", map[string]any{"rack_id": otherRack, "machine_id": m.ID, "prefetch": true}, nil); rackplane.ErrorCode(err) != rackplane.EFORBIDDEN {
		t.Fatalf("a prefetch by a rack the machine does not deploy from: %v", err)
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

	// The token was the deployment's: after a release and a new
	// deployment it is worth nothing.
	if _, err := machines.Release(ctx, m.ID, machine.Meta{}); err != nil {
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

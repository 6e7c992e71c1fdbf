package storage

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/rpc"
)

// spyProvider makes a provider whose every file, including ones that are
// not actions, leaves a mark when it runs.
func spyProvider(t *testing.T, dir string) {
	mark := `touch "$EXTP_DIR/ran.$(basename "$0")"`
	scripts := map[string]string{}
	for _, a := range Actions {
		scripts[string(a)] = mark
	}
	scripts["attach"] = mark + "; echo; echo nbd://storage.example/vol"
	for _, extra := range []string{"snapshot", "open", "close", "evil", "CREATE", "run"} {
		scripts[extra] = mark
	}
	writeProvider(t, dir, "dir where marks go\n", scripts)
}

func TestRPCRunsOnlyKnownActions(t *testing.T) {
	ns := natsserver.StartTest(t)
	nc := ns.Connect()
	search := t.TempDir()
	spyProvider(t, filepath.Join(search, "spy"))
	marks := t.TempDir()
	m, pub := newManager(t, Config{SearchPath: []string{search}})
	srv := rpc.NewServer(nc, testRack, slog.New(slog.NewTextHandler(io.Discard, nil)), 4, 5*time.Second)
	t.Cleanup(srv.Close)
	if err := m.RegisterRPC(srv, testRack); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterRPC(srv, "0190a3c2-1111-7000-8000-00000000ffff"); rackplane.ErrorCode(err) != rackplane.EINVALID {
		t.Errorf("registering for another rack: %v", err)
	}
	ctx := context.Background()
	id := newVolumeID(t)
	body := func(extra map[string]any) map[string]any {
		b := map[string]any{"volume_id": id, "machine": "m1", "provider": "spy", "size_mib": 1,
			"parameters": map[string]string{"dir": marks}}
		for k, v := range extra {
			b[k] = v
		}
		return b
	}
	cases := []struct {
		name   string
		method string
		body   any
		code   string
	}{
		{"unknown method", "storage.evil", body(nil), rackplane.EUNAVAILABLE},
		{"a script that is no action", "storage.run", body(nil), rackplane.EUNAVAILABLE},
		{"upper case", "storage.CREATE", body(nil), rackplane.EUNAVAILABLE},
		{"optional action upper case", "storage.SNAPSHOT", body(nil), rackplane.EUNAVAILABLE},
		{"nested", "storage.create.evil", body(nil), rackplane.EUNAVAILABLE},
		{"nested optional", "storage.open.evil", body(nil), rackplane.EUNAVAILABLE},
		{"script in snapshot name", "storage.snapshot", body(map[string]any{"snapshot_name": "../evil"}), rackplane.EINVALID},
		{"shell in snapshot name", "storage.snapshot", body(map[string]any{"snapshot_name": "$(touch x)"}), rackplane.EINVALID},
		{"action in snapshot body", "storage.snapshot", body(map[string]any{"snapshot_name": "s1", "action": "evil"}), rackplane.EINVALID},
		{"action in body", "storage.create", body(map[string]any{"action": "evil"}), rackplane.EINVALID},
		{"script in body", "storage.verify", body(map[string]any{"script": "../evil"}), rackplane.EINVALID},
		{"not an object", "storage.create", []string{"evil"}, rackplane.EINVALID},
		{"bad volume id", "storage.create", map[string]any{"volume_id": "../../etc", "machine": "m", "provider": "spy"}, rackplane.EINVALID},
		{"provider path", "storage.create", body(map[string]any{"provider": "../spy"}), rackplane.EINVALID},
		{"parameter smuggling", "storage.create", body(map[string]any{"parameters": map[string]string{"dir": marks, "PATH": "/tmp"}}), rackplane.EINVALID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out json.RawMessage
			err := rpc.Call(ctx, nc, events.RackRPCSubject(testRack, tc.method), tc.body, &out)
			if c := rackplane.ErrorCode(err); c != tc.code {
				t.Fatalf("code %q (%v), want %s", c, err, tc.code)
			}
		})
	}
	for _, name := range []string{"evil", "run", "CREATE", "Snapshot", "../evil", "create/../evil", "open/../evil", "close ", "", "create\x00", "providers"} {
		if _, err := m.Do(ctx, name, Request{VolumeID: id, Machine: "m1", Provider: "spy", SizeMiB: 1}); rackplane.ErrorCode(err) != rackplane.EINVALID {
			t.Errorf("Do(%q): %v, want invalid", name, err)
		}
	}
	if left, _ := os.ReadDir(marks); len(left) != 0 {
		t.Fatalf("something ran: %v", left)
	}
	// Only the undeclared parameter got as far as the volume's record; it
	// is recorded as refused.
	for _, d := range pub.actions(t) {
		if d.OK || d.Action != "create" || d.ErrorCode != rackplane.EINVALID {
			t.Errorf("event for a refused request: %+v", d)
		}
	}

	// The same provider answers the known actions over rpc.
	var rec Record
	if err := rpc.Call(ctx, nc, events.RackRPCSubject(testRack, "storage.create"), body(nil), &rec); err != nil {
		t.Fatalf("create over rpc: %v", err)
	}
	if rec.State != events.VolumeStateCreated || rec.Name != VolumeName(id, "m1") {
		t.Errorf("record %+v", rec)
	}
	if err := rpc.Call(ctx, nc, events.RackRPCSubject(testRack, "storage.attach"), map[string]string{"volume_id": id}, &rec); err != nil {
		t.Fatalf("attach over rpc: %v", err)
	}
	if rec.Device != "" || len(rec.URIs) != 1 || rec.URIs[0] != "nbd://storage.example/vol" {
		t.Errorf("attach by URI only: %+v", rec)
	}
	// The optional actions are methods too, and run their own script.
	optional := []struct {
		method string
		body   map[string]any
	}{
		{"storage.snapshot", map[string]any{"volume_id": id, "snapshot_name": "s1"}},
		{"storage.open", map[string]any{"volume_id": id, "exclusive": true}},
		{"storage.close", map[string]any{"volume_id": id}},
	}
	for _, o := range optional {
		rec = Record{}
		if err := rpc.Call(ctx, nc, events.RackRPCSubject(testRack, o.method), o.body, &rec); err != nil {
			t.Fatalf("%s over rpc: %v", o.method, err)
		}
	}
	if len(rec.Snapshots) != 1 || rec.Snapshots[0].Name != "s1" || rec.Open {
		t.Errorf("record after snapshot, open, close: %+v", rec)
	}
	var ran []string
	left, _ := os.ReadDir(marks)
	for _, e := range left {
		ran = append(ran, e.Name())
	}
	if want := "ran.attach ran.close ran.create ran.open ran.snapshot"; strings.Join(ran, " ") != want {
		t.Errorf("scripts that ran: %v, want %s", ran, want)
	}
	var raw json.RawMessage
	if err := rpc.Call(ctx, nc, events.RackRPCSubject(testRack, MethodProviders), struct{}{}, &raw); err != nil {
		t.Fatal(err)
	}
	if err := pub.set.ValidateJSON(events.StorageRPCSchema(MethodProviders, events.PartReply), raw); err != nil {
		t.Errorf("providers reply breaks its schema: %v\n%s", err, raw)
	}
	var ps []Provider
	if err := json.Unmarshal(raw, &ps); err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || !ps[0].Valid || ps[0].Name != "spy" || len(ps[0].Optional) != 3 {
		t.Errorf("providers over rpc: %+v", ps)
	}
	// A failure over rpc carries the output tail too.
	err := rpc.Call(ctx, nc, events.RackRPCSubject(testRack, "storage.grow"), map[string]any{"volume_id": id, "new_size_mib": 1}, &rec)
	if rackplane.ErrorCode(err) != rackplane.EINVALID {
		t.Errorf("grow to the same size: %v", err)
	}
}

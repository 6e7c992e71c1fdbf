package storage

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// TestOptionalActionMissing asks a provider for the optional actions it
// lacks: it is valid all the same, nothing runs, and the refusal is on
// record and published like any failure of the action.
func TestOptionalActionMissing(t *testing.T) {
	search := t.TempDir()
	mark := `touch "$EXTP_DIR/ran.$(basename "$0")"`
	scripts := map[string]string{}
	for _, a := range RequiredActions {
		scripts[string(a)] = mark
	}
	scripts["attach"] = mark + "; echo; echo nbd://storage.example/vol"
	writeProvider(t, filepath.Join(search, "plain"), "dir where marks go\n", scripts)
	m, pub := newManager(t, Config{SearchPath: []string{search}})
	if ps := m.Providers(); len(ps) != 1 || !ps[0].Valid || len(ps[0].Optional) != 0 {
		t.Fatalf("providers %+v", ps)
	}
	marks := t.TempDir()
	id := newVolumeID(t)
	ctx := context.Background()
	if _, err := m.Do(ctx, "create", Request{VolumeID: id, Machine: "m1", Provider: "plain", SizeMiB: 4, Parameters: map[string]string{"dir": marks}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Do(ctx, "attach", Request{VolumeID: id}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ran.create", "ran.attach"} {
		if err := os.Remove(filepath.Join(marks, f)); err != nil {
			t.Fatal(err)
		}
	}
	logPath := filepath.Join(m.cfg.DataDir, "storage", "logs", id+".log")
	logBefore, _ := os.ReadFile(logPath)

	reqs := map[Action]Request{
		ActionSnapshot: {VolumeID: id, SnapshotName: "s1"},
		ActionOpen:     {VolumeID: id, Exclusive: true},
		ActionClose:    {VolumeID: id},
	}
	for _, a := range OptionalActions {
		_, err := m.Do(ctx, string(a), reqs[a])
		msg := rackplane.ErrorMessage(err)
		if rackplane.ErrorCode(err) != rackplane.EPRECONDITION || !strings.Contains(msg, "storage provider plain has no "+string(a)+" script") {
			t.Errorf("%s: %v, want precondition_failed naming the provider and the script", a, err)
		}
		rec, _, _ := m.Record(id)
		if rec.LastAction != string(a) || rec.LastOK || rec.LastError != msg || rec.State != events.VolumeStateAttached || rec.Open || len(rec.Snapshots) != 0 {
			t.Errorf("%s: record %+v", a, rec)
		}
		evs := pub.actions(t)
		last := evs[len(evs)-1]
		if last.Action != string(a) || last.OK || last.ErrorCode != rackplane.EPRECONDITION || last.Error != msg || last.ExitCode != nil {
			t.Errorf("%s: event %+v", a, last)
		}
		if (last.SnapshotName == "s1") != (a == ActionSnapshot) {
			t.Errorf("%s: event snapshot name %q", a, last.SnapshotName)
		}
	}
	if left, _ := os.ReadDir(marks); len(left) != 0 {
		t.Errorf("something ran: %v", left)
	}
	if logAfter, _ := os.ReadFile(logPath); !bytes.Equal(logBefore, logAfter) {
		t.Errorf("the volume log has a run:\n%s", logAfter[len(logBefore):])
	}
}

// TestOptionalActionRules checks snapshot, open and close against the
// volume's state and the request: a refusal runs nothing, and the
// malformed ones are refused before the volume's record is touched.
func TestOptionalActionRules(t *testing.T) {
	cases := []struct {
		name   string
		setup  []string // actions run first, with the plain request
		action string
		req    func(r *Request)
		code   string
		says   string
		event  bool // the refusal is on record and published
	}{
		{"snapshot without a name", []string{"create"}, "snapshot", nil, rackplane.EINVALID, "snapshot needs snapshot_name", true},
		{"snapshot of a volume the rack did not create", nil, "snapshot", func(r *Request) { r.SnapshotName = "s" }, rackplane.ECONFLICT, "not created through this rack", true},
		{"snapshot of a removed volume", []string{"create", "remove"}, "snapshot", func(r *Request) { r.SnapshotName = "s" }, rackplane.ECONFLICT, "was removed", true},
		{"snapshot name on attach", []string{"create"}, "attach", func(r *Request) { r.SnapshotName = "s" }, rackplane.EINVALID, "snapshot_name is for snapshot only", true},
		{"exclusive on close", []string{"create", "attach", "open"}, "close", func(r *Request) { r.Exclusive = true }, rackplane.EINVALID, "exclusive is for open only", true},
		{"open before attach", []string{"create"}, "open", nil, rackplane.ECONFLICT, "attach it before opening it", true},
		{"close of a detached volume", []string{"create", "attach", "detach"}, "close", nil, rackplane.ECONFLICT, "nothing to close", true},
		{"detach of an open volume", []string{"create", "attach", "open"}, "detach", nil, rackplane.ECONFLICT, "is open; close it first", true},
		{"remove of an open volume", []string{"create", "attach", "open"}, "remove", nil, rackplane.ECONFLICT, "is open; close it first", true},
		{"snapshot name with a slash", []string{"create"}, "snapshot", func(r *Request) { r.SnapshotName = "a/b" }, rackplane.EINVALID, "snapshot_name", false},
		{"snapshot name like an option", []string{"create"}, "snapshot", func(r *Request) { r.SnapshotName = "-rf" }, rackplane.EINVALID, "snapshot_name", false},
		{"hidden snapshot name", []string{"create"}, "snapshot", func(r *Request) { r.SnapshotName = ".s" }, rackplane.EINVALID, "snapshot_name", false},
		{"snapshot name too long", []string{"create"}, "snapshot", func(r *Request) { r.SnapshotName = strings.Repeat("s", 65) }, rackplane.EINVALID, "snapshot_name", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			search := t.TempDir()
			spyProvider(t, filepath.Join(search, "spy"))
			marks := t.TempDir()
			m, pub := newManager(t, Config{SearchPath: []string{search}})
			id := newVolumeID(t)
			ctx := context.Background()
			first := Request{VolumeID: id, Machine: "m1", Provider: "spy", SizeMiB: 2, Parameters: map[string]string{"dir": marks}}
			for i, a := range tc.setup {
				req := Request{VolumeID: id}
				if i == 0 {
					req = first
				}
				if _, err := m.Do(ctx, a, req); err != nil {
					t.Fatalf("%s: %v", a, err)
				}
				if err := os.Remove(filepath.Join(marks, "ran."+a)); err != nil {
					t.Fatalf("%s ran no script: %v", a, err)
				}
			}
			req := Request{VolumeID: id}
			if len(tc.setup) == 0 {
				req = first
			}
			if tc.req != nil {
				tc.req(&req)
			}
			before := len(pub.actions(t))
			recBefore, _, _ := m.Record(id)
			_, err := m.Do(ctx, tc.action, req)
			if rackplane.ErrorCode(err) != tc.code || !strings.Contains(rackplane.ErrorMessage(err), tc.says) {
				t.Fatalf("%v, want %s saying %q", err, tc.code, tc.says)
			}
			if left, _ := os.ReadDir(marks); len(left) != 0 {
				t.Errorf("a script ran: %v", left)
			}
			evs := pub.actions(t)
			rec, _, _ := m.Record(id)
			switch {
			case !tc.event && (len(evs) != before || rec.LastAction != recBefore.LastAction):
				t.Errorf("a malformed request was recorded: %+v", rec)
			case tc.event && (len(evs) != before+1 || evs[before].Action != tc.action || evs[before].OK || evs[before].ErrorCode != tc.code):
				t.Errorf("events %+v", evs[before:])
			case tc.event && (rec.LastAction != tc.action || rec.LastOK || recBefore.VolumeID != "" && rec.State != recBefore.State || rec.Open != recBefore.Open):
				t.Errorf("record %+v, was %+v", rec, recBefore)
			}
		})
	}
}

// TestCloseAfterInterruption: a rack that stopped during close leaves the
// volume's state unknown but its record open; close must still be
// possible, or detach would be refused for good.
func TestCloseAfterInterruption(t *testing.T) {
	search := t.TempDir()
	spyProvider(t, filepath.Join(search, "spy"))
	data := t.TempDir()
	m, _ := newManager(t, Config{SearchPath: []string{search}, DataDir: data})
	id := newVolumeID(t)
	ctx := context.Background()
	if _, err := m.Do(ctx, "create", Request{VolumeID: id, Machine: "m1", Provider: "spy", SizeMiB: 2, Parameters: map[string]string{"dir": t.TempDir()}}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"attach", "open"} {
		if _, err := m.Do(ctx, a, Request{VolumeID: id}); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
	}
	rec, _, _ := m.Record(id)
	rec.Pending = "close"
	if err := m.records.save(rec); err != nil {
		t.Fatal(err)
	}
	m2, _ := newManager(t, Config{SearchPath: []string{search}, DataDir: data})
	if rec, _, _ := m2.Record(id); rec.State != events.VolumeStateUnknown || !rec.Open {
		t.Fatalf("after restart: %+v", rec)
	}
	if _, err := m2.Do(ctx, "detach", Request{VolumeID: id}); rackplane.ErrorCode(err) != rackplane.ECONFLICT {
		t.Fatalf("detach of a volume still open: %v", err)
	}
	if rec, err := m2.Do(ctx, "close", Request{VolumeID: id}); err != nil || rec.Open {
		t.Fatalf("close after the interruption: %+v %v", rec, err)
	}
	if rec, err := m2.Do(ctx, "detach", Request{VolumeID: id}); err != nil || rec.State != events.VolumeStateDetached {
		t.Fatalf("detach after close: %+v %v", rec, err)
	}
}

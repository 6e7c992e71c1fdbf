package region_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack"
	"github.com/rackplane/rackplane/rack/storage"
	"github.com/rackplane/rackplane/region/postgres"
)

type volume = postgres.Volume

// loopProvider is the storage package's test provider, backed by loop
// devices; one copy serves both packages' tests.
const loopProvider = "../rack/storage/testdata/providers/loop"

// storageRack starts a rack whose storage search path holds the loop
// provider and whatever extra providers makes, and waits until the region
// has its snapshot with the loop provider valid.
func storageRack(t *testing.T, h *harness, extra func(search string)) (*rack.Rack, context.CancelFunc) {
	t.Helper()
	search := t.TempDir()
	if err := os.CopyFS(filepath.Join(search, "loop"), os.DirFS(loopProvider)); err != nil {
		t.Fatal(err)
	}
	if extra != nil {
		extra(search)
	}
	cfg := rackConfig(h, filepath.Join(t.TempDir(), "rack-s"), 200*time.Millisecond)
	cfg.StorageSearchPath = []string{search}
	cfg.StoragePollInterval = 100 * time.Millisecond
	r, stop := startRackConfig(t, h, cfg)
	db := postgres.New(h.pool, testLogger())
	h.eventually(10*time.Second, "loop provider in the region", func() error {
		ps, err := db.StorageProviderRacks(context.Background(), "loop")
		if err != nil {
			return err
		}
		for _, p := range ps {
			if p.RackID == r.ID() && p.Online && p.Valid {
				return nil
			}
		}
		return fmt.Errorf("providers %+v", ps)
	})
	return r, stop
}

// createMachine adds a machine the way the region does: machine_created
// on a new stream.
func createMachine(t *testing.T, h *harness, hostname string) string {
	t.Helper()
	id := uuid.NewString()
	ev, err := events.New(events.RegionSource, events.TypeMachineCreated, events.MachineStreamName(id), time.Now(),
		events.MachineState{MachineID: id, Hostname: hostname, MACs: []string{fmt.Sprintf("52:54:00:%02x:%02x:%02x", id[0], id[1], id[2])},
			Arch: "amd64", Origin: "api", Status: events.MachineNew})
	if err != nil {
		t.Fatal(err)
	}
	db := postgres.New(h.pool, testLogger())
	ctx := context.Background()
	if err := db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := db.Emit(ctx, tx, ev.Subject, postgres.ExpectNoStream, ev)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

// detachLoopsUnder detaches, at the end of the test, every loop device
// backed by a file under dir, so that a failure leaves none behind.
func detachLoopsUnder(t *testing.T, dir string) {
	t.Cleanup(func() {
		out, err := exec.Command("losetup", "--list", "--noheadings", "--raw", "--output", "NAME,BACK-FILE").Output()
		if err != nil {
			t.Errorf("losetup --list: %v", err)
			return
		}
		for _, line := range strings.Split(string(out), "\n") {
			if name, back, ok := strings.Cut(line, " "); ok && strings.HasPrefix(back, dir+"/") {
				if out, err := exec.Command("losetup", "--detach", name).CombinedOutput(); err != nil {
					t.Errorf("detach %s: %v: %s", name, err, out)
				}
			}
		}
	})
}

// deviceMiB reads a block device's size from sysfs.
func deviceMiB(t *testing.T, dev string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "size"))
	if err != nil {
		t.Fatalf("device size: %v", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n * 512 >> 20
}

// getro is what blockdev --getro says of dev: 1 read-only, 0 writable.
func getro(t *testing.T, dev string) string {
	t.Helper()
	out, err := exec.Command("blockdev", "--getro", dev).Output()
	if err != nil {
		t.Fatalf("blockdev --getro %s: %v", dev, err)
	}
	return strings.TrimSpace(string(out))
}

// sameOptional compares what the optional actions leave on two views of a
// volume.
func sameOptional(a, b volume) bool {
	return a.Open == b.Open && a.OpenExclusive == b.OpenExclusive && fmt.Sprint(a.Snapshots) == fmt.Sprint(b.Snapshots)
}

// projected waits until the volumes projection satisfies cond.
func (h *harness) projected(vid, what string, cond func(v volume) bool) volume {
	h.t.Helper()
	var v volume
	h.eventually(5*time.Second, "projection: "+what, func() error {
		v = volume{}
		if code := h.getJSON("/api/v1/volumes/"+vid, &v); code != 200 || !cond(v) {
			return fmt.Errorf("%d %+v", code, v)
		}
		return nil
	})
	return v
}

func (h *harness) audit(target string) []postgres.AuditEntry {
	h.t.Helper()
	var out struct {
		Entries []postgres.AuditEntry `json:"entries"`
	}
	if code := h.getJSON("/api/v1/audit?target="+target, &out); code != 200 {
		h.t.Fatalf("audit: %d", code)
	}
	return out.Entries
}

func TestVolumeLifecycle(t *testing.T) {
	h := startRegion(t)
	vols := t.TempDir()
	detachLoopsUnder(t, vols)
	r, _ := storageRack(t, h, nil)
	mid, mid2 := createMachine(t, h, "node-1"), createMachine(t, h, "node-1b")

	var v volume
	code := h.do("POST", "/api/v1/machines/"+mid+"/volumes",
		map[string]any{"provider": "loop", "size_mib": 8, "parameters": map[string]string{"dir": vols, "note": "first"}}, &v)
	if code != 201 || v.State != events.VolumeStateCreated || v.RackID != r.ID() || v.SizeMiB != 8 || v.MachineID != mid {
		t.Fatalf("create: %d %+v", code, v)
	}
	vid := v.ID
	if v.Name != storage.VolumeName(vid, mid) {
		t.Errorf("volume name %q, want %q", v.Name, storage.VolumeName(vid, mid))
	}
	img := filepath.Join(vols, v.Name+".img")
	if st, err := os.Stat(img); err != nil || st.Size() != 8<<20 {
		t.Fatalf("backing file: %v %v", st, err)
	}
	got := h.projected(vid, "created", func(v volume) bool { return v.State == events.VolumeStateCreated && v.Name != "" })
	if got.Parameters["dir"] != vols || got.Parameters["note"] != "first" || got.RackID != r.ID() || got.Provider != "loop" {
		t.Errorf("projected after create: %+v", got)
	}

	// The machine cannot be deleted while it has a volume.
	var derr struct {
		Error struct{ Code, Message string }
	}
	if code := h.do("DELETE", "/api/v1/machines/"+mid, nil, &derr); code != 409 || !strings.Contains(derr.Error.Message, "volume") {
		t.Fatalf("delete of a machine with a volume: %d %+v", code, derr)
	}

	// Every call is answered from the rack's reply at once, and the
	// projection follows from the rack's event. A refused step (status
	// set) is answered with the rack's error instead.
	snapFile := func(name string) string { return filepath.Join(vols, v.Name+"@"+name+".img") }
	steps := []struct {
		method, path string
		body         any
		check        func(v volume) error
		status       int
		says         string
	}{
		{method: "POST", path: "/attach", check: func(v volume) error {
			if v.State != events.VolumeStateAttached || v.Device == "" || len(v.URIs) != 1 || v.URIs[0] != "file://"+img {
				return fmt.Errorf("not attached: %+v", v)
			}
			if err := storage.CheckBlockDevice(v.Device); err != nil {
				return err
			}
			if n := deviceMiB(t, v.Device); n != 8 {
				return fmt.Errorf("device has %d MiB, want 8", n)
			}
			if ro := getro(t, v.Device); ro != "1" || v.Open {
				return fmt.Errorf("attached, not open, but getro %s, open %v", ro, v.Open)
			}
			return nil
		}},
		{method: "POST", path: "/open", body: map[string]bool{"exclusive": true}, check: func(v volume) error {
			if !v.Open || !v.OpenExclusive || v.State != events.VolumeStateAttached {
				return fmt.Errorf("not open: %+v", v)
			}
			if ro := getro(t, v.Device); ro != "0" {
				return fmt.Errorf("open device has getro %s", ro)
			}
			return nil
		}},
		{method: "POST", path: "/snapshot", body: map[string]string{"name": "before-grow"}, check: func(v volume) error {
			if len(v.Snapshots) != 1 || v.Snapshots[0].Name != "before-grow" || v.Snapshots[0].TakenAt.IsZero() || !v.Open {
				return fmt.Errorf("snapshots %+v", v)
			}
			if st, err := os.Stat(snapFile("before-grow")); err != nil || st.Size() != 8<<20 {
				return fmt.Errorf("snapshot file: %v %v", st, err)
			}
			return nil
		}},
		{method: "POST", path: "/detach", status: 409, says: "close it first"},
		{method: "POST", path: "/close", check: func(v volume) error {
			if v.Open || v.OpenExclusive || v.State != events.VolumeStateAttached {
				return fmt.Errorf("not closed: %+v", v)
			}
			if ro := getro(t, v.Device); ro != "1" {
				return fmt.Errorf("closed device has getro %s", ro)
			}
			return nil
		}},
		{method: "POST", path: "/grow", body: map[string]int64{"new_size_mib": 24}, check: func(v volume) error {
			if v.SizeMiB != 24 || v.State != events.VolumeStateAttached {
				return fmt.Errorf("not grown: %+v", v)
			}
			if n := deviceMiB(t, v.Device); n != 24 {
				return fmt.Errorf("device has %d MiB after grow, want 24", n)
			}
			return nil
		}},
		{method: "POST", path: "/snapshot", body: map[string]string{"name": "after-grow"}, check: func(v volume) error {
			if len(v.Snapshots) != 2 || v.Snapshots[1].Name != "after-grow" {
				return fmt.Errorf("snapshots %+v", v)
			}
			if st, err := os.Stat(snapFile("after-grow")); err != nil || st.Size() != 24<<20 {
				return fmt.Errorf("snapshot file: %v %v", st, err)
			}
			return nil
		}},
		{method: "POST", path: "/verify", check: func(v volume) error {
			if v.LastAction != "verify" || !v.LastOK {
				return fmt.Errorf("not verified: %+v", v)
			}
			return nil
		}},
		{method: "POST", path: "/setinfo", body: map[string]string{"machine_id": mid2}, check: func(v volume) error {
			if v.MachineID != mid2 || v.Name != storage.VolumeName(vid, mid) {
				return fmt.Errorf("owner not changed, or the name was: %+v", v)
			}
			meta, err := os.ReadFile(filepath.Join(vols, v.Name+".meta"))
			if err != nil || strings.TrimSpace(string(meta)) != "rackplane-machine="+mid2 {
				return fmt.Errorf("provider has owner %q (%v)", meta, err)
			}
			return nil
		}},
		{method: "POST", path: "/detach", check: func(v volume) error {
			if v.State != events.VolumeStateDetached || v.Device != "" {
				return fmt.Errorf("not detached: %+v", v)
			}
			out, err := exec.Command("losetup", "--list", "--noheadings", "--associated", img).Output()
			if err != nil || len(strings.TrimSpace(string(out))) != 0 {
				return fmt.Errorf("still mapped: %q %v", out, err)
			}
			return nil
		}},
		{method: "DELETE", check: func(v volume) error {
			if v.State != events.VolumeStateRemoved || len(v.Snapshots) != 2 {
				return fmt.Errorf("not removed: %+v", v)
			}
			if _, err := os.Stat(img); !os.IsNotExist(err) {
				return fmt.Errorf("backing file still there: %v", err)
			}
			return nil
		}},
	}
	for _, st := range steps {
		name := st.method + " " + st.path
		if st.status != 0 {
			var e apiError
			if code := h.do(st.method, "/api/v1/volumes/"+vid+st.path, st.body, &e); code != st.status || !strings.Contains(e.Error.Message, st.says) {
				t.Fatalf("%s: %d %+v, want %d saying %q", name, code, e, st.status, st.says)
			}
			h.projected(vid, name+" refused", func(p volume) bool { return p.LastAction == strings.TrimPrefix(st.path, "/") && !p.LastOK })
			continue
		}
		var v volume
		if code := h.do(st.method, "/api/v1/volumes/"+vid+st.path, st.body, &v); code != 200 {
			t.Fatalf("%s: %d %+v", name, code, v)
		}
		if err := st.check(v); err != nil {
			t.Fatalf("%s answered: %v", name, err)
		}
		p := h.projected(vid, name, func(p volume) bool {
			return p.State == v.State && p.SizeMiB == v.SizeMiB && p.LastAction == v.LastAction && p.MachineID == v.MachineID && p.LastOK
		})
		if p.Device != v.Device || strings.Join(p.URIs, " ") != strings.Join(v.URIs, " ") || !sameOptional(p, v) {
			t.Errorf("%s: projected %+v, answered %+v", name, p, v)
		}
	}

	lists := []struct {
		path string
		want int
	}{
		{"/api/v1/machines/" + mid2 + "/volumes", 0},
		{"/api/v1/machines/" + mid2 + "/volumes?removed=true", 1},
		{"/api/v1/machines/" + mid + "/volumes?removed=true", 0},
	}
	for _, l := range lists {
		var list struct{ Volumes []volume }
		if code := h.getJSON(l.path, &list); code != 200 || len(list.Volumes) != l.want || l.want == 1 && list.Volumes[0].ID != vid {
			t.Errorf("GET %s: %d %+v, want %d volumes", l.path, code, list, l.want)
		}
	}

	entries := h.audit("volume/" + vid)
	var actions []string
	for _, e := range entries {
		action := strings.TrimPrefix(strings.TrimPrefix(e.Action, "POST /api/v1/"), "DELETE /api/v1/")
		if e.Outcome != "success" {
			action += " " + e.Outcome
		}
		actions = append(actions, action)
		if e.Target != "volume/"+vid || len(e.After) == 0 && e.Outcome == "success" {
			t.Errorf("audit entry %+v", e)
		}
	}
	want := []string{"machines/{id}/volumes", "volumes/{vid}/attach", "volumes/{vid}/open", "volumes/{vid}/snapshot",
		"volumes/{vid}/detach failure", "volumes/{vid}/close", "volumes/{vid}/grow", "volumes/{vid}/snapshot",
		"volumes/{vid}/verify", "volumes/{vid}/setinfo", "volumes/{vid}/detach", "volumes/{vid}"}
	if strings.Join(actions, ",") != strings.Join(want, ",") {
		t.Fatalf("audit actions %v, want %v", actions, want)
	}
	type audited struct {
		SizeMiB       int64  `json:"size_mib"`
		Open          bool   `json:"open"`
		OpenExclusive bool   `json:"open_exclusive"`
		Snapshots     int    `json:"snapshots"`
		LastSnapshot  string `json:"last_snapshot"`
	}
	changes := []struct {
		entry         int
		before, after audited
	}{
		{2, audited{SizeMiB: 8}, audited{SizeMiB: 8, Open: true, OpenExclusive: true}},
		{3, audited{SizeMiB: 8, Open: true, OpenExclusive: true}, audited{SizeMiB: 8, Open: true, OpenExclusive: true, Snapshots: 1, LastSnapshot: "before-grow"}},
		{5, audited{SizeMiB: 8, Open: true, OpenExclusive: true, Snapshots: 1, LastSnapshot: "before-grow"}, audited{SizeMiB: 8, Snapshots: 1, LastSnapshot: "before-grow"}},
		{6, audited{SizeMiB: 8, Snapshots: 1, LastSnapshot: "before-grow"}, audited{SizeMiB: 24, Snapshots: 1, LastSnapshot: "before-grow"}},
		{7, audited{SizeMiB: 24, Snapshots: 1, LastSnapshot: "before-grow"}, audited{SizeMiB: 24, Snapshots: 2, LastSnapshot: "after-grow"}},
	}
	for _, c := range changes {
		var before, after audited
		e := entries[c.entry]
		if json.Unmarshal(e.Before, &before) != nil || json.Unmarshal(e.After, &after) != nil || before != c.before || after != c.after {
			t.Errorf("%s audited as %s → %s", e.Action, e.Before, e.After)
		}
	}
	if e := entries[4]; e.Status != 409 || !strings.Contains(e.Detail, "close it first") {
		t.Errorf("refused detach audited as %+v", e)
	}

	// The log has the region's request and the rack's every outcome, and
	// a rebuild from it gives the same volume.
	var page struct {
		Events []struct{ Type, Source string }
	}
	h.getJSON("/api/v1/events?stream=volume/"+vid, &page)
	var types []string
	for _, e := range page.Events {
		types = append(types, strings.TrimSuffix(strings.TrimPrefix(e.Type, "rackplane."), ".v1"))
	}
	if len(types) != 13 || !strings.Contains(strings.Join(types, " "), "region.volume_requested") {
		t.Errorf("volume stream: %v", types)
	}

	// A second volume is left open, so that the rebuild has an open one
	// to reproduce as well as snapshots.
	var w volume
	if code := h.do("POST", "/api/v1/machines/"+mid+"/volumes", map[string]any{"provider": "loop", "size_mib": 4, "parameters": map[string]string{"dir": vols}}, &w); code != 201 {
		t.Fatalf("second volume: %d %+v", code, w)
	}
	for _, a := range []struct {
		path string
		body any
	}{{"/attach", nil}, {"/open", map[string]bool{"exclusive": false}}} {
		if code := h.do("POST", "/api/v1/volumes/"+w.ID+a.path, a.body, &w); code != 200 {
			t.Fatalf("second volume %s: %d %+v", a.path, code, w)
		}
	}
	if !w.Open || w.OpenExclusive {
		t.Fatalf("second volume after a shared open: %+v", w)
	}
	if b, err := os.ReadFile(filepath.Join(vols, w.Name+".exclusive")); err != nil || string(b) != "false\n" {
		t.Errorf("provider got VOL_OPEN_EXCLUSIVE %q (%v)", b, err)
	}
	h.projected(w.ID, "second volume open", func(p volume) bool { return sameOptional(p, w) && p.LastAction == "open" })

	dump := func() string {
		var s string
		if err := h.pool.QueryRow(context.Background(), `SELECT json_agg(v ORDER BY v.id)::text FROM volumes v`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	beforeRows := dump()
	for _, c := range []string{`"after-grow"`, `"open":true`, `"open":false`} {
		if !strings.Contains(beforeRows, c) {
			t.Fatalf("volumes table lacks %s: %s", c, beforeRows)
		}
	}
	before := []volume{h.projected(vid, "final", func(volume) bool { return true }), h.projected(w.ID, "final", func(volume) bool { return true })}
	if _, err := postgres.New(h.pool, testLogger()).RebuildProjections(context.Background()); err != nil {
		t.Fatal(err)
	}
	if afterRows := dump(); afterRows != beforeRows {
		t.Errorf("rebuilt volumes table differs:\n%s\n%s", beforeRows, afterRows)
	}
	after := []volume{h.projected(vid, "rebuilt", func(volume) bool { return true }), h.projected(w.ID, "rebuilt", func(volume) bool { return true })}
	if fmt.Sprintf("%+v", before) != fmt.Sprintf("%+v", after) {
		t.Errorf("rebuilt projection differs:\n%+v\n%+v", before, after)
	}
}

func TestVolumeErrors(t *testing.T) {
	h := startRegion(t)
	vols := t.TempDir()
	detachLoopsUnder(t, vols)
	r, stop := storageRack(t, h, func(search string) {
		// A provider missing its scripts, and one whose verify hangs.
		if err := os.MkdirAll(filepath.Join(search, "halfdone"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(search, "halfdone", "parameters.list"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		slow := filepath.Join(search, "slow")
		if err := os.CopyFS(slow, os.DirFS(loopProvider)); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(slow, "verify"), []byte("#!/bin/sh\nsleep 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		// And one without the optional snapshot script.
		nosnap := filepath.Join(search, "nosnap")
		if err := os.CopyFS(nosnap, os.DirFS(loopProvider)); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(nosnap, "snapshot")); err != nil {
			t.Fatal(err)
		}
	})
	mid := createMachine(t, h, "node-2")
	create := func(provider string, params map[string]string, size int64) (int, apiError, volume) {
		t.Helper()
		var raw json.RawMessage
		code := h.do("POST", "/api/v1/machines/"+mid+"/volumes", map[string]any{"provider": provider, "size_mib": size, "parameters": params}, &raw)
		var e apiError
		var v volume
		_ = json.Unmarshal(raw, &e)
		_ = json.Unmarshal(raw, &v)
		return code, e, v
	}
	dir := map[string]string{"dir": vols}

	refused := []struct {
		name     string
		provider string
		params   map[string]string
		size     int64
		status   int
		code     string
		says     string
	}{
		{"unknown provider", "nosuch", dir, 8, 409, rackplane.ECONFLICT, "no rack reports storage provider nosuch"},
		{"invalid provider", "halfdone", nil, 8, 409, rackplane.ECONFLICT, "not usable"},
		{"undeclared parameter", "loop", map[string]string{"dir": vols, "colour": "red"}, 8, 400, rackplane.EINVALID, `no parameter "colour"`},
		{"no size", "loop", dir, 0, 400, rackplane.EINVALID, "size_mib"},
		{"bad provider name", "../loop", dir, 8, 400, rackplane.EINVALID, "provider"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			code, e, _ := create(tt.provider, tt.params, tt.size)
			if code != tt.status || e.Error.Code != tt.code || !strings.Contains(e.Error.Message, tt.says) {
				t.Fatalf("got %d %+v, want %d %s saying %q", code, e, tt.status, tt.code, tt.says)
			}
		})
	}
	var e apiError
	if code := h.do("POST", "/api/v1/machines/"+uuid.NewString()+"/volumes", map[string]any{"provider": "loop", "size_mib": 8, "parameters": dir}, &e); code != 404 {
		t.Errorf("unknown machine: %d %+v", code, e)
	}
	if code := h.do("GET", "/api/v1/volumes/"+uuid.NewString(), nil, &e); code != 404 {
		t.Errorf("unknown volume: %d %+v", code, e)
	}

	// The provider fails: its output's tail comes back, and the volume is
	// on record with it.
	code, e, _ := create("loop", map[string]string{"dir": "/nonexistent/volumes"}, 8)
	if code != 503 || e.Error.Code != rackplane.EUNAVAILABLE || !strings.Contains(e.Error.Message, "exit status 1") ||
		!strings.Contains(e.Error.Message, "truncate") || !strings.Contains(e.Error.Message, "/nonexistent/volumes") {
		t.Fatalf("failing provider: %d %+v", code, e)
	}
	var failed volume
	h.eventually(5*time.Second, "failed create on record", func() error {
		var list struct{ Volumes []volume }
		h.getJSON("/api/v1/machines/"+mid+"/volumes", &list)
		if len(list.Volumes) != 1 || list.Volumes[0].LastOK || len(list.Volumes[0].LastOutputTail) == 0 {
			return fmt.Errorf("%+v", list)
		}
		failed = list.Volumes[0]
		return nil
	})
	if failed.State != events.VolumeStateUnknown || failed.LastErrorCode != rackplane.EUNAVAILABLE || failed.Parameters["dir"] != "/nonexistent/volumes" {
		t.Errorf("failed create recorded as %+v", failed)
	}
	if a := h.audit("volume/" + failed.ID); len(a) != 1 || a[0].Outcome != "failure" || a[0].Status != 503 || !strings.Contains(a[0].Detail, "truncate") {
		t.Errorf("failed create audited as %+v", a)
	}

	// Errors of the rack pass through.
	code, e, v := create("loop", dir, 8)
	if code != 201 {
		t.Fatalf("create: %d %+v", code, e)
	}
	if code := h.do("POST", "/api/v1/volumes/"+v.ID+"/grow", map[string]int64{"new_size_mib": 4}, &e); code != 400 || !strings.Contains(e.Error.Message, "above the current 8 MiB") {
		t.Errorf("shrink: %d %+v", code, e)
	}
	if code := h.do("POST", "/api/v1/volumes/"+v.ID+"/attach", nil, nil); code != 200 {
		t.Fatalf("attach: %d", code)
	}
	if code := h.do("DELETE", "/api/v1/volumes/"+v.ID, nil, &e); code != 409 || e.Error.Code != rackplane.ECONFLICT || !strings.Contains(e.Error.Message, "detach it first") {
		t.Errorf("remove while attached: %d %+v", code, e)
	}
	if code := h.do("POST", "/api/v1/volumes/"+v.ID+"/attach", map[string]int64{"new_size_mib": 4}, &e); code != 400 {
		t.Errorf("attach with a size: %d %+v", code, e)
	}
	if code := h.do("POST", "/api/v1/volumes/"+v.ID+"/detach?timeout=forever", nil, &e); code != 400 {
		t.Errorf("bad timeout: %d %+v", code, e)
	}
	if code := h.do("POST", "/api/v1/volumes/"+v.ID+"/setinfo", map[string]string{"machine_id": uuid.NewString()}, &e); code != 404 {
		t.Errorf("setinfo to an unknown machine: %d %+v", code, e)
	}
	if code := h.do("POST", "/api/v1/volumes/"+v.ID+"/detach", nil, nil); code != 200 {
		t.Fatalf("detach: %d", code)
	}

	// The optional actions: a bad body is refused here, and a provider
	// without the script by the rack, which records the refusal.
	code, e, ns := create("nosnap", dir, 8)
	if code != 201 {
		t.Fatalf("create nosnap: %d %+v", code, e)
	}
	bad := []struct {
		path string
		body any
		says string
	}{
		{"/snapshot", nil, "snapshot needs a name"},
		{"/snapshot", map[string]string{"name": "../etc"}, "snapshot needs a name"},
		{"/snapshot", map[string]string{"name": "-rf"}, "snapshot needs a name"},
		{"/open", nil, "open needs exclusive"},
		{"/open", map[string]string{"exclusive": "yes"}, ""},
		{"/attach", map[string]string{"name": "s1"}, "name is for snapshot only"},
		{"/close", map[string]bool{"exclusive": true}, "exclusive is for open only"},
		{"/snapshot", map[string]any{"name": "s1", "exclusive": false}, "exclusive is for open only"},
	}
	for _, b := range bad {
		var e apiError
		if code := h.do("POST", "/api/v1/volumes/"+ns.ID+b.path, b.body, &e); code != 400 || e.Error.Code != rackplane.EINVALID || !strings.Contains(e.Error.Message, b.says) {
			t.Errorf("%s %v: %d %+v, want 400 saying %q", b.path, b.body, code, e, b.says)
		}
	}
	if code := h.do("POST", "/api/v1/volumes/"+ns.ID+"/snapshot", map[string]string{"name": "s1"}, &e); code != 412 ||
		e.Error.Code != rackplane.EPRECONDITION || !strings.Contains(e.Error.Message, "storage provider nosnap has no snapshot script") {
		t.Errorf("snapshot without the script: %d %+v", code, e)
	}
	h.projected(ns.ID, "refused snapshot on record", func(v volume) bool {
		return v.LastAction == "snapshot" && !v.LastOK && v.LastErrorCode == rackplane.EPRECONDITION && len(v.Snapshots) == 0 &&
			v.State == events.VolumeStateCreated && strings.Contains(v.LastError, "no snapshot script")
	})
	if a := h.audit("volume/" + ns.ID); len(a) != len(bad)+2 || a[len(a)-1].Status != 412 || !strings.Contains(a[len(a)-1].Detail, "no snapshot script") {
		t.Errorf("audit of the refused snapshot: %+v", a)
	}
	if _, err := os.Stat(filepath.Join(vols, ns.Name+"@s1.img")); !os.IsNotExist(err) {
		t.Errorf("a snapshot was made: %v", err)
	}

	// A script slower than the caller's patience: 504, and the outcome
	// still arrives.
	code, e, slow := create("slow", dir, 8)
	if code != 201 {
		t.Fatalf("create slow: %d %+v", code, e)
	}
	if code := h.do("POST", "/api/v1/volumes/"+slow.ID+"/verify?timeout=200ms", nil, &e); code != 504 || e.Error.Code != rackplane.ETIMEOUT {
		t.Errorf("slow verify: %d %+v", code, e)
	}
	h.projected(slow.ID, "slow verify done", func(v volume) bool { return v.LastAction == "verify" && v.LastOK })

	// The rack stops: its volumes' actions are 503, and new volumes find
	// no rack once it is offline.
	stop()
	if code := h.do("POST", "/api/v1/volumes/"+v.ID+"/attach", nil, &e); code != 503 || e.Error.Code != rackplane.EUNAVAILABLE || !strings.Contains(e.Error.Message, r.ID()) {
		t.Errorf("attach on a stopped rack: %d %+v", code, e)
	}
	h.eventually(5*time.Second, "rack offline", func() error {
		if got, _ := h.rack(r.ID()); got.Online {
			return fmt.Errorf("still online")
		}
		return nil
	})
	if code := h.do("POST", "/api/v1/volumes/"+v.ID+"/detach", nil, &e); code != 503 || !strings.Contains(e.Error.Message, "offline since") {
		t.Errorf("detach on an offline rack: %d %+v", code, e)
	}
	if code, e, _ := create("loop", dir, 8); code != 409 || !strings.Contains(e.Error.Message, "is offline") {
		t.Errorf("create with the rack offline: %d %+v", code, e)
	}
	a := h.audit("volume/" + v.ID)
	if len(a) != 10 {
		t.Fatalf("audit of %s: %d entries, want 10: %+v", v.ID, len(a), a)
	}
	if last := a[len(a)-1]; last.Outcome != "failure" || last.Status != 503 {
		t.Errorf("last audit entry %+v", last)
	}
}

// TestStorageProvidersFollowDisk changes a rack's providers on disk: the
// region's list follows at the rack's next scan, and a provider broken on
// disk is refused with the rack's reason.
func TestStorageProvidersFollowDisk(t *testing.T) {
	h := startRegion(t)
	var search string
	r, _ := storageRack(t, h, func(dir string) { search = dir })
	type listed struct {
		StorageProviders []struct {
			Name  string
			Racks []postgres.ProviderOnRack
		} `json:"storage_providers"`
	}
	waitFor := func(what, name string, cond func(p postgres.ProviderOnRack) bool) {
		t.Helper()
		// The rack looks at the disk every 100ms (storageRack).
		h.eventually(10*time.Second, what, func() error {
			var l listed
			if code := h.getJSON("/api/v1/storage-providers", &l); code != 200 {
				return fmt.Errorf("status %d", code)
			}
			for _, p := range l.StorageProviders {
				if p.Name == name && len(p.Racks) == 1 && p.Racks[0].RackID == r.ID() && cond(p.Racks[0]) {
					return nil
				}
			}
			return fmt.Errorf("%+v", l)
		})
	}
	waitFor("loop listed", "loop", func(p postgres.ProviderOnRack) bool {
		return p.Valid && p.Online && len(p.Parameters) == 2 && p.Parameters[0].Name == "dir" &&
			strings.Join(p.Optional, " ") == "snapshot open close"
	})

	late := filepath.Join(search, "late")
	if err := os.CopyFS(late, os.DirFS(loopProvider)); err != nil {
		t.Fatal(err)
	}
	waitFor("a new provider listed", "late", func(p postgres.ProviderOnRack) bool { return p.Valid })
	if err := os.Chmod(filepath.Join(late, "create"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor("a broken provider listed as such", "late", func(p postgres.ProviderOnRack) bool {
		return !p.Valid && strings.Contains(p.Reason, "create")
	})
	mid := createMachine(t, h, "node-3")
	var e apiError
	code := h.do("POST", "/api/v1/machines/"+mid+"/volumes", map[string]any{"provider": "late", "size_mib": 8, "parameters": map[string]string{"dir": t.TempDir()}}, &e)
	if code != 409 || !strings.Contains(e.Error.Message, "not usable") || !strings.Contains(e.Error.Message, "create") {
		t.Fatalf("create with a broken provider: %d %+v", code, e)
	}
}

package storage

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// deviceBytes reads a loop device's size from sysfs (in 512-byte sectors
// whatever the logical block size).
func deviceBytes(t *testing.T, dev string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "size"))
	if err != nil {
		t.Fatalf("device size: %v", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n * 512
}

// backedBy lists the loop devices whose backing file is img.
func backedBy(t *testing.T, img string) []string {
	t.Helper()
	out, err := exec.Command("losetup", "--list", "--noheadings", "--output", "NAME", "--associated", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	return strings.Fields(string(out))
}

// readOnly is what blockdev --getro says of dev: 1 read-only, 0 writable.
func readOnly(t *testing.T, dev string) int {
	t.Helper()
	out, err := exec.Command("blockdev", "--getro", dev).Output()
	if err != nil {
		t.Fatalf("blockdev --getro %s: %v", dev, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestLoopProviderLifecycle(t *testing.T) {
	search := t.TempDir()
	copyProvider(t, "testdata/providers/loop", filepath.Join(search, "loop"))
	vols := t.TempDir()
	detachLoops(t, vols)
	m, pub := newManager(t, Config{SearchPath: []string{search}})
	ctx := context.Background()

	id := newVolumeID(t)
	const machine = "Node-1.example"
	create := Request{VolumeID: id, Machine: machine, Provider: "loop", SizeMiB: 8,
		Parameters: map[string]string{"dir": vols, "note": "first disk"}}
	rec, err := m.Do(ctx, "create", create)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	wantName := "rp-" + id + "-node-1-example"
	if rec.State != events.VolumeStateCreated || rec.Name != wantName || rec.SizeMiB != 8 {
		t.Fatalf("after create: %+v", rec)
	}
	img := filepath.Join(vols, wantName+".img")
	if st, err := os.Stat(img); err != nil || st.Size() != 8<<20 {
		t.Fatalf("backing file: %v %v", st, err)
	}
	meta, err := os.ReadFile(filepath.Join(vols, wantName+".meta"))
	if err != nil || strings.TrimSpace(string(meta)) != "rackplane-machine="+machine {
		t.Fatalf("provider got VOL_METADATA %q (%v)", meta, err)
	}

	// Later requests need only the volume id: the record has the rest.
	byID := Request{VolumeID: id}
	rec, err = m.Do(ctx, "attach", byID)
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	if rec.State != events.VolumeStateAttached || rec.Device == "" {
		t.Fatalf("after attach: %+v", rec)
	}
	if err := CheckBlockDevice(rec.Device); err != nil {
		t.Fatalf("attached path: %v", err)
	}
	if len(rec.URIs) != 1 || rec.URIs[0] != "file://"+img {
		t.Errorf("uris %v", rec.URIs)
	}
	dev := rec.Device
	if got := deviceBytes(t, dev); got != 8<<20 {
		t.Fatalf("device is %d bytes, want 8 MiB", got)
	}
	again, err := m.Do(ctx, "attach", byID)
	if err != nil || again.Device != dev {
		t.Fatalf("second attach: %q, %v; want %q", again.Device, err, dev)
	}
	if devs := backedBy(t, img); len(devs) != 1 {
		t.Fatalf("second attach mapped again: %v", devs)
	}

	// Attached read-only: open makes the device writable, close makes it
	// read-only again.
	if ro := readOnly(t, dev); ro != 1 {
		t.Fatalf("attached device: getro %d, want 1 until open", ro)
	}
	rec, err = m.Do(ctx, "open", Request{VolumeID: id, Exclusive: true})
	if err != nil || !rec.Open || !rec.OpenExclusive || rec.State != events.VolumeStateAttached {
		t.Fatalf("open: %+v %v", rec, err)
	}
	if ro := readOnly(t, dev); ro != 0 {
		t.Fatalf("open device: getro %d, want 0", ro)
	}
	if b, err := os.ReadFile(filepath.Join(vols, wantName+".exclusive")); err != nil || string(b) != "true\n" {
		t.Errorf("provider got VOL_OPEN_EXCLUSIVE %q (%v)", b, err)
	}
	// What is written through the device is in the snapshot.
	content := []byte("written through the device before the snapshot\n")
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("open device for writing: %v", err)
	}
	if _, err := f.WriteAt(content, 3<<20); err != nil {
		t.Fatalf("write to the open device: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	rec, err = m.Do(ctx, "snapshot", Request{VolumeID: id, SnapshotName: "before-grow"})
	if err != nil || len(rec.Snapshots) != 1 || rec.Snapshots[0].Name != "before-grow" || rec.Snapshots[0].TakenAt.IsZero() || !rec.Open {
		t.Fatalf("snapshot: %+v %v", rec, err)
	}
	snap := filepath.Join(vols, wantName+"@before-grow.img")
	copied, err := os.ReadFile(snap)
	if err != nil {
		t.Fatalf("snapshot file: %v", err)
	}
	if len(copied) != 8<<20 || !bytes.Equal(copied[3<<20:3<<20+len(content)], content) {
		t.Fatalf("snapshot has %d bytes, and at 3 MiB %q", len(copied), copied[3<<20:min(len(copied), 3<<20+len(content))])
	}
	if orig, _ := os.ReadFile(img); !bytes.Equal(orig, copied) {
		t.Error("snapshot differs from the volume")
	}
	if _, err := m.Do(ctx, "snapshot", Request{VolumeID: id, SnapshotName: "before-grow"}); rackplane.ErrorCode(err) != rackplane.ECONFLICT {
		t.Errorf("second snapshot of the same name: %v, want a conflict", err)
	}
	for _, a := range []string{"detach", "remove"} {
		_, err := m.Do(ctx, a, byID)
		if rackplane.ErrorCode(err) != rackplane.ECONFLICT || !strings.Contains(rackplane.ErrorMessage(err), "close it first") {
			t.Fatalf("%s of an open volume: %v, want a conflict saying to close it", a, err)
		}
	}
	if devs := backedBy(t, img); len(devs) != 1 {
		t.Fatalf("refused detach unmapped the device: %v", devs)
	}
	rec, err = m.Do(ctx, "close", byID)
	if err != nil || rec.Open || rec.OpenExclusive || rec.State != events.VolumeStateAttached {
		t.Fatalf("close: %+v %v", rec, err)
	}
	if ro := readOnly(t, dev); ro != 1 {
		t.Fatalf("closed device: getro %d, want 1", ro)
	}
	// Root may open a read-only device for writing; the write fails.
	if f, err := os.OpenFile(dev, os.O_WRONLY, 0); err == nil {
		_, werr := f.WriteAt(content, 0)
		if werr == nil {
			werr = f.Sync()
		}
		f.Close()
		if werr == nil {
			t.Fatal("a closed device took a write")
		}
	}

	rec, err = m.Do(ctx, "grow", Request{VolumeID: id, NewSizeMiB: 24})
	if err != nil {
		t.Fatalf("grow: %v", err)
	}
	if rec.SizeMiB != 24 {
		t.Errorf("recorded size %d after grow", rec.SizeMiB)
	}
	if got := deviceBytes(t, dev); got != 24<<20 {
		t.Fatalf("device is %d bytes after grow, want 24 MiB", got)
	}
	// VOL_SNAPSHOT_SIZE follows the grow (the script checks it).
	rec, err = m.Do(ctx, "snapshot", Request{VolumeID: id, SnapshotName: "after-grow"})
	if err != nil || len(rec.Snapshots) != 2 || rec.Snapshots[1].Name != "after-grow" {
		t.Fatalf("snapshot after grow: %+v %v", rec, err)
	}
	if st, err := os.Stat(filepath.Join(vols, wantName+"@after-grow.img")); err != nil || st.Size() != 24<<20 {
		t.Fatalf("snapshot after grow: %v %v", st, err)
	}

	if _, err := m.Do(ctx, "remove", byID); rackplane.ErrorCode(err) != rackplane.ECONFLICT {
		t.Fatalf("remove of an attached volume: %v, want a conflict", err)
	}
	for i := range 2 {
		rec, err = m.Do(ctx, "detach", byID)
		if err != nil || rec.State != events.VolumeStateDetached {
			t.Fatalf("detach %d: %+v %v", i+1, rec, err)
		}
		if devs := backedBy(t, img); len(devs) != 0 {
			t.Fatalf("still mapped after detach: %v", devs)
		}
	}
	if _, err := m.Do(ctx, "open", byID); rackplane.ErrorCode(err) != rackplane.ECONFLICT || !strings.Contains(rackplane.ErrorMessage(err), "attach it") {
		t.Fatalf("open of a detached volume: %v, want a conflict", err)
	}
	rec, err = m.Do(ctx, "remove", byID)
	if err != nil || rec.State != events.VolumeStateRemoved {
		t.Fatalf("remove: %+v %v", rec, err)
	}
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Fatalf("backing file still there: %v", err)
	}
	if _, err := m.Do(ctx, "snapshot", Request{VolumeID: id, SnapshotName: "too-late"}); rackplane.ErrorCode(err) != rackplane.ECONFLICT {
		t.Fatalf("snapshot of a removed volume: %v, want a conflict", err)
	}

	var got []string
	for _, d := range pub.actions(t) {
		// action, ! failed, * open after it, @ the snapshot's name
		tag := d.Action
		if !d.OK {
			tag += "!"
		}
		if d.Open {
			tag += "*"
		}
		if d.SnapshotName != "" {
			tag += "@" + d.SnapshotName
		}
		got = append(got, tag)
		if d.VolumeName != wantName || d.Machine != machine || d.Provider != "loop" {
			t.Errorf("event %+v", d)
		}
	}
	want := "create attach attach open* snapshot*@before-grow snapshot!*@before-grow detach!* remove!* close grow snapshot@after-grow " +
		"remove! detach detach open! remove snapshot!@too-late"
	if strings.Join(got, " ") != want {
		t.Errorf("events %q, want %q", strings.Join(got, " "), want)
	}
	logs, err := os.ReadDir(filepath.Join(m.cfg.DataDir, "storage", "logs"))
	if err != nil || len(logs) != 1 || logs[0].Name() != id+".log" {
		t.Fatalf("want one log for the volume, got %v (%v)", logs, err)
	}
	b, _ := os.ReadFile(filepath.Join(m.cfg.DataDir, "storage", "logs", id+".log"))
	for _, w := range []string{"created " + img, "grew " + wantName, "detached " + dev, "opened " + dev + " exclusive=true",
		"snapshot before-grow of " + wantName, "closed " + dev} {
		if !strings.Contains(string(b), w) {
			t.Errorf("volume log lacks %q:\n%s", w, b)
		}
	}
}

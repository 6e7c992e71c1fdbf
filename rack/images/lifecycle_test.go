package images

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// TestMain doubles as the helper process of TestKilledImportLeavesNoTrace.
func TestMain(m *testing.M) {
	if os.Getenv("IMAGES_HELPER_DATA_DIR") != "" {
		helperImport()
		return
	}
	os.Exit(m.Run())
}

// helperImport imports from a source until it is killed.
func helperImport() {
	s, err := Open(context.Background(), Config{DataDir: os.Getenv("IMAGES_HELPER_DATA_DIR"), StallTimeout: time.Minute})
	if err != nil {
		os.Exit(2)
	}
	s.Import(context.Background(), Source{URL: os.Getenv("IMAGES_HELPER_URL")})
	os.Exit(3) // the test kills this process before the import ends
}

func TestKilledImportLeavesNoTrace(t *testing.T) {
	dir := t.TempDir()
	big := content("squashfs", 4<<20)
	v, files := imageVersion("20261101", map[string][]byte{"linux": content("k", 10000), "squashfs": big})
	ss := newSourceServer(t, v)
	ss.addFiles(files)
	midway := make(chan struct{}, 1)
	release := make(chan struct{})
	defer close(release)
	var slow atomic.Bool
	slow.Store(true)
	ss.with(func() {
		ss.fileHook = func(w http.ResponseWriter, r *http.Request, p string) bool {
			if p != "20261101/squashfs" || !slow.Load() {
				return false
			}
			w.Header().Set("Content-Length", "4194304")
			w.Write(big[:1<<20])
			w.(http.Flusher).Flush()
			midway <- struct{}{}
			hang(r, release)
			return true
		}
	})

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "IMAGES_HELPER_DATA_DIR="+dir, "IMAGES_HELPER_URL="+ss.url())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-midway:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("helper never reached the slow file")
	}
	// Wait until the partial download is on disk, so the kill is truly
	// in the middle of writing it.
	tmp := filepath.Join(dir, "images", "tmp")
	deadline := time.Now().Add(10 * time.Second)
	for partialSize(tmp) < 1<<20 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no partial temp file appeared (size %d)", partialSize(tmp))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	cmd.Wait()
	if ents, _ := os.ReadDir(filepath.Join(dir, "images", "versions")); len(ents) != 0 {
		t.Fatalf("a version manifest was written before all its files were in: %v", ents)
	}

	e := &env{t: t, dir: dir, clock: newClock(), rec: newRecorder(t), changes: &counter{}}
	e.cfg = Config{DataDir: dir, RackID: testRackID, Publisher: e.rec, Logger: testLogger(t), Now: e.clock.Now}
	e.open()
	if ids := e.ids(); len(ids) != 0 {
		t.Fatalf("versions visible after the kill: %v", ids)
	}
	if f := e.files("tmp"); len(f) != 0 {
		t.Fatalf("temp files after Open: %v", f)
	}
	if _, err := e.s.OpenFile(context.Background(), "ubuntu/amd64/ga-24.04/noble/stable/20261101/linux"); !isCode(err, rackplane.ENOTFOUND) {
		t.Fatalf("open of the interrupted version: %v", err)
	}
	// The kernel made it into blobs before the kill; nothing uses it, so GC
	// removes it and says so.
	rep, err := e.s.GC(context.Background(), false)
	if err != nil || len(rep.Blobs) != 1 || rep.Blobs[0].SHA256 != sum(content("k", 10000)) {
		t.Fatalf("gc of the orphan: %+v %v", rep, err)
	}
	if n := len(e.rec.ofType(events.TypeImageBlobRemoved)); n != 1 {
		t.Fatalf("%d blob_removed events", n)
	}
	// And the import, retried, completes.
	slow.Store(false)
	st := e.importURL(ss.url())
	if len(st.Versions) != 1 {
		t.Fatalf("retry: %+v", st)
	}
}

func partialSize(dir string) int64 {
	ents, _ := os.ReadDir(dir)
	var max int64
	for _, en := range ents {
		if fi, err := en.Info(); err == nil && fi.Size() > max {
			max = fi.Size()
		}
	}
	return max
}

func flipByte(t *testing.T, p string) {
	t.Helper()
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestScrubFindsAFlippedByte(t *testing.T) {
	e := newEnv(t, nil)
	initrd := content("initrd", 5000)
	v1, f1 := imageVersion("20261101", map[string][]byte{"linux": content("k1", 100), "initrd": initrd})
	v2, f2 := imageVersion("20261102", map[string][]byte{"linux": content("k2", 100), "initrd": initrd})
	v3, f3 := imageVersion("20261103", map[string][]byte{"linux": content("k3", 100), "initrd": content("other", 10)})
	ss := newSourceServer(t, v1, v2, v3)
	ss.addFiles(f1)
	ss.addFiles(f2)
	ss.addFiles(f3)
	e.importURL(ss.url())
	changesBefore := e.changes.get()

	flipByte(t, e.s.blobPath(sum(initrd)))
	rep, err := e.s.Scrub(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checked != 5 || len(rep.Corrupt) != 1 {
		t.Fatalf("scrub report %+v", rep)
	}
	c := rep.Corrupt[0]
	wantVersions := []string{v1.ID(), v2.ID()}
	if c.SHA256 != sum(initrd) || !slices.Equal(c.Versions, wantVersions) {
		t.Fatalf("corrupt %+v", c)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "images", "quarantine", c.Quarantine)); err != nil {
		t.Fatalf("not quarantined: %v", err)
	}
	for _, vi := range e.s.Versions() {
		if want := vi.ID != v3.ID(); vi.Usable == want {
			t.Fatalf("%s usable=%v problem=%q", vi.ID, vi.Usable, vi.Problem)
		}
	}
	_, err = e.s.OpenFile(context.Background(), v1.ID()+"/linux")
	wantCode(t, err, rackplane.EUNAVAILABLE)
	if _, ok := e.s.Capabilities().OS["ubuntu"]["noble"]["amd64/ga-24.04"]; !ok {
		t.Fatal("capabilities lost the usable version")
	}
	if got := e.s.Capabilities().OS["ubuntu"]["noble"]["amd64/ga-24.04"]; len(got) != 1 || got[0].ID != v3.ID() {
		t.Fatalf("capabilities still offer unusable versions: %+v", got)
	}
	corrupt := e.rec.ofType(events.TypeImageCorrupt)
	if len(corrupt) != 1 {
		t.Fatalf("%d corrupt events", len(corrupt))
	}
	var d events.ImageCorrupt
	corrupt[0].DecodeData(&d)
	if d.SHA256 != sum(initrd) || d.DetectedBy != "scrub" || !slices.Equal(d.Versions, wantVersions) {
		t.Fatalf("corrupt event %+v", d)
	}
	if e.changes.get() == changesBefore {
		t.Fatal("OnChange not called")
	}

	// Unusable survives a restart, and importing again repairs it: the
	// source is unchanged (304), only the missing file is fetched.
	e.reopen()
	if vi, _ := e.s.Version(v1.ID()); vi.Usable {
		t.Fatal("usable again after restart")
	}
	gets := ss.totalFileGets()
	st := e.importURL(ss.url())
	if !st.Unchanged || ss.totalFileGets() != gets+1 || st.BytesDone != 5000 {
		t.Fatalf("repair import %+v, %d gets", st, ss.totalFileGets()-gets)
	}
	for _, vi := range e.s.Versions() {
		if !vi.Usable {
			t.Fatalf("%s still unusable", vi.ID)
		}
	}
}

func TestScrubAtOpen(t *testing.T) {
	e := newEnv(t, nil)
	v, files := imageVersion("20261101", map[string][]byte{"linux": content("k", 100)})
	ss := newSourceServer(t, v)
	ss.addFiles(files)
	e.importURL(ss.url())
	flipByte(t, e.s.blobPath(sum(content("k", 100))))
	e.cfg.ScrubAtOpen = true
	e.reopen()
	if vi, err := e.s.Version(v.ID()); err != nil || vi.Usable {
		t.Fatalf("flipped version after scrub at open: %+v %v", vi, err)
	}
	var d events.ImageCorrupt
	ev := e.rec.ofType(events.TypeImageCorrupt)
	if len(ev) != 1 || ev[0].DecodeData(&d) != nil || d.DetectedBy != "open" {
		t.Fatalf("corrupt events %v", ev)
	}
}

// TestBadManifestQuarantinedAtOpen: a stored version manifest that parses
// but no longer describes a valid version (its id does not match its
// fields) is moved aside at open, not loaded.
func TestBadManifestQuarantinedAtOpen(t *testing.T) {
	e := newEnv(t, nil)
	v, files := imageVersion("20261101", map[string][]byte{"linux": content("k", 100)})
	ss := newSourceServer(t, v)
	ss.addFiles(files)
	e.importURL(ss.url())
	name := versionFileName(v.ID())
	p := filepath.Join(e.dir, "images", "versions", name)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["version"] = "20261102"
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	if ids := e.ids(); len(ids) != 0 {
		t.Fatalf("versions after a bad manifest: %v", ids)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "images", "quarantine", "version-"+name)); err != nil {
		t.Fatalf("bad manifest not quarantined: %v", err)
	}
}

func TestGCNeverRemovesWhatABootNeeds(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.KeepNewest = 1; c.InFlightWindow = 10 * time.Minute })
	shared := content("shared-initrd", 700)
	var vs []SourceVersion
	ss := newSourceServer(t)
	for _, ver := range []string{"20260101", "20260201", "20260301", "20260401"} {
		v, f := imageVersion(ver, map[string][]byte{"linux": content("k"+ver, 300), "initrd": shared})
		vs = append(vs, v)
		ss.addFiles(f)
	}
	ss.setManifest(vs...)
	e.importURL(ss.url())
	referenced, handedOut, old, newest := vs[0].ID(), vs[1].ID(), vs[2].ID(), vs[3].ID()

	e.clock.Advance(time.Hour) // every import is long past the window
	if err := e.s.SetReferences("machine/m1", referenced); err != nil {
		t.Fatal(err)
	}
	f, err := e.s.OpenFile(context.Background(), handedOut+"/linux")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e.clock.Advance(time.Minute) // "a moment ago"

	dry, err := e.s.GC(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dry.Versions, []string{old}) || len(dry.Blobs) != 1 || dry.Blobs[0].SHA256 != sum(content("k20260301", 300)) || dry.BytesFreed != 300 {
		t.Fatalf("dry run %+v", dry)
	}
	if len(e.ids()) != 4 || len(e.files("blobs")) != 5 || len(e.rec.ofType(events.TypeImageRemoved)) != 0 {
		t.Fatal("dry run removed something")
	}
	wantKept := []KeptVersion{{referenced, KeptReferenced}, {handedOut, KeptInFlight}, {newest, KeptNewest}}
	if !slices.Equal(dry.Kept, wantKept) {
		t.Fatalf("kept %+v", dry.Kept)
	}

	rep, err := e.s.GC(context.Background(), false)
	if err != nil || !slices.Equal(rep.Versions, dry.Versions) || !slices.Equal(rep.Blobs, dry.Blobs) {
		t.Fatalf("gc %+v %v", rep, err)
	}
	if ids := e.ids(); !slices.Equal(ids, []string{referenced, handedOut, newest}) {
		t.Fatalf("after gc: %v", ids)
	}
	if _, err := os.Stat(e.s.blobPath(sum(shared))); err != nil {
		t.Fatal("gc removed a blob that remaining versions use")
	}
	removed := e.rec.ofType(events.TypeImageRemoved)
	var d events.ImageRemoved
	if len(removed) != 1 || removed[0].DecodeData(&d) != nil || d.VersionID != old || d.Reason != "gc" {
		t.Fatalf("removed events %v", removed)
	}
	if len(e.rec.ofType(events.TypeImageBlobRemoved)) != 1 {
		t.Fatal("blob removal not an event")
	}

	// Past the window the handed-out version goes; the descriptor a
	// transfer holds still reads the whole file.
	e.clock.Advance(10 * time.Minute)
	rep, err = e.s.GC(context.Background(), false)
	if err != nil || !slices.Equal(rep.Versions, []string{handedOut}) {
		t.Fatalf("second gc %+v %v", rep, err)
	}
	if b := readAll(t, f); !bytes.Equal(b, content("k20260201", 300)) {
		t.Fatal("open file changed under its reader")
	}
	// The referenced one goes once its boot decision lets go of it; the
	// newest never does.
	if err := e.s.SetReferences("machine/m1"); err != nil {
		t.Fatal(err)
	}
	rep, _ = e.s.GC(context.Background(), false)
	if !slices.Equal(rep.Versions, []string{referenced}) || !slices.Equal(e.ids(), []string{newest}) {
		t.Fatalf("third gc %+v, left %v", rep, e.ids())
	}
	if n := len(e.files("blobs")); n != 2 {
		t.Fatalf("%d blobs left, want 2", n)
	}
}

func TestDeleteRefusesWhileInUse(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.InFlightWindow = 5 * time.Minute })
	v, files := imageVersion("20261101", map[string][]byte{"linux": content("k", 100)})
	ss := newSourceServer(t, v)
	ss.addFiles(files)
	e.importURL(ss.url())
	id := v.ID()

	_, err := e.s.Delete(context.Background(), id)
	wantCode(t, err, rackplane.ECONFLICT) // just imported counts as handed out
	e.clock.Advance(time.Hour)
	e.s.SetReferences("machine/a", id)
	e.s.SetReferences("machine/b", id, "ubuntu/amd64/ga-24.04/noble/stable/not-yet")
	if vi, _ := e.s.Version(id); !slices.Equal(vi.References, []string{"machine/a", "machine/b"}) {
		t.Fatalf("references %v", vi.References)
	}
	wantCode(t, e.s.SetReferences("machine/c", "../etc"), rackplane.EINVALID)
	wantCode(t, e.s.SetReferences(""), rackplane.EINVALID)
	e.reopen() // references persist; a restart counts as a hand-out
	e.clock.Advance(time.Hour)
	_, err = e.s.Delete(context.Background(), id)
	wantCode(t, err, rackplane.ECONFLICT)
	e.s.SetReferences("machine/a")
	e.s.SetReferences("machine/b")
	e.s.Touch(id)
	_, err = e.s.Delete(context.Background(), id)
	wantCode(t, err, rackplane.ECONFLICT)
	e.clock.Advance(6 * time.Minute)
	rep, err := e.s.Delete(context.Background(), id)
	if err != nil || rep.BytesFreed != 100 {
		t.Fatalf("delete %+v %v", rep, err)
	}
	_, err = e.s.Delete(context.Background(), id)
	wantCode(t, err, rackplane.ENOTFOUND)
	var d events.ImageRemoved
	ev := e.rec.ofType(events.TypeImageRemoved)
	if len(ev) != 1 || ev[0].DecodeData(&d) != nil || d.Reason != "delete" {
		t.Fatalf("removed events %v", ev)
	}
}

func TestOpenFileStaysInsideTheStore(t *testing.T) {
	e := newEnv(t, nil)
	v, files := imageVersion("20261101", map[string][]byte{"linux": content("k", 100)})
	ss := newSourceServer(t, v)
	ss.addFiles(files)
	e.importURL(ss.url())
	for _, tc := range []struct {
		path string
		code string
	}{
		{"ubuntu/amd64/ga-24.04/noble/stable/20261101/linux", ""},
		{"/ubuntu/amd64/ga-24.04/noble/stable/20261101/linux", ""},
		{"ubuntu/amd64/ga-24.04/noble/stable/20261101/initrd", rackplane.ENOTFOUND},
		{"ubuntu/amd64/ga-24.04/noble/stable/20261102/linux", rackplane.ENOTFOUND},
		{"ubuntu/amd64/ga-24.04/noble/stable/../20261101/linux", rackplane.EINVALID},
		{"../../../../../../etc/passwd", rackplane.EINVALID},
		{"/etc/passwd", rackplane.EINVALID},
		{"ubuntu/amd64/ga-24.04/noble/stable/20261101/.linux", rackplane.EINVALID},
		{"ubuntu/amd64/ga-24.04/noble//20261101/linux", rackplane.EINVALID},
		{"blobs/ab/" + sum(content("k", 100)), rackplane.EINVALID},
		{"bootloaders/pxelinux/amd64/1/pxelinux.0", rackplane.ENOTFOUND},
		{"", rackplane.EINVALID},
	} {
		f, err := e.s.OpenFile(context.Background(), tc.path)
		if tc.code == "" {
			if err != nil {
				t.Fatalf("%q: %v", tc.path, err)
			}
			if f.Size != 100 || f.VersionID != v.ID() || f.Name != "linux" || !bytes.Equal(readAll(t, f), content("k", 100)) || !f.ModTime.Equal(e.clock.Now()) {
				t.Fatalf("%q: %+v", tc.path, f)
			}
			f.Close()
			continue
		}
		if !isCode(err, tc.code) {
			t.Fatalf("%q: want %s, got %v", tc.path, tc.code, err)
		}
	}
}

func TestCapabilities(t *testing.T) {
	e := newEnv(t, nil)
	v1, f1 := imageVersion("9", map[string][]byte{"linux": content("a", 10)})
	v2, f2 := imageVersion("10", map[string][]byte{"linux": content("b", 10)})
	bl := SourceVersion{Kind: KindBootloader, Bootloader: "pxelinux", Arch: "amd64", Version: "6.04",
		Files: []SourceFile{{Name: "pxelinux.0", SHA256: sum(content("p", 10)), Size: 10, Path: "bl/pxelinux.0"}}}
	ss := newSourceServer(t, v1, v2, bl)
	ss.addFiles(f1)
	ss.addFiles(f2)
	ss.addFiles(map[string][]byte{"bl/pxelinux.0": content("p", 10)})
	e.importURL(ss.url())
	c := e.s.Capabilities()
	got := c.OS["ubuntu"]["noble"]["amd64/ga-24.04"]
	if len(got) != 2 || got[0].Version != "10" || got[1].Version != "9" || got[0].Label != "stable" || got[0].Files[0].SHA256 != sum(content("b", 10)) {
		t.Fatalf("os capabilities %+v", got)
	}
	b := c.Bootloaders["pxelinux"]["amd64"]
	if len(b) != 1 || b[0].ID != "bootloaders/pxelinux/amd64/6.04" {
		t.Fatalf("bootloaders %+v", c.Bootloaders)
	}
	f, err := e.s.OpenFile(context.Background(), "bootloaders/pxelinux/amd64/6.04/pxelinux.0")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestOpenIsExclusive(t *testing.T) {
	e := newEnv(t, nil)
	_, err := Open(context.Background(), e.cfg)
	wantCode(t, err, rackplane.ECONFLICT)
}

func TestConfigErrorsSayWhatToFix(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{DataDir: "relative"},
		{DataDir: "/tmp", Publisher: newRecorder(t)},
		{DataDir: "/tmp", KeepNewest: -1},
	} {
		_, err := Open(context.Background(), cfg)
		wantCode(t, err, rackplane.EINVALID)
	}
}

// TestUnreadableManifestQuarantinedAtOpen: a version manifest that is not
// JSON, or whose fields do not make the id it is stored under, is moved to
// quarantine when the store opens, and the other versions stay.
func TestUnreadableManifestQuarantinedAtOpen(t *testing.T) {
	tests := []struct {
		name   string
		damage func(stored []byte) []byte
	}{
		{"not JSON", func(b []byte) []byte { return b[:len(b)/2] }},
		{"fields that do not make its id", func(b []byte) []byte {
			return regexp.MustCompile(`"version":\s*"20261101"`).ReplaceAll(b, []byte(`"version": "20261199"`))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			v1, f1 := imageVersion("20261101", map[string][]byte{"linux": content("k1", 100)})
			v2, f2 := imageVersion("20261102", map[string][]byte{"linux": content("k2", 100)})
			ss := newSourceServer(t, v1, v2)
			ss.addFiles(f1)
			ss.addFiles(f2)
			e.importURL(ss.url())
			name := versionFileName(v1.ID())
			path := filepath.Join(e.s.versionDir, name)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			damaged := tt.damage(b)
			if bytes.Equal(damaged, b) {
				t.Fatalf("the manifest was not damaged:\n%s", b)
			}
			if err := os.WriteFile(path, damaged, 0o644); err != nil {
				t.Fatal(err)
			}
			e.reopen()
			if got := e.ids(); !slices.Equal(got, []string{v2.ID()}) {
				t.Fatalf("versions after reopening: %v, want only %s", got, v2.ID())
			}
			if _, err := os.Stat(filepath.Join(e.dir, "images", "quarantine", "version-"+name)); err != nil {
				t.Fatalf("manifest not quarantined: %v", err)
			}
		})
	}
}

// TestSharedFileOutlivesItsVersion: a file handed out shared is one
// descriptor for every transfer, and a transfer still reads it whole after
// GC removed its version; the descriptor is closed once the last transfer
// lets go (its disk space then freed), and the next request finds
// nothing.
func TestSharedFileOutlivesItsVersion(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.KeepNewest = 1; c.InFlightWindow = time.Minute })
	old := content("k1", 5000)
	v1, f1 := imageVersion("20260101", map[string][]byte{"linux": old})
	v2, f2 := imageVersion("20260201", map[string][]byte{"linux": content("k2", 5000)})
	ss := newSourceServer(t, v1, v2)
	ss.addFiles(f1)
	ss.addFiles(f2)
	e.importURL(ss.url())
	ctx := context.Background()
	a, id, err := e.s.OpenShared(ctx, v1.ID()+"/linux")
	if err != nil || id != v1.ID() || a.Size != int64(len(old)) {
		t.Fatalf("OpenShared: %+v %q %v", a, id, err)
	}
	b, _, err := e.s.OpenShared(ctx, v1.ID()+"/linux")
	if err != nil || b.File != a.File {
		t.Fatalf("a second transfer got another descriptor (%v)", err)
	}
	b.Release()

	e.clock.Advance(time.Hour)
	if rep, err := e.s.GC(ctx, false); err != nil || len(rep.Versions) != 1 || rep.Versions[0] != v1.ID() {
		t.Fatalf("gc %+v %v", rep, err)
	}
	got := make([]byte, len(old))
	if _, err := a.File.ReadAt(got, 0); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("the held file after GC: %v", err)
	}
	a.Release()
	if _, err := a.File.ReadAt(got, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("released by its last transfer, the file is still open (%v)", err)
	}
	_, _, err = e.s.OpenShared(ctx, v1.ID()+"/linux")
	wantCode(t, err, rackplane.ENOTFOUND)
}

package images

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

func TestImportTwiceDownloadsNothingTheSecondTime(t *testing.T) {
	for _, tc := range []struct {
		name               string
		etag, lastModified bool
	}{
		{"etag and last-modified", true, true},
		{"etag only", true, false},
		{"last-modified only", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			v, files := imageVersion("20261101", map[string][]byte{"linux": content("k", 3000), "initrd": content("i", 5000)})
			ss := newSourceServer(t, v)
			ss.etag, ss.lastModified = tc.etag, tc.lastModified
			ss.addFiles(files)

			first := e.importURL(ss.url())
			if first.State != ImportSucceeded || first.Unchanged || first.BytesDone != 8000 || first.BytesTotal != 8000 || first.FilesDone != 2 {
				t.Fatalf("first import: %+v", first)
			}
			gets := ss.totalFileGets()
			if gets != 2 {
				t.Fatalf("first import fetched %d files, want 2", gets)
			}
			second := e.importURL(ss.url())
			if !second.Unchanged || second.BytesDone != 0 || second.FilesDone != 0 {
				t.Fatalf("second import: %+v", second)
			}
			fileGets, conditional, statuses := ss.stats()
			if ss.totalFileGets() != gets {
				t.Fatalf("second import fetched files: %v", fileGets)
			}
			if conditional != 1 || !slices.Equal(statuses, []int{http.StatusOK, http.StatusNotModified}) {
				t.Fatalf("source saw %d conditional requests, statuses %v; want 1 and [200 304]", conditional, statuses)
			}
			if got := e.ids(); len(got) != 1 || got[0] != "ubuntu/amd64/ga-24.04/noble/stable/20261101" {
				t.Fatalf("versions %v", got)
			}
			if n := len(e.rec.ofType(events.TypeImageImported)); n != 1 {
				t.Fatalf("%d imported events, want 1 (the second import changed nothing)", n)
			}
		})
	}
}

func TestSameFileInTwoVersionsIsStoredOnce(t *testing.T) {
	e := newEnv(t, nil)
	kernel := content("kernel", 4096)
	v1, f1 := imageVersion("20261101", map[string][]byte{"linux": kernel, "initrd": content("i1", 1000)})
	v2, f2 := imageVersion("20261102", map[string][]byte{"linux": kernel, "initrd": content("i2", 1000)})
	ss := newSourceServer(t, v1, v2)
	ss.addFiles(f1)
	ss.addFiles(f2)
	st := e.importURL(ss.url())
	if len(st.Versions) != 2 || st.BytesTotal != 4096+2000 || st.BytesDone != 4096+2000 {
		t.Fatalf("import: %+v", st)
	}
	if got := len(e.files("blobs")); got != 3 {
		t.Fatalf("%d blobs stored, want 3 (the kernel once)", got)
	}
	if gets, _, _ := ss.stats(); gets["20261101/linux"]+gets["20261102/linux"] != 1 {
		t.Fatalf("shared kernel fetched %v times", gets)
	}
	for _, p := range []string{"ubuntu/amd64/ga-24.04/noble/stable/20261101/linux", "ubuntu/amd64/ga-24.04/noble/stable/20261102/linux"} {
		f, err := e.s.OpenFile(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if b := readAll(t, f); !bytes.Equal(b, kernel) {
			t.Fatalf("%s: wrong content", p)
		}
		f.Close()
	}
}

func TestBadSourcesLeaveNothingHalfImported(t *testing.T) {
	good := content("good", 2000)
	bad := content("bad", 3000)
	for _, tc := range []struct {
		name  string
		code  string
		msg   string
		setup func(ss *sourceServer, release chan struct{})
	}{
		{"manifest 404", rackplane.ENOTFOUND, "HTTP 404", func(ss *sourceServer, _ chan struct{}) {
			ss.manifestHook = func(w http.ResponseWriter, r *http.Request) bool { http.NotFound(w, r); return true }
		}},
		{"manifest 500", rackplane.EUNAVAILABLE, "HTTP 500", func(ss *sourceServer, _ chan struct{}) {
			ss.manifestHook = func(w http.ResponseWriter, r *http.Request) bool { w.WriteHeader(500); return true }
		}},
		{"manifest breaks its schema", rackplane.EINVALID, "image_manifest.v1", func(ss *sourceServer, _ chan struct{}) {
			ss.manifestHook = func(w http.ResponseWriter, r *http.Request) bool {
				w.Write([]byte(`{"format":"rackplane.image_manifest.v1","versions":[{"kind":"image","os":"ubuntu","files":[]}]}`))
				return true
			}
		}},
		{"manifest not JSON", rackplane.EINVALID, "not JSON", func(ss *sourceServer, _ chan struct{}) {
			ss.manifestHook = func(w http.ResponseWriter, r *http.Request) bool { w.Write([]byte("<html>")); return true }
		}},
		{"path leaves the source", rackplane.EINVALID, "leaves the source", func(ss *sourceServer, _ chan struct{}) {
			v, _ := imageVersion("1", map[string][]byte{"linux": good})
			v.Files[0].Path = "../../etc/passwd"
			ss.manifest = manifestBytes(t, v)
		}},
		{"hash mismatch", rackplane.EINVALID, "sha256 is", func(ss *sourceServer, _ chan struct{}) {
			ss.files["20261101/squashfs"] = append(bytes.Clone(bad[:len(bad)-1]), 'x')
		}},
		{"file too long", rackplane.EINVALID, "more than the", func(ss *sourceServer, _ chan struct{}) {
			ss.files["20261101/squashfs"] = append(bytes.Clone(bad), 'x')
		}},
		{"file too short", rackplane.EINVALID, "source sent 2999 bytes", func(ss *sourceServer, _ chan struct{}) {
			ss.files["20261101/squashfs"] = bad[:2999]
		}},
		{"more than the disk holds", rackplane.ECONFLICT, "file system has", func(ss *sourceServer, _ chan struct{}) {
			// A source may say anything of its sizes: the store does
			// not start what it cannot hold.
			var fs syscall.Statfs_t
			if err := syscall.Statfs(t.TempDir(), &fs); err != nil {
				t.Fatal(err)
			}
			files := map[string][]byte{}
			for i := int64(0); i <= int64(fs.Bavail)*int64(fs.Bsize)/MaxFileSize; i++ {
				files[fmt.Sprintf("part%d", i)] = content(fmt.Sprint(i), 10)
			}
			v, _ := imageVersion("1", files)
			for i := range v.Files {
				v.Files[i].Size = MaxFileSize
			}
			ss.manifest = manifestBytes(t, v)
		}},
		{"file 404", rackplane.ENOTFOUND, "HTTP 404 for file squashfs", func(ss *sourceServer, _ chan struct{}) {
			delete(ss.files, "20261101/squashfs")
		}},
		{"manifest hangs", rackplane.ETIMEOUT, "stopped sending", func(ss *sourceServer, release chan struct{}) {
			ss.manifestHook = func(w http.ResponseWriter, r *http.Request) bool { hang(r, release); return true }
		}},
		{"manifest body hangs", rackplane.ETIMEOUT, "stopped sending", func(ss *sourceServer, release chan struct{}) {
			ss.manifestHook = func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Content-Length", "1000")
				w.Write([]byte(`{"format":`))
				w.(http.Flusher).Flush()
				hang(r, release)
				return true
			}
		}},
		{"file hangs midway", rackplane.ETIMEOUT, "stopped sending", func(ss *sourceServer, release chan struct{}) {
			ss.fileHook = func(w http.ResponseWriter, r *http.Request, p string) bool {
				if p != "20261101/squashfs" {
					return false
				}
				w.Header().Set("Content-Length", "3000")
				w.Write(bad[:1000])
				w.(http.Flusher).Flush()
				hang(r, release)
				return true
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.StallTimeout = 300 * time.Millisecond })
			v, files := imageVersion("20261101", map[string][]byte{"squashfs": bad, "linux": good})
			ss := newSourceServer(t, v)
			ss.addFiles(files)
			release := make(chan struct{})
			defer close(release)
			ss.with(func() { tc.setup(ss, release) })

			st, err := e.s.Import(context.Background(), Source{URL: ss.url()})
			wantCode(t, err, tc.code)
			if msg := rackplane.ErrorMessage(err); !strings.Contains(msg, tc.msg) {
				t.Fatalf("message %q does not say %q", msg, tc.msg)
			}
			if st.State != ImportFailed || st.Code != tc.code {
				t.Fatalf("status %+v", st)
			}
			if ids := e.ids(); len(ids) != 0 {
				t.Fatalf("versions visible after a failed import: %v", ids)
			}
			for _, sub := range []string{"versions", "blobs", "tmp"} {
				if f := e.files(sub); len(f) != 0 {
					t.Fatalf("%s left behind: %v", sub, f)
				}
			}
			if _, err := e.s.OpenFile(context.Background(), "ubuntu/amd64/ga-24.04/noble/stable/20261101/linux"); !isCode(err, rackplane.ENOTFOUND) {
				t.Fatalf("open of a failed version: %v", err)
			}
			failed := e.rec.ofType(events.TypeImageImportFailed)
			if len(failed) != 1 {
				t.Fatalf("%d import_failed events", len(failed))
			}
			var d events.ImageImportFailed
			if err := failed[0].DecodeData(&d); err != nil || d.Code != tc.code || d.ImportID != st.ID {
				t.Fatalf("import_failed data %+v (%v)", d, err)
			}
		})
	}
}

// hang blocks a handler until the client goes away or the test ends.
func hang(r *http.Request, release chan struct{}) {
	select {
	case <-r.Context().Done():
	case <-release:
	}
}

func TestSourceMayNotChangeAVersion(t *testing.T) {
	e := newEnv(t, nil)
	v, files := imageVersion("20261101", map[string][]byte{"linux": content("a", 100)})
	ss := newSourceServer(t, v)
	ss.addFiles(files)
	e.importURL(ss.url())
	v2, files2 := imageVersion("20261101", map[string][]byte{"linux": content("b", 100)})
	ss.setManifest(v2)
	ss.addFiles(files2)
	before := ss.totalFileGets()
	_, err := e.s.Import(context.Background(), Source{URL: ss.url()})
	wantCode(t, err, rackplane.ECONFLICT)
	if ss.totalFileGets() != before {
		t.Fatal("a refused import fetched files")
	}
	f, err := e.s.OpenFile(context.Background(), "ubuntu/amd64/ga-24.04/noble/stable/20261101/linux")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.SHA256 != sum(content("a", 100)) {
		t.Fatal("stored version changed")
	}
}

func TestOneImportPerSourceAtATime(t *testing.T) {
	e := newEnv(t, nil)
	v, files := imageVersion("20261101", map[string][]byte{"linux": content("a", 1000)})
	ss := newSourceServer(t, v)
	ss.addFiles(files)
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	ss.with(func() {
		ss.fileHook = func(w http.ResponseWriter, r *http.Request, p string) bool {
			started <- struct{}{}
			hang(r, release)
			return false
		}
	})
	st, err := e.s.StartImport(Source{URL: ss.url()})
	if err != nil {
		t.Fatal(err)
	}
	if st.ID == "" || st.State != ImportRunning {
		t.Fatalf("started import: %+v", st)
	}
	<-started
	_, err = e.s.StartImport(Source{URL: ss.url()})
	wantCode(t, err, rackplane.ECONFLICT)
	if !strings.Contains(rackplane.ErrorMessage(err), st.ID) {
		t.Fatalf("conflict does not name the running import: %v", err)
	}
	running := e.s.Imports()
	if len(running) != 1 || running[0].State != ImportRunning || running[0].BytesTotal != 1000 {
		t.Fatalf("imports while running: %+v", running)
	}
	close(release)
	final, err := e.s.WaitImport(context.Background(), st.ID)
	if err != nil || final.State != ImportSucceeded || final.BytesDone != 1000 || final.FinishedAt == nil {
		t.Fatalf("final %+v %v", final, err)
	}
	if _, err := e.s.StartImport(Source{URL: ss.url()}); err != nil {
		t.Fatalf("import after the first finished: %v", err)
	}
}

func TestImportFromLocalDirectory(t *testing.T) {
	e := newEnv(t, nil)
	src := t.TempDir()
	v, files := imageVersion("7", map[string][]byte{"linux": content("a", 100), "initrd": content("b", 200)})
	v.OS, v.Release = "debian", "bookworm"
	for p, b := range files {
		os.MkdirAll(filepath.Join(src, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(src, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeManifest(t, src, v)
	st, err := e.s.Import(context.Background(), Source{Dir: src})
	if err != nil || st.BytesDone != 300 {
		t.Fatalf("import %+v %v", st, err)
	}
	f, err := e.s.OpenFile(context.Background(), "debian/amd64/ga-24.04/bookworm/stable/7/initrd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Size != 200 || !bytes.Equal(readAll(t, f), content("b", 200)) {
		t.Fatal("wrong content")
	}

	// A symlink out of the directory is refused, whatever the manifest says.
	escape := t.TempDir()
	secret := content("secret", 50)
	os.WriteFile(filepath.Join(escape, "secret"), secret, 0o644)
	os.Symlink(filepath.Join(escape, "secret"), filepath.Join(src, "link"))
	v2 := SourceVersion{Kind: KindImage, OS: "debian", Release: "bookworm", Arch: "amd64", Subarch: "ga-24.04", Label: "stable", Version: "8",
		Files: []SourceFile{{Name: "linux", SHA256: sum(secret), Size: 50, Path: "link"}}}
	writeManifest(t, src, v2)
	_, err = e.s.Import(context.Background(), Source{Dir: src})
	wantCode(t, err, rackplane.ENOTFOUND)
}

func writeManifest(t *testing.T, dir string, vs ...SourceVersion) {
	t.Helper()
	b, err := marshalIndent(Manifest{Format: ManifestFormat, Versions: vs})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestImportSourceValidation(t *testing.T) {
	e := newEnv(t, nil)
	for _, src := range []Source{
		{},
		{URL: "ftp://example.com/m.json"},
		{URL: "http://"},
		{Dir: "relative/dir"},
		{URL: "http://x/m.json", Dir: "/tmp"},
	} {
		_, err := e.s.StartImport(src)
		wantCode(t, err, rackplane.EINVALID)
	}
}

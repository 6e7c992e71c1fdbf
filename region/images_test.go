package region_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack"
)

type importStatus struct {
	ID         string
	Source     string
	State      string
	BytesDone  int64 `json:"bytes_done"`
	BytesTotal int64 `json:"bytes_total"`
	FilesDone  int64 `json:"files_done"`
	FilesTotal int64 `json:"files_total"`
	Versions   []string
	Code       string
	Error      string
}

type imageVersion struct {
	ID         string
	Size       int64
	Usable     bool
	References []string
	Files      []struct {
		Name   string
		SHA256 string
		Size   int64
	}
}

type imageReport struct {
	DryRun     bool `json:"dry_run"`
	Versions   []string
	Blobs      []struct{ SHA256 string }
	BytesFreed int64 `json:"bytes_freed"`
	Kept       []struct{ ID, Reason string }
}

type apiError struct {
	Error struct{ Code, Message string }
}

// versionedSource is imageSource publishing its versions as version, with
// file contents of their own, so they share no stored file with others.
func versionedSource(t *testing.T, version string, specs ...string) string {
	t.Helper()
	dir := imageSource(t, specs...)
	editVersions(t, dir, func(v map[string]any) {
		v["version"] = version
		for _, f := range v["files"].([]any) {
			f := f.(map[string]any)
			body := []byte(version + " " + f["path"].(string))
			sum := sha256.Sum256(body)
			f["sha256"], f["size"] = hex.EncodeToString(sum[:]), len(body)
			if err := os.WriteFile(filepath.Join(dir, f["path"].(string)), body, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})
	return dir
}

// editVersions applies edit to every version of the manifest of the image
// source in dir.
func editVersions(t *testing.T, dir string, edit func(version map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, "manifest.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, v := range m["versions"].([]any) {
		edit(v.(map[string]any))
	}
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitImport polls an import's progress until it ends.
func (h *harness) waitImport(rackID, id string) importStatus {
	h.t.Helper()
	var st importStatus
	h.eventually(30*time.Second, "import "+id+" ends", func() error {
		st = importStatus{}
		if code := h.getJSON("/api/v1/racks/"+rackID+"/images/imports/"+id, &st); code != 200 {
			return fmt.Errorf("progress: %d", code)
		}
		if st.ID != id || st.State == "running" {
			return fmt.Errorf("import %+v", st)
		}
		return nil
	})
	return st
}

func (h *harness) images(rackID string) map[string]imageVersion {
	h.t.Helper()
	var out struct {
		RackID   string `json:"rack_id"`
		Versions []imageVersion
	}
	if code := h.getJSON("/api/v1/racks/"+rackID+"/images", &out); code != 200 || out.RackID != rackID {
		h.t.Fatalf("images: %d %+v", code, out)
	}
	m := map[string]imageVersion{}
	for _, v := range out.Versions {
		m[v.ID] = v
	}
	return m
}

// loggedEvents returns the data of the region's logged events of type typ
// from rack rackID.
func (h *harness) loggedEvents(rackID, typ string) []map[string]any {
	h.t.Helper()
	var page struct {
		Events []struct {
			Source string
			Data   map[string]any
		}
	}
	h.getJSON("/api/v1/events?limit=1000&type="+url.QueryEscape(typ), &page)
	var out []map[string]any
	for _, e := range page.Events {
		if e.Source == events.RackSource(rackID) {
			out = append(out, e.Data)
		}
	}
	return out
}

func TestImageStoreAPI(t *testing.T) {
	h := startRegion(t)
	var ahead atomic.Int64 // how far the image store's clock runs ahead
	cfg := rackConfig(h, filepath.Join(t.TempDir(), "rack-a"), 200*time.Millisecond)
	cfg.ImportSystemBootloaders = false
	clock := rack.WithImageClock(func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) })
	r, stop := startRackConfig(t, h, cfg, clock)
	id := r.ID()
	base := "/api/v1/racks/" + id + "/images"
	h.waitRackKnown(id)

	// Import through the API and watch it to its end.
	src := imageSource(t, "ubuntu/noble/amd64/ga-24.04", "ubuntu/jammy/amd64/ga-22.04")
	const noble, jammy = "ubuntu/amd64/ga-24.04/noble/stable/20261101", "ubuntu/amd64/ga-22.04/jammy/stable/20261101"
	var started importStatus
	if code := h.do("POST", base+"/imports", map[string]string{"dir": src}, &started); code != 202 || started.ID == "" ||
		(started.State != "running" && started.State != "succeeded") || started.Source == "" {
		t.Fatalf("start import: %d %+v", code, started)
	}
	st := h.waitImport(id, started.ID)
	if st.State != "succeeded" || st.FilesTotal != 4 || st.FilesDone != 4 || st.BytesTotal == 0 || st.BytesDone != st.BytesTotal ||
		!slices.Equal(sorted(st.Versions), []string{jammy, noble}) || st.Error != "" {
		t.Fatalf("first import: %+v", st)
	}
	var all struct {
		RackID  string `json:"rack_id"`
		Imports []importStatus
	}
	if code := h.getJSON(base+"/imports", &all); code != 200 || len(all.Imports) != 1 || all.Imports[0].ID != started.ID {
		t.Fatalf("imports: %d %+v", code, all)
	}

	imgs := h.images(id)
	for _, vid := range []string{noble, jammy} {
		v, ok := imgs[vid]
		var size int64
		for _, f := range v.Files {
			size += f.Size
		}
		if !ok || !v.Usable || v.Size == 0 || v.Size != size || len(v.Files) != 2 || len(v.References) != 0 {
			t.Fatalf("version %s: %+v (all: %v)", vid, v, imgs)
		}
	}
	if len(imgs) != 2 {
		t.Fatalf("versions: %v", imgs)
	}

	// The same source again downloads nothing.
	var again importStatus
	if code := h.do("POST", base+"/imports", map[string]string{"dir": src}, &again); code != 202 || again.ID == started.ID {
		t.Fatalf("second import: %d %+v", code, again)
	}
	st = h.waitImport(id, again.ID)
	if st.State != "succeeded" || st.BytesDone != 0 || st.FilesDone != 0 || len(st.Versions) != 2 {
		t.Fatalf("second import downloaded: %+v", st)
	}

	// A source that is not there fails, and says why.
	var bad importStatus
	if code := h.do("POST", base+"/imports", map[string]string{"dir": filepath.Join(src, "nothing-here")}, &bad); code != 202 {
		t.Fatalf("import of a missing dir: %d %+v", code, bad)
	}
	if st := h.waitImport(id, bad.ID); st.State != "failed" || st.Code == "" || st.Error == "" {
		t.Fatalf("import of a missing dir: %+v", st)
	}

	// The rack's events reached the region's log, once per version.
	h.eventually(5*time.Second, "image_imported events logged", func() error {
		var got []string
		for _, d := range h.loggedEvents(id, events.TypeImageImported) {
			if d["import_id"] != started.ID || d["bytes_downloaded"].(float64) == 0 {
				return fmt.Errorf("event %v", d)
			}
			got = append(got, d["version_id"].(string))
		}
		if !slices.Equal(sorted(got), []string{jammy, noble}) {
			return fmt.Errorf("image_imported for %v", got)
		}
		return nil
	})

	// Delete: refused while referenced or freshly handed out, done when neither.
	if err := r.Images().SetReferences("machine-x", noble); err != nil {
		t.Fatal(err)
	}
	if refs := h.images(id)[noble].References; !slices.Equal(refs, []string{"machine-x"}) {
		t.Fatalf("references of %s: %v", noble, refs)
	}
	var e apiError
	if code := h.do("DELETE", base+"/"+jammy, nil, &e); code != 409 || e.Error.Code != rackplane.ECONFLICT || !strings.Contains(e.Error.Message, "handed out") {
		t.Fatalf("delete of a version just imported: %d %+v", code, e)
	}
	ahead.Store(int64(2 * time.Hour))
	e = apiError{}
	if code := h.do("DELETE", base+"/"+noble, nil, &e); code != 409 || e.Error.Code != rackplane.ECONFLICT || !strings.Contains(e.Error.Message, "referenced") {
		t.Fatalf("delete of a referenced version: %d %+v", code, e)
	}
	var deleted imageReport
	if code := h.do("DELETE", base+"/"+jammy, nil, &deleted); code != 200 || !slices.Equal(deleted.Versions, []string{jammy}) ||
		len(deleted.Blobs) != 2 || deleted.BytesFreed != imgs[jammy].Size {
		t.Fatalf("delete of an unreferenced version: %d %+v", code, deleted)
	}
	if got := h.images(id); len(got) != 1 || got[noble].ID != noble {
		t.Fatalf("after delete: %v", got)
	}

	// GC: newer versions arrive; the old one goes once nothing references it.
	importInto(t, r, versionedSource(t, "20261201", "ubuntu/noble/amd64/ga-24.04"))
	importInto(t, r, versionedSource(t, "20261202", "ubuntu/noble/amd64/ga-24.04"))
	ahead.Store(int64(4 * time.Hour))
	var dry imageReport
	if code := h.do("POST", base+"/gc?dry_run=true", nil, &dry); code != 200 || !dry.DryRun || len(dry.Versions) != 0 ||
		!keptFor(dry, noble, "referenced") || len(dry.Kept) != 3 {
		t.Fatalf("gc dry run with the old version referenced: %d %+v", code, dry)
	}
	if err := r.Images().SetReferences("machine-x"); err != nil {
		t.Fatal(err)
	}
	dry = imageReport{}
	if code := h.do("POST", base+"/gc?dry_run=true", nil, &dry); code != 200 || !dry.DryRun ||
		!slices.Equal(dry.Versions, []string{noble}) || len(dry.Blobs) != 2 || dry.BytesFreed != imgs[noble].Size || len(dry.Kept) != 2 {
		t.Fatalf("gc dry run: %d %+v", code, dry)
	}
	if got := h.images(id); len(got) != 3 {
		t.Fatalf("the dry run removed something: %v", got)
	}
	var gc imageReport
	if code := h.do("POST", base+"/gc?dry_run=false", nil, &gc); code != 200 || gc.DryRun ||
		!slices.Equal(gc.Versions, dry.Versions) || len(gc.Blobs) != len(dry.Blobs) || gc.BytesFreed != dry.BytesFreed {
		t.Fatalf("gc removed other than the dry run listed: %d %+v, dry run %+v", code, gc, dry)
	}
	if got := h.images(id); len(got) != 2 || got[noble].ID != "" {
		t.Fatalf("after gc: %v", got)
	}
	h.eventually(5*time.Second, "image_removed events logged", func() error {
		var got []string
		for _, d := range h.loggedEvents(id, events.TypeImageRemoved) {
			got = append(got, fmt.Sprint(d["version_id"], ":", d["reason"]))
		}
		if want := []string{jammy + ":delete", noble + ":gc"}; !slices.Equal(got, want) {
			return fmt.Errorf("image_removed %v, want %v", got, want)
		}
		return nil
	})

	// Bad requests, unknown things.
	tests := []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"rack id not a uuid", "GET", "/api/v1/racks/rack-a/images", nil, 400, rackplane.EINVALID},
		{"unknown rack", "GET", "/api/v1/racks/" + uuid.NewString() + "/images", nil, 404, rackplane.ENOTFOUND},
		{"unknown rack import", "POST", "/api/v1/racks/" + uuid.NewString() + "/images/imports", map[string]string{"dir": src}, 404, rackplane.ENOTFOUND},
		{"unknown field", "POST", base + "/imports", map[string]string{"path": src}, 400, rackplane.EINVALID},
		{"no source", "POST", base + "/imports", map[string]string{}, 400, rackplane.EINVALID},
		{"two sources", "POST", base + "/imports", map[string]string{"dir": src, "url": "http://127.0.0.1/m.json"}, 400, rackplane.EINVALID},
		{"relative dir", "POST", base + "/imports", map[string]string{"dir": "images"}, 400, rackplane.EINVALID},
		{"not http", "POST", base + "/imports", map[string]string{"url": "ftp://example.org/m.json"}, 400, rackplane.EINVALID},
		{"bootloaders false", "POST", base + "/imports", map[string]bool{"system_bootloaders": false}, 400, rackplane.EINVALID},
		{"debian_netboot of an unknown arch", "POST", base + "/imports", map[string]any{"debian_netboot": map[string]any{"arches": []string{"i386"}}}, 400, rackplane.EINVALID},
		{"debian_netboot and a dir", "POST", base + "/imports", map[string]any{"debian_netboot": map[string]any{}, "dir": src}, 400, rackplane.EINVALID},
		{"simplestreams url and dir", "POST", base + "/imports", map[string]any{"simplestreams": map[string]any{"url": "http://127.0.0.1/", "dir": src}}, 400, rackplane.EINVALID},
		{"simplestreams unknown filter", "POST", base + "/imports", map[string]any{"simplestreams": map[string]any{"dir": src, "filters": map[string]any{"kflavor": []string{"generic"}}}}, 400, rackplane.EINVALID},
		{"simplestreams too many versions", "POST", base + "/imports", map[string]any{"simplestreams": map[string]any{"dir": src, "versions": 21}}, 400, rackplane.EINVALID},
		{"not json", "POST", base + "/imports", "dir=/srv", 400, rackplane.EINVALID},
		{"unknown import", "GET", base + "/imports/" + uuid.NewString(), nil, 404, rackplane.ENOTFOUND},
		{"import id too long", "GET", base + "/imports/" + strings.Repeat("x", 65), nil, 400, rackplane.EINVALID},
		{"unknown version", "DELETE", base + "/ubuntu/amd64/ga-24.04/noble/stable/19990101", nil, 404, rackplane.ENOTFOUND},
		{"not a version id", "DELETE", base + "/noble", nil, 400, rackplane.EINVALID},
		{"dry_run not a boolean", "POST", base + "/gc?dry_run=maybe", nil, 400, rackplane.EINVALID},
		{"timeout out of range", "GET", base + "?timeout=1h", nil, 400, rackplane.EINVALID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e apiError
			if code := h.do(tt.method, tt.path, tt.body, &e); code != tt.status || e.Error.Code != tt.code || e.Error.Message == "" {
				t.Fatalf("%s %s: %d %+v, want %d %s", tt.method, tt.path, code, e, tt.status, tt.code)
			}
		})
	}

	// A stopped rack: 503 that says so; bad input is still a 400.
	stop()
	e = apiError{}
	// Depending on whether the region has noticed yet, the rack does not
	// answer or is offline; either way it is a 503 that says why.
	if code := h.do("GET", base, nil, &e); code != 503 || e.Error.Code != rackplane.EUNAVAILABLE ||
		!strings.Contains(e.Error.Message, "does not answer") && !strings.Contains(e.Error.Message, "is offline since") {
		t.Fatalf("stopped rack: %d %+v", code, e)
	}
	if code := h.do("POST", base+"/imports", map[string]string{"url": "ftp://x"}, &e); code != 400 {
		t.Fatalf("bad import for a stopped rack: %d %+v", code, e)
	}
	h.eventually(5*time.Second, "rack offline", func() error {
		if got, _ := h.rack(id); got.Online {
			return fmt.Errorf("still online")
		}
		return nil
	})
	e = apiError{}
	if code := h.do("POST", base+"/gc", nil, &e); code != 503 || !strings.Contains(e.Error.Message, "offline since") {
		t.Fatalf("offline rack: %d %+v", code, e)
	}

	// Something takes the rack's requests but never answers: 504.
	nc, err := nats.Connect(h.ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Subscribe(events.RackRPCSubject(id, "images.list"), func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	e = apiError{}
	if code := h.do("GET", base+"?timeout=200ms", nil, &e); code != 504 || e.Error.Code != rackplane.ETIMEOUT || !strings.Contains(e.Error.Message, "200ms") {
		t.Fatalf("silent rack: %d %+v", code, e)
	}
}

func keptFor(rep imageReport, id, reason string) bool {
	for _, k := range rep.Kept {
		if k.ID == id {
			return k.Reason == reason
		}
	}
	return false
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

package region_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack"
	"github.com/rackplane/rackplane/rack/capabilities"
	"github.com/rackplane/rackplane/rack/images"
)

// imageSource writes a local image source directory offering one version
// of each os/release/arch/subarch given as "os/release/arch/subarch".
func imageSource(t testing.TB, specs ...string) string {
	t.Helper()
	dir := t.TempDir()
	var versions []map[string]any
	for _, spec := range specs {
		p := strings.Split(spec, "/")
		var files []map[string]any
		for _, name := range []string{"linux", "initrd.gz"} {
			body := []byte(spec + " " + name)
			sum := sha256.Sum256(body)
			rel := strings.ReplaceAll(spec, "/", "_") + "_" + name
			if err := os.WriteFile(filepath.Join(dir, rel), body, 0o644); err != nil {
				t.Fatal(err)
			}
			files = append(files, map[string]any{"name": name, "sha256": hex.EncodeToString(sum[:]), "size": len(body), "path": rel})
		}
		versions = append(versions, map[string]any{"kind": "image", "os": p[0], "release": p[1], "arch": p[2], "subarch": p[3],
			"label": "stable", "version": "20261101", "files": files})
	}
	b, _ := json.Marshal(map[string]any{"format": "rackplane.image_manifest.v1", "versions": versions})
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func importInto(t testing.TB, r *rack.Rack, dir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := r.Images().Import(ctx, images.Source{Dir: dir})
	if err != nil {
		t.Fatalf("import %s: %v (%+v)", dir, err, st)
	}
}

type osEntry struct {
	OS, Release, Arch, Subarch string
	Available                  bool
	RequiresLicenceKey         bool `json:"requires_licence_key"`
	LicenceKeySet              bool `json:"licence_key_set"`
	Racks                      []struct {
		ID, Name string
		Online   bool
		Versions []struct{ ID, Label, Version string }
	}
}

type osList struct {
	Live        bool
	OSes        []osEntry
	NotAnswered []struct{ ID, Name string } `json:"not_answered"`
	Answered    []struct{ ID, Name string }
}

// summary renders the registry as "os/release/arch/subarch:rack,rack(offline)".
func summary(l osList) string {
	var out []string
	for _, e := range l.OSes {
		var rs []string
		for _, r := range e.Racks {
			n := r.Name
			if !r.Online {
				n += "(offline)"
			}
			rs = append(rs, n)
		}
		avail := ""
		if !e.Available {
			avail = " unavailable"
		}
		out = append(out, fmt.Sprintf("%s/%s/%s/%s:%s%s", e.OS, e.Release, e.Arch, e.Subarch, strings.Join(rs, ","), avail))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func (h *harness) do(method, path string, body any, out any) int {
	h.t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, h.api+path, rd)
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			h.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

func TestOSRegistry(t *testing.T) {
	h := startRegion(t)
	const interval = 200 * time.Millisecond
	base := t.TempDir()
	ra, _ := startRack(t, h, filepath.Join(base, "rack-a"), interval)
	rb, _ := startRack(t, h, filepath.Join(base, "rack-b"), interval)
	rcDir := filepath.Join(base, "rack-c")
	rc, stopC := startRack(t, h, rcDir, interval)
	importInto(t, ra, imageSource(t, "ubuntu/noble/amd64/ga-24.04"))
	importInto(t, rb, imageSource(t, "ubuntu/noble/amd64/ga-24.04", "ubuntu/jammy/amd64/ga-22.04"))
	importInto(t, rc, imageSource(t, "windows/win2022/amd64/generic"))

	want := "ubuntu/jammy/amd64/ga-22.04:rack-b ubuntu/noble/amd64/ga-24.04:rack-a,rack-b windows/win2022/amd64/generic:rack-c"
	h.eventually(10*time.Second, "the union of three racks", func() error {
		var l osList
		h.getJSON("/api/v1/os", &l)
		if got := summary(l); got != want {
			return fmt.Errorf("registry %q", got)
		}
		return nil
	})

	// Per rack: rack-c has exactly windows.
	var rcCaps struct {
		RackID       string `json:"rack_id"`
		Available    bool
		Capabilities events.Capabilities
	}
	if code := h.getJSON("/api/v1/racks/"+rc.ID()+"/capabilities", &rcCaps); code != 200 {
		t.Fatalf("capabilities: %d", code)
	}
	if len(rcCaps.Capabilities.OSes) != 1 || rcCaps.Capabilities.OSes[0].Name != "windows" || !rcCaps.Available ||
		rcCaps.Capabilities.OSes[0].Releases[0].Arches[0].Versions[0].ID != "windows/amd64/generic/win2022/stable/20261101" {
		t.Fatalf("rack-c capabilities: %+v", rcCaps)
	}

	// The live query agrees, with every rack answering.
	var live osList
	h.getJSON("/api/v1/os?live=true&timeout=2s", &live)
	if got := summary(live); !live.Live || got != want || len(live.Answered) != 3 || len(live.NotAnswered) != 0 {
		t.Fatalf("live registry %q answered %v not answered %v", got, live.Answered, live.NotAnswered)
	}

	// Licence keys are checked by a rack that provides the release.
	var e struct {
		Error struct{ Code, Message string }
	}
	if code := h.do("PUT", "/api/v1/os/windows/win2022/licence-key", map[string]string{"key": "not-a-key"}, &e); code != 400 || !strings.Contains(e.Error.Message, "refused") {
		t.Fatalf("bad key: %d %+v", code, e)
	}
	const key = "ABCDE-12345-FGHIJ-67890-KLMNO"
	var stored struct {
		Masked      string
		ValidatedBy string `json:"validated_by"`
	}
	if code := h.do("PUT", "/api/v1/os/windows/win2022/licence-key", map[string]string{"key": key}, &stored); code != 200 ||
		stored.ValidatedBy != rc.ID() || strings.Contains(stored.Masked, "ABCDE") || !strings.HasSuffix(stored.Masked, "LMNO") {
		t.Fatalf("good key: %d %+v", code, stored)
	}
	for _, path := range []string{"/api/v1/os/windows/win2022/licence-key", "/api/v1/os", "/api/v1/events?limit=1000"} {
		var raw json.RawMessage
		h.getJSON(path, &raw)
		if strings.Contains(string(raw), "12345") {
			t.Fatalf("%s shows the key: %s", path, raw)
		}
	}
	if code := h.do("PUT", "/api/v1/os/ubuntu/noble/licence-key", map[string]string{"key": key}, &e); code != 400 {
		t.Fatalf("key for a release that takes none: %d %+v", code, e)
	}

	// A snapshot that breaks its schema is rejected; the previous stays.
	bad, _ := events.New(events.RackSource(rc.ID()), events.TypeCapabilitiesReported, events.RackStreamName(rc.ID()), time.Now(),
		map[string]any{"digest": "nope", "oses": []any{}, "bootloaders": []any{}, "storage_providers": []any{}})
	raw, _ := events.Encode(bad)
	if _, err := h.js.Publish(context.Background(), events.RackEventSubject(rc.ID(), bad.Type), raw); err != nil {
		t.Fatal(err)
	}
	h.eventually(5*time.Second, "bad snapshot rejected", func() error {
		var rej struct {
			Rejected []struct {
				EventID string `json:"event_id"`
				Reason  string
			} `json:"rejected_events"`
		}
		h.getJSON("/api/v1/rejected-events", &rej)
		for _, r := range rej.Rejected {
			if r.EventID == bad.ID && r.Reason == events.ReasonSchema {
				return nil
			}
		}
		return fmt.Errorf("not rejected: %+v", rej)
	})
	h.getJSON("/api/v1/racks/"+rc.ID()+"/capabilities", &rcCaps)
	if len(rcCaps.Capabilities.OSes) != 1 || rcCaps.Capabilities.OSes[0].Name != "windows" {
		t.Fatalf("previous snapshot not in force: %+v", rcCaps.Capabilities)
	}

	// Stop rack-c: windows is no longer available, and keys cannot be set.
	stopC()
	h.eventually(5*time.Second, "rack-c's OS unavailable", func() error {
		var l osList
		h.getJSON("/api/v1/os", &l)
		if got, want := summary(l), "ubuntu/jammy/amd64/ga-22.04:rack-b ubuntu/noble/amd64/ga-24.04:rack-a,rack-b windows/win2022/amd64/generic:rack-c(offline) unavailable"; got != want {
			return fmt.Errorf("registry %q", got)
		}
		return nil
	})
	h.getJSON("/api/v1/racks/"+rc.ID()+"/capabilities", &rcCaps)
	if rcCaps.Available {
		t.Fatalf("offline rack's capabilities say available")
	}
	if code := h.do("PUT", "/api/v1/os/windows/win2022/licence-key", map[string]string{"key": key}, &e); code != 503 || !strings.Contains(e.Error.Message, "no online rack") {
		t.Fatalf("key with the providing rack offline: %d %+v", code, e)
	}

	// Back: available again.
	rc, _ = startRack(t, h, rcDir, interval)
	h.eventually(5*time.Second, "rack-c's OS available again", func() error {
		var l osList
		h.getJSON("/api/v1/os", &l)
		if got := summary(l); got != want {
			return fmt.Errorf("registry %q", got)
		}
		return nil
	})

	// A snapshot that is valid but not what the rack has (here, sent by
	// the test on the rack's subject): the live answer disagrees, and the
	// region records that.
	other := events.Capabilities{OSes: []events.OS{}, Bootloaders: []events.Bootloader{}, StorageProviders: []events.StorageProvider{}}
	other.Digest = capabilities.Digest(other)
	var liveCaps struct {
		MatchesReported *bool `json:"matches_reported"`
		Capabilities    events.Capabilities
	}
	// The rack, just started, may still report a change of its own (a
	// driver found, say) after the test's snapshot, which then is not the
	// latest: the test sends it again, a bounded number of times.
	for try := 1; ; try++ {
		stale, _ := events.New(events.RackSource(rc.ID()), events.TypeCapabilitiesReported, events.RackStreamName(rc.ID()), time.Now(), other)
		raw, _ = events.Encode(stale)
		if _, err := h.js.Publish(context.Background(), events.RackEventSubject(rc.ID(), stale.Type), raw); err != nil {
			t.Fatal(err)
		}
		projected := false
		for end := time.Now().Add(5 * time.Second); !projected && time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			h.getJSON("/api/v1/racks/"+rc.ID()+"/capabilities", &rcCaps)
			projected = rcCaps.Capabilities.Digest == other.Digest
		}
		if !projected {
			// Not there, or a report of the rack's came after it.
			if try == 3 {
				t.Fatalf("the stale snapshot was not projected (try %d): digest %s", try, rcCaps.Capabilities.Digest)
			}
			continue
		}
		h.getJSON("/api/v1/racks/"+rc.ID()+"/capabilities?live=true", &liveCaps)
		if liveCaps.MatchesReported != nil && !*liveCaps.MatchesReported && len(liveCaps.Capabilities.OSes) == 1 {
			break
		}
		h.getJSON("/api/v1/racks/"+rc.ID()+"/capabilities", &rcCaps)
		if try == 3 || rcCaps.Capabilities.Digest == other.Digest {
			t.Fatalf("live answer (try %d): %+v", try, liveCaps)
		}
	}
	var div struct {
		Events []struct{ Data events.CapabilitiesDiverged }
	}
	h.getJSON("/api/v1/events?type="+events.TypeCapabilitiesDiverged, &div)
	if len(div.Events) != 1 || div.Events[0].Data.RackID != rc.ID() || div.Events[0].Data.ReportedDigest != other.Digest {
		t.Fatalf("divergence not recorded: %+v", div)
	}
}

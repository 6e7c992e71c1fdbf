package region_test

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
)

type scrubReport struct {
	Checked int
	Bytes   int64
	Corrupt []struct {
		SHA256       string
		ActualSHA256 string `json:"actual_sha256"`
		Versions     []string
	}
}

// TestImageScrubAPI: POST /api/v1/racks/{id}/images/scrub has the rack
// verify every stored file. A clean store reports every file checked and
// none corrupt; a file changed on the rack's disk is reported with the
// versions using it, which become unusable; each request is in the audit
// log; an offline rack is a 503.
func TestImageScrubAPI(t *testing.T) {
	h := startRegion(t)
	dir := filepath.Join(t.TempDir(), "rack-a")
	r, stop := startRack(t, h, dir, 200*time.Millisecond)
	id := r.ID()
	base := "/api/v1/racks/" + id + "/images"
	h.waitRackKnown(id)
	importInto(t, r, imageSource(t, "ubuntu/noble/amd64/ga-24.04"))
	const noble = "ubuntu/amd64/ga-24.04/noble/stable/20261101"

	var clean scrubReport
	if code := h.do("POST", base+"/scrub", nil, &clean); code != 200 || clean.Checked != 2 || clean.Bytes == 0 || len(clean.Corrupt) != 0 {
		t.Fatalf("scrub of a clean store: %d %+v", code, clean)
	}

	// Spoil one stored file behind the store's back.
	var spoilt string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Base(filepath.Dir(filepath.Dir(p))) == "blobs" && spoilt == "" {
			spoilt = p
		}
		return err
	})
	if err != nil || spoilt == "" {
		t.Fatalf("no stored file under %s: %v", dir, err)
	}
	if err := os.WriteFile(spoilt, []byte("bit rot"), 0o644); err != nil {
		t.Fatal(err)
	}
	var found scrubReport
	if code := h.do("POST", base+"/scrub?timeout=30s", nil, &found); code != 200 || found.Checked != 2 || len(found.Corrupt) != 1 ||
		found.Corrupt[0].SHA256 != filepath.Base(spoilt) || found.Corrupt[0].ActualSHA256 == found.Corrupt[0].SHA256 ||
		!slices.Equal(found.Corrupt[0].Versions, []string{noble}) {
		t.Fatalf("scrub of a spoilt store: %d %+v", code, found)
	}
	if v := h.images(id)[noble]; v.ID != noble || v.Usable {
		t.Fatalf("after the scrub the version is %+v, want unusable", v)
	}

	// Both are audited, by the token's actor, against the rack.
	h.eventually(5*time.Second, "the scrubs in the audit log", func() error {
		var out struct {
			Entries []struct{ Actor, Action, Target, Outcome string }
		}
		h.getJSON("/api/v1/audit?"+url.Values{"action": {"POST /api/v1/racks/{id}/images/scrub"}}.Encode(), &out)
		if len(out.Entries) != 2 || out.Entries[0].Outcome != "success" || !strings.Contains(out.Entries[0].Target, id) {
			return fmt.Errorf("audit %+v", out.Entries)
		}
		return nil
	})

	var e apiError
	if code := h.do("POST", base+"/scrub?dry_run=true", nil, &e); code != 400 || !strings.Contains(e.Error.Message, `"dry_run": no such query parameter`) {
		t.Fatalf("scrub with dry_run: %d %+v", code, e)
	}
	e = apiError{}
	if code := h.do("POST", base+"/scrub?timeout=1h", nil, &e); code != 400 || e.Error.Code != rackplane.EINVALID {
		t.Fatalf("scrub with a timeout out of range: %d %+v", code, e)
	}
	stop()
	h.eventually(5*time.Second, "rack offline", func() error {
		if got, _ := h.rack(id); got.Online {
			return fmt.Errorf("still online")
		}
		return nil
	})
	e = apiError{}
	if code := h.do("POST", base+"/scrub", nil, &e); code != 503 || !strings.Contains(e.Error.Message, "offline since") {
		t.Fatalf("scrub on an offline rack: %d %+v", code, e)
	}
}

package region_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/ephemeral"
)

// TestEphemeralImports builds the ephemeral environment as an operator
// does and imports it into a rack through the API like any image: the
// rack lists it, usable, and the region's OS registry offers it.
func TestEphemeralImports(t *testing.T) {
	if testing.Short() {
		// Downloads Debian packages and builds an image. CI runs it.
		t.Skip("builds the ephemeral environment from Debian packages: skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	build := func() *ephemeral.Result {
		res, err := ephemeral.Build(ctx, ephemeral.Options{Arch: "amd64", Out: t.TempDir(),
			CacheDir: filepath.Join(os.TempDir(), "rackplane-test-ephemeral")})
		if err != nil {
			t.Fatalf("build: %v", err)
		}
		return res
	}
	res := build()

	h := startRegion(t)
	r, _ := startRack(t, h, filepath.Join(t.TempDir(), "rack-a"), 200*time.Millisecond)
	h.waitRackKnown(r.ID())
	var started importStatus
	if code := h.do("POST", "/api/v1/racks/"+r.ID()+"/images/imports", map[string]string{"dir": res.Dir}, &started); code != 202 {
		t.Fatalf("import: %d %+v", code, started)
	}
	if st := h.waitImport(r.ID(), started.ID); st.State != "succeeded" || len(st.Versions) != 1 || st.Versions[0] != res.VersionID {
		t.Fatalf("import: %+v", st)
	}
	v, ok := h.images(r.ID())[res.VersionID]
	if !ok || !v.Usable || len(v.Files) != 3 {
		t.Fatalf("version %s: %+v", res.VersionID, v)
	}
	for _, f := range v.Files {
		if want, ok := res.Info.Files[f.Name]; ok && f.SHA256 != want {
			t.Errorf("stored %s has sha256 %s, built %s", f.Name, f.SHA256, want)
		}
		if f.Size != res.Sizes[f.Name] {
			t.Errorf("stored %s has %d bytes, built %d", f.Name, f.Size, res.Sizes[f.Name])
		}
	}

	// A rebuild of the same inputs is the same version, and imports as
	// unchanged.
	again := build()
	var second importStatus
	if code := h.do("POST", "/api/v1/racks/"+r.ID()+"/images/imports", map[string]string{"dir": again.Dir}, &second); code != 202 {
		t.Fatalf("import of the rebuild: %d %+v", code, second)
	}
	if st := h.waitImport(r.ID(), second.ID); st.State != "succeeded" || st.BytesDone != 0 || len(st.Versions) != 1 ||
		st.Versions[0] != res.VersionID {
		t.Fatalf("import of the rebuild: %+v", st)
	}
	h.eventually(10*time.Second, "the OS registry offers the ephemeral environment", func() error {
		var l osList
		h.getJSON("/api/v1/os", &l)
		if got := summary(l); !strings.Contains(got, "rackplane/ephemeral/amd64/generic:rack-") {
			return fmt.Errorf("registry %q", got)
		}
		return nil
	})
}

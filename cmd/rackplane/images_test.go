package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/region/api"
	"github.com/rackplane/rackplane/region/regiontest"
)

// TestImagesImportSources imports, through the CLI and the region's API,
// Debian's netboot installer from the packages installed here and a
// MAAS-shaped simplestreams mirror served over HTTP, and finds them in
// the region's OS registry with their installer families.
func TestImagesImportSources(t *testing.T) {
	if testing.Short() {
		t.Skip("starts rackplane dev")
	}
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "debian-installer-12-netboot-amd64").Output()
	if err != nil || len(out) == 0 {
		t.Fatalf("package debian-installer-12-netboot-amd64 is not installed (%v): apt-get install debian-installer-12-netboot-amd64", err)
	}
	debian := "debian/amd64/generic/bookworm/stable/" + string(out)
	mirror := httptest.NewServer(http.FileServer(http.Dir(simplestreamsMirror(t))))
	t.Cleanup(mirror.Close)

	d := startDev(t)
	regiontest.Eventually(t, 30*time.Second, "the built-in rack online", d.rackOnline("dev-rack", true))
	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{"debian-netboot", []string{"dev-rack", "debian-netboot", "-arch", "amd64"}, []string{"succeeded: ", "versions " + debian}},
		{"debian-netboot again", []string{"dev-rack", "debian-netboot", "-arch", "amd64"}, []string{"succeeded: nothing: the source is unchanged; versions " + debian}},
		{"simplestreams", []string{"dev-rack", "simplestreams:" + mirror.URL + "/", "-release", "noble", "-versions", "2"},
			[]string{"succeeded: 288 bytes; versions ubuntu/amd64/ga-24.04/noble/stable/20250805, ubuntu/amd64/ga-24.04/noble/stable/20250716"}},
	} {
		out, err := d.rackplane([]string{"images", "import"}, tt.args...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", tt.name, err, out)
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Fatalf("%s: output does not say %q:\n%s", tt.name, w, out)
			}
		}
	}
	out2, err := d.rackplane([]string{"images", "import"}, "dev-rack", "simplestreams:"+mirror.URL+"/", "-release", "trusty")
	if err == nil || !strings.Contains(err.Error(), "release=trusty") {
		t.Fatalf("an import nothing matches: %v\n%s", err, out2)
	}
	if out, err := d.rackplane([]string{"images", "import"}, "dev-rack", "/srv/images", "-arch", "amd64"); err == nil {
		t.Fatalf("-arch with a directory source was taken:\n%s", out)
	}

	regiontest.Eventually(t, 30*time.Second, "the images in the OS registry", func() error {
		var l struct{ OSes []api.OSEntry }
		if _, err := d.get("/api/v1/os?live=true", &l); err != nil {
			return err
		}
		want := map[string]string{"debian/bookworm": "debian-installer", "ubuntu/noble": "custom"}
		for _, e := range l.OSes {
			inst, ok := want[e.OS+"/"+e.Release]
			if !ok || !e.Available || len(e.Racks) != 1 || len(e.Racks[0].Versions) == 0 {
				continue
			}
			if e.Racks[0].Versions[0].Installer != inst {
				return fmt.Errorf("%s/%s has installer %q, want %q", e.OS, e.Release, e.Racks[0].Versions[0].Installer, inst)
			}
			if e.OS == "debian" && e.Title != "Debian 12" {
				return fmt.Errorf("debian/bookworm is titled %q", e.Title)
			}
			delete(want, e.OS+"/"+e.Release)
		}
		if len(want) > 0 {
			return fmt.Errorf("not in the registry: %v (registry %+v)", want, l.OSes)
		}
		return nil
	})
}

// simplestreamsMirror copies rack/images/testdata/simplestreams, a mirror
// in the shape of images.maas.io's, to a temporary directory, giving its
// product files their published names (a Go module may not hold file
// names with colons, so the copy in testdata has "+" for ":").
func simplestreamsMirror(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	src := filepath.Join("..", "..", "rack", "images", "testdata", "simplestreams")
	err := filepath.WalkDir(src, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if filepath.Dir(rel) == filepath.Join("streams", "v1") {
			rel = strings.ReplaceAll(rel, "+", ":")
		}
		b, err := os.ReadFile(p)
		if err == nil {
			err = os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o755)
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(dst, rel), b, 0o644)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

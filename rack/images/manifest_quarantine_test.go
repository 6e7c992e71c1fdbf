package images

import (
	"os"
	"path/filepath"
	"testing"
)

// TestUnreadableVersionManifestQuarantinedAtOpen: a stored version manifest
// that is not JSON, or whose fields do not match its id, is moved to the
// quarantine at open instead of being loaded.
func TestUnreadableVersionManifestQuarantinedAtOpen(t *testing.T) {
	e := newEnv(t, nil)
	v, files := imageVersion("20261101", map[string][]byte{"linux": content("k", 100)})
	ss := newSourceServer(t, v)
	ss.addFiles(files)
	e.importURL(ss.url())
	name := versionFileName(v.ID())
	path := filepath.Join(e.s.versionDir, name)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]byte{[]byte("{not json"), []byte(`{"id":"` + v.ID() + `"}`)} {
		if err := os.WriteFile(path, bad, 0o640); err != nil {
			t.Fatal(err)
		}
		e.reopen()
		if _, err := e.s.Version(v.ID()); err == nil {
			t.Fatalf("manifest %q loaded", bad)
		}
		if _, err := os.Stat(filepath.Join(e.s.quarantineDir, "version-"+name)); err != nil {
			t.Fatalf("manifest %q not quarantined: %v", bad, err)
		}
		if err := os.WriteFile(path, raw, 0o640); err != nil { // the next case starts from a good store
			t.Fatal(err)
		}
	}
}

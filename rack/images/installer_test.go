package images

import (
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/schema"
)

// TestManifestInstaller: a version's installer family and disk image are
// checked on import, so a deployment never meets a disk image the agent
// cannot write.
func TestManifestInstaller(t *testing.T) {
	set, err := schema.Default()
	if err != nil {
		t.Fatal(err)
	}
	disk := func(f func(*events.DiskImage)) *events.DiskImage {
		d := &events.DiskImage{File: "disk.img.zst", Compression: events.DiskCompressionZstd, Size: 1 << 20,
			SHA256: strings.Repeat("a", 64), Table: "gpt", RootPartition: 2, GrowRoot: true}
		if f != nil {
			f(d)
		}
		return d
	}
	tests := []struct {
		name      string
		installer string
		disk      *events.DiskImage
		wantErr   string // "" accepts
	}{
		{"no family", "", nil, ""},
		{"debian-installer", events.InstallerDebian, nil, ""},
		{"unknown family", "windows", nil, "installer"},
		{"a disk image", events.InstallerAgent, disk(nil), ""},
		{"agent without a disk", events.InstallerAgent, nil, "needs a disk image"},
		{"a disk for d-i", events.InstallerDebian, disk(nil), "set installer to agent"},
		{"a disk that is not a file", events.InstallerAgent, disk(func(d *events.DiskImage) { d.File = "other.img" }), "not one of its files"},
		{"unknown compression", events.InstallerAgent, disk(func(d *events.DiskImage) { d.Compression = "xz" }), "compression"},
		{"no decompressed sha256", events.InstallerAgent, disk(func(d *events.DiskImage) { d.SHA256 = "" }), "sha256"},
		{"grow without a root", events.InstallerAgent, disk(func(d *events.DiskImage) { d.RootPartition = 0 }), "root_partition"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, _ := imageVersion("1", map[string][]byte{"disk.img.zst": content("d", 10)})
			v.Installer, v.Disk = tt.installer, tt.disk
			m, err := ParseManifest(set, manifestBytes(t, v))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got %v, want an error about %q", err, tt.wantErr)
			case err == nil:
				got := m.Versions[0].toVersion("test", time.Now())
				if got.Installer != tt.installer || (got.Disk == nil) != (tt.disk == nil) {
					t.Fatalf("stored installer %q disk %+v", got.Installer, got.Disk)
				}
				if err := got.checkStored(); err != nil {
					t.Fatalf("the stored version does not check: %v", err)
				}
			}
		})
	}
}

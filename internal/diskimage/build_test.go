package diskimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/images"
	"github.com/rackplane/rackplane/schema"
)

// cacheDir is the package cache the tests share, so that each run
// downloads nothing twice.
var cacheDir = filepath.Join(os.TempDir(), "rackplane-test-diskimage")

// built holds the image of each architecture, built once for the
// package's tests.
var built = map[string]*struct {
	once sync.Once
	res  *Result
	err  error
}{"amd64": {}, "arm64": {}}

// longTest skips t under -short: building the image downloads Debian
// packages and takes a minute; booting it takes minutes more.
func longTest(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the disk image from Debian packages: skipped with -short")
	}
}

// build builds the image of arch once for the package's tests (they
// only read it).
func build(t *testing.T, arch string) *Result {
	t.Helper()
	longTest(t)
	built := built[arch]
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "rackplane-diskimage-test-")
		if err != nil {
			built.err = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		built.res, built.err = Build(ctx, Options{Arch: arch, OutDir: dir, CacheDir: cacheDir})
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.res
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, b := range built {
		if b.res != nil {
			os.RemoveAll(b.res.Dir)
		}
	}
	os.Exit(code)
}

// TestBuild checks what a rack and the deploying agent rely on: the
// manifest imports, its disk says the raw image's size and sha256, the
// partition table is the one it says with the root partition last, and
// the root file system holds what boots; and that a second build from
// the same packages gives the same bytes.
func TestBuild(t *testing.T) {
	res := build(t, "amd64")
	raw, err := os.ReadFile(res.ManifestPath)
	if err != nil {
		t.Fatal(err)
	}
	set, err := schema.Default()
	if err != nil {
		t.Fatal(err)
	}
	m, err := images.ParseManifest(set, raw)
	if err != nil {
		t.Fatalf("the manifest does not import: %v\n%s", err, raw)
	}
	if len(m.Versions) != 1 {
		t.Fatalf("%d versions, want 1", len(m.Versions))
	}
	v := m.Versions[0]
	if got := []string{v.Kind, v.OS, v.Release, v.Arch, v.Subarch, v.Label, v.Version}; strings.Join(got, " ") !=
		"image debian-busybox demo amd64 generic stable "+res.Version || v.ID() != res.VersionID {
		t.Errorf("version %q (id %s), want image debian-busybox demo amd64 generic stable %s (id %s)", got, v.ID(), res.Version, res.VersionID)
	}
	if v.Installer != events.InstallerAgent {
		t.Errorf("installer %q, want agent", v.Installer)
	}
	for _, f := range v.Files {
		b, err := os.ReadFile(filepath.Join(res.Dir, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		if hex.EncodeToString(s[:]) != f.SHA256 || int64(len(b)) != f.Size {
			t.Errorf("file %s: manifest says %d bytes sha256 %s, it is %d bytes sha256 %x", f.Name, f.Size, f.SHA256, len(b), s)
		}
	}
	disk := filepath.Join(t.TempDir(), "disk.img")
	sum, size, err := Decompress(filepath.Join(res.Dir, DiskFile), disk)
	if err != nil {
		t.Fatal(err)
	}
	want := events.DiskImage{File: DiskFile, Compression: events.DiskCompressionZstd, Size: size, SHA256: sum,
		Table: "msdos", RootPartition: 2, GrowRoot: true}
	if v.Disk == nil || *v.Disk != want {
		t.Errorf("disk %+v, the image is %+v", v.Disk, want)
	}
	if res.DiskSHA256 != sum || res.DiskSize != size {
		t.Errorf("result says %d bytes sha256 %s; the image is %d bytes sha256 %s", res.DiskSize, res.DiskSHA256, size, sum)
	}
	t.Logf("disk %d bytes raw, %s %d bytes", size, DiskFile, res.CompressedSize)

	// The partition table, as sfdisk reads it.
	out, err := exec.Command("sfdisk", "-J", disk).Output()
	if err != nil {
		t.Fatalf("sfdisk -J (Debian package fdisk): %v", err)
	}
	var pt struct {
		PartitionTable struct {
			Label      string `json:"label"`
			Partitions []struct {
				Node     string `json:"node"`
				Start    int64  `json:"start"`
				Size     int64  `json:"size"`
				Type     string `json:"type"`
				Bootable bool   `json:"bootable"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &pt); err != nil {
		t.Fatalf("sfdisk -J: %v\n%s", err, out)
	}
	ps := pt.PartitionTable.Partitions
	if pt.PartitionTable.Label != "dos" || len(ps) != 2 || ps[0].Type != "ef" || ps[0].Start != 2048 ||
		ps[1].Type != "83" || ps[1].Start != ps[0].Start+ps[0].Size || (ps[1].Start+ps[1].Size)*512 != size {
		t.Errorf("partition table: want dos, an ESP (ef) at sector 2048 and Linux (83) after it up to the disk's end:\n%s", out)
	}

	// The root file system: sound, and holding what GRUB boots.
	root := fmt.Sprintf("%s?offset=%d", disk, ps[1].Start*512)
	if out, err := exec.Command("e2fsck", "-f", "-n", root).CombinedOutput(); err != nil {
		t.Errorf("e2fsck: %v\n%s", err, out)
	}
	out, err = exec.Command("debugfs", "-R", "ls -p /boot", root).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"/vmlinuz/", "/initrd.img/"} {
		if !bytes.Contains(out, []byte(f)) {
			t.Errorf("/boot has no %s:\n%s", strings.Trim(f, "/"), out)
		}
	}

	// Reproducible: the same packages, the same bytes.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	again, err := Build(ctx, Options{Arch: "amd64", OutDir: t.TempDir(), CacheDir: cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"manifest.json", DiskFile, InfoFile} {
		a, _ := os.ReadFile(filepath.Join(res.Dir, f))
		b, _ := os.ReadFile(filepath.Join(again.Dir, f))
		if !bytes.Equal(a, b) || len(a) == 0 {
			t.Errorf("%s differs between two builds from the same packages", f)
		}
	}
	if again.DiskSHA256 != res.DiskSHA256 || again.Version != res.Version {
		t.Errorf("second build: disk sha256 %s version %s; first: %s %s", again.DiskSHA256, again.Version, res.DiskSHA256, res.Version)
	}
}

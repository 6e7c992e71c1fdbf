package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/rackplane/rackplane/internal/diskimage"
	"github.com/rackplane/rackplane/internal/pxetest"
)

// TestDeployBuiltDiskImageSeaBIOS deploys the disk image `rackplane images
// build-disk` makes (internal/diskimage) to a VM under SeaBIOS
// (TestDeployBuiltDiskImageOVMF: under OVMF), commissioned first with an
// empty virtio disk: the
// agent writes it, the VM reboots, the rack boots it locally, its GRUB
// (i386-pc in the MBR, x86_64-efi on the ESP) boots the installed
// system, which reads the seed the agent left, fetches its data from the
// rack's metadata service, runs the user-data and phones home; the
// machine is deployed; the agent read the image back from the disk with
// the image's sha256 before it grew the root and seeded it, the rack
// handed out no kernel after the image was written, and the disk holds
// the image's bytes up to its root partition (boot code, GRUB's core,
// the ESP).
func TestDeployBuiltDiskImageSeaBIOS(t *testing.T) { deployBuiltDiskImage(t, 0, "seabios") }

// TestDeployBuiltDiskImageOVMF is TestDeployBuiltDiskImageSeaBIOS under
// OVMF (UEFI), in a lab of its own so that the two run side by side.
func TestDeployBuiltDiskImageOVMF(t *testing.T) { deployBuiltDiskImage(t, 1, "ovmf") }

func deployBuiltDiskImage(t *testing.T, i int, fw string) {
	endToEnd(t)
	// A VM of its own, on a namespace of its own: it runs beside the
	// other deployment tests, which keeps CI within its time.
	t.Parallel()
	qemu := pxetest.QEMU(t)
	seg, a, rackID := devLab(t)
	importEphemeral(t, a, rackID)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := diskimage.Build(ctx, diskimage.Options{Arch: "amd64", OutDir: t.TempDir(),
		CacheDir: filepath.Join(os.TempDir(), "rackplane-test-diskimage")})
	if err != nil {
		t.Fatalf("build the disk image: %v", err)
	}
	var imp struct{ ID, State string }
	if code := a.call("POST", "/api/v1/racks/"+rackID+"/images/imports", nil, map[string]string{"dir": res.Dir}, &imp); code != 202 {
		t.Fatalf("import the disk image: %d %+v", code, imp)
	}
	parts := strings.Split(res.VersionID, "/") // os/arch/subarch/release/label/version
	eventually(t, 60*time.Second, "the disk image imported and reported", func() error {
		var oses struct {
			OSes []struct{ OS, Release string }
		}
		a.call("GET", "/api/v1/os", nil, nil, &oses)
		for _, o := range oses.OSes {
			if o.OS == parts[0] && o.Release == parts[3] {
				return nil
			}
		}
		return fmt.Errorf("os registry %+v", oses)
	})
	// The table, boot code, GRUB's core and the ESP: what the agent
	// leaves as the image has them.
	raw := imageHead(t, res, 64<<20)
	if code := a.call("POST", "/api/v1/preseeds", nil, map[string]any{"name": "built",
		"content": "#!/bin/sh\necho USER-DATA-RAN on $(hostname)\n"}, nil); code != 201 {
		t.Fatalf("create preseed: %d", code)
	}

	{
		{
			mac := fmt.Sprintf("52:54:00:d1:5d:%02x", i+1)
			var m struct {
				ID, Status     string
				StatusReason   string `json:"status_reason"`
				ImageVersionID string `json:"image_version_id"`
				PreseedVersion int64  `json:"preseed_version"`
			}
			if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "built-" + fw, "macs": []string{mac}, "boot_rack_id": rackID}, &m); code != 201 {
				t.Fatalf("create machine: %d", code)
			}
			dir := t.TempDir()
			disk := filepath.Join(dir, "disk.img")
			const diskSize = 1 << 30
			if err := os.WriteFile(disk, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(disk, diskSize); err != nil {
				t.Fatal(err)
			}
			vmNS, tap := seg.Tap()
			args := []string{"-accel", "tcg", "-smp", "2", "-m", "1024", "-nographic", "-monitor", "none",
				"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no",
				"-drive", "file=" + disk + ",if=none,id=d0,format=raw", "-device", "virtio-blk-pci,drive=d0,bootindex=2"}
			if fw == "ovmf" {
				args = append(args, pxetest.OVMF(t, mac, pxetest.OVMFOptions{})...)
			} else {
				args = append(args, "-device", "e1000,netdev=n0,bootindex=1,mac="+mac)
			}
			serial := func(name string) []string { return []string{"-serial", "file:" + filepath.Join(dir, name)} }
			console := func(name string) string {
				b, _ := os.ReadFile(filepath.Join(dir, name))
				return strings.ReplaceAll(string(b), "\r\n", "\n")
			}
			state := func() {
				a.call("GET", "/api/v1/machines/"+m.ID, nil, nil, &m)
			}

			if code := a.call("POST", "/api/v1/machines/"+m.ID+"/commission", nil, nil, &m); code != 200 {
				t.Fatalf("commission: %d", code)
			}
			cctx, ccancel := context.WithTimeout(context.Background(), 8*time.Minute)
			out, err := exec.CommandContext(cctx, "ip", append([]string{"netns", "exec", vmNS, qemu}, append(append(args, "-no-reboot"), serial("commission.log")...)...)...).CombinedOutput()
			ccancel()
			if err != nil {
				t.Fatalf("commissioning VM: %v\n%s\n%s", err, tail(string(out), 10), tail(console("commission.log"), 40))
			}
			eventually(t, 30*time.Second, "ready", func() error {
				if state(); m.Status != "ready" {
					return fmt.Errorf("status %s %s", m.Status, m.StatusReason)
				}
				return nil
			})

			if code := a.call("POST", "/api/v1/machines/"+m.ID+"/deploy", nil, map[string]any{"os": parts[0], "release": parts[3], "preseed": "built"}, &m); code != 200 {
				t.Fatalf("deploy: %d %+v", code, m)
			}
			// The installed system stays up: the VM runs until the machine
			// is deployed, then the test stops it.
			vctx, vcancel := context.WithCancel(context.Background())
			defer vcancel()
			cmd := exec.CommandContext(vctx, "ip", append([]string{"netns", "exec", vmNS, qemu}, append(args, serial("deploy.log")...)...)...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			start := time.Now()
			deadline := time.Now().Add(15 * time.Minute)
			for state(); m.Status == "deploying"; state() {
				if time.Now().After(deadline) {
					break
				}
				select {
				case err := <-done:
					t.Fatalf("the VM stopped while deploying: %v\n%s", err, tail(console("deploy.log"), 60))
				case <-time.After(2 * time.Second):
				}
			}
			// The phone-home was taken; the system says so once its
			// request returns.
			for until := time.Now().Add(time.Minute); m.Status == "deployed" && time.Now().Before(until) &&
				!strings.Contains(console("deploy.log"), "rackplane: installed system up"); {
				time.Sleep(time.Second)
			}
			vcancel()
			<-done
			log := console("deploy.log")
			if m.Status != "deployed" || m.ImageVersionID != res.VersionID || m.PreseedVersion != 1 {
				t.Fatalf("after %s the machine is %s (%s), image %s: want deployed with %s\n%s", time.Since(start).Round(time.Second),
					m.Status, m.StatusReason, m.ImageVersionID, res.VersionID, tail(log, 60))
			}
			t.Logf("the %s VM was deployed with the built image in %s", fw, time.Since(start).Round(time.Second))
			for _, line := range strings.Split(log, "\n") {
				if strings.HasPrefix(strings.TrimSpace(line), "rackplane:") || strings.Contains(line, "USER-DATA-RAN") {
					// The seed's URL holds the deployment's credential.
					if i := strings.Index(line, "/metadata/"); i >= 0 {
						line = line[:i] + "/metadata/…"
					}
					t.Logf("console: %s", strings.TrimSpace(line))
				}
			}
			for _, want := range []string{"USER-DATA-RAN on built-" + fw, "rackplane: phoned home"} {
				if !strings.Contains(log, want) {
					t.Errorf("the console lacks %q", want)
				}
			}
			checkWrittenAndBootedFromDisk(t, a, m.ID, mac, res.DiskSize, res.DiskSHA256, fw == "ovmf")
			root := rootStart(raw)
			if root <= 512 || root > len(raw) {
				t.Fatalf("the image's root partition starts at %d, not within its first %d bytes", root, len(raw))
			}
			got := diskHead(t, disk, root)
			if root <= 512 || !bytes.Equal(got[:446], raw[:446]) || !bytes.Equal(got[512:root], raw[512:root]) {
				t.Errorf("the disk's boot code, GRUB core and ESP (bytes before %d) are not the image's", root)
			}
		}
	}
}

// imageHead is the first n bytes of a build's raw disk image (its table,
// boot code and ESP), decompressed without holding the rest: the test
// binary runs with the race detector, which multiplies what it holds.
func imageHead(t *testing.T, res *diskimage.Result, n int64) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join(res.Dir, diskimage.DiskFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	b := make([]byte, min(n, res.DiskSize))
	if _, err := io.ReadFull(zr, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// diskHead is the first n bytes of a disk file.
func diskHead(t *testing.T, path string, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// rootStart is where the last partition of an msdos table begins, in
// bytes: everything before it the agent leaves as written.
func rootStart(raw []byte) int {
	best := 0
	for i := range 4 {
		e := raw[446+16*i:]
		if start := int(binary.LittleEndian.Uint32(e[8:])) * 512; e[4] != 0 && start > best {
			best = start
		}
	}
	return best
}

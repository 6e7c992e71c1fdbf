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
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/internal/pxetest"
)

// TestDeployDiskImageSeaBIOS deploys the disk image `rackplane images
// build-disk` makes (internal/diskimage) to a VM under SeaBIOS
// (TestDeployDiskImageOVMF: under OVMF) with an empty virtio disk, as an
// operator does on a lab switch with `rackplane dev`. A machine never
// commissioned is refused (the region does not know its disks); it is
// commissioned, then deployed to the disk named by its serial (a disk it
// has not is refused, naming those it has). The agent streams the image
// from the rack, checks its sha256 as it writes it and reads it back,
// grows the root partition to the disk's end, seeds the installed system
// and reboots; the rack hands out no kernel after the image was written
// (under UEFI the agent made the disk the firmware's next boot and the
// VM does not ask the rack at all); the disk's GRUB (i386-pc in the MBR,
// x86_64-efi on the ESP) boots the installed system, which reads the
// seed, fetches its meta-data (the deployment as instance-id) and
// network-config (its NIC from the inventory) from the rack's metadata
// service, runs the user-data and phones home; the machine is deployed
// with the image and preseed versions it was given, and the disk holds
// the image's bytes up to its root partition.
func TestDeployDiskImageSeaBIOS(t *testing.T) { deployDiskImage(t, 0, "seabios") }

// TestDeployDiskImageOVMF is TestDeployDiskImageSeaBIOS under OVMF
// (UEFI), whose machine reaches its rack through a relay of the test's.
// Released and deployed again with the relay flipping one byte of the
// image on its way, the deployment fails with a checksum error and the
// disk is marked: its first and last MiB are zero.
func TestDeployDiskImageOVMF(t *testing.T) { deployDiskImage(t, 1, "ovmf") }

// builtDiskImage is the disk image `rackplane images build-disk -arch
// amd64` makes, built once for the test binary.
func builtDiskImage(t *testing.T) *built {
	t.Helper()
	return buildImage(t, "build-disk", "-arch", "amd64", "-cache-dir", filepath.Join(os.TempDir(), "rackplane-test-diskimage"))
}

func deployDiskImage(t *testing.T, i int, fw string) {
	endToEnd(t)
	// A VM of its own, on a namespace of its own: it runs beside the
	// other VM tests, which keeps CI within its time.
	t.Parallel()
	qemu := pxetest.QEMU(t)
	uefi := fw == "ovmf"
	began := time.Now()
	var seg *netnstest.Segment
	var a api
	var rackID string
	var rl *relay
	if uefi {
		// The machine reaches the rack through a relay that passes
		// everything on until it is told to flip a byte of the image.
		seg, a, rackID = devLab(t, "-boot-url", "http://10.20.0.2:15248")
		rl = flippingRelay(t, seg.NS("lab"), "10.20.0.2:15248", "http://10.20.0.2:5248", "/"+diskimage.DiskFile)
	} else {
		seg, a, rackID = devLab(t)
	}
	importEphemeral(t, a, rackID)
	res := builtDiskImage(t)
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
		"content": "#!/bin/sh\necho USER-DATA-RAN on {{.Machine.Hostname}}\n"}, nil); code != 201 {
		t.Fatalf("create preseed: %d", code)
	}

	mac := fmt.Sprintf("52:54:00:d1:5d:%02x", i+1)
	serialNo := fmt.Sprintf("RP-DISK-%d", i+1)
	hostname := "built-" + fw
	var m struct {
		ID, Status     string
		StatusReason   string `json:"status_reason"`
		ImageVersionID string `json:"image_version_id"`
		PreseedName    string `json:"preseed_name"`
		PreseedVersion int64  `json:"preseed_version"`
		DeploymentID   string `json:"deployment_id"`
	}
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": hostname, "macs": []string{mac}, "boot_rack_id": rackID}, &m); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	var refused struct {
		Error struct{ Code, Message string }
	}
	deploy := map[string]any{"os": parts[0], "release": parts[3], "preseed": "built"}
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/deploy", nil, deploy, &refused); code != 409 ||
		!strings.Contains(refused.Error.Message, "commission it first") {
		t.Fatalf("deploying a disk image to a machine never commissioned: %d %+v, want 409 saying to commission it", code, refused)
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
		"-drive", "file=" + disk + ",if=none,id=d0,format=raw", "-device", "virtio-blk-pci,drive=d0,serial=" + serialNo + ",bootindex=2"}
	if uefi {
		args = append(args, pxetest.OVMF(t, mac, pxetest.OVMFOptions{})...)
	} else {
		args = append(args, "-device", "e1000,netdev=n0,bootindex=1,mac="+mac)
	}
	serial := func(name string) []string { return []string{"-serial", "file:" + filepath.Join(dir, name)} }
	console := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return strings.ReplaceAll(string(b), "\r\n", "\n")
	}
	state := func() { a.call("GET", "/api/v1/machines/"+m.ID, nil, nil, &m) }
	status := func(want, log string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for state(); m.Status != want; state() {
			if time.Now().After(deadline) {
				t.Fatalf("the machine is %s (%s), want %s\n%s", m.Status, m.StatusReason, want, tail(log, 60))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// runToPowerOff runs the VM until it powers off, as the agent's
	// environment does when its work is done or failed.
	runToPowerOff := func(what, log string, until time.Duration) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), until)
		defer cancel()
		start := time.Now()
		out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", vmNS, qemu}, append(append(args, "-no-reboot"), serial(log)...)...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: qemu (did the VM power off within %s?): %v\n%s\n%s", what, until, err, tail(string(out), 10), tail(console(log), 60))
		}
		t.Logf("the VM %s in %s", what, time.Since(start).Round(time.Second))
		return console(log)
	}

	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/commission", nil, nil, &m); code != 200 {
		t.Fatalf("commission: %d", code)
	}
	status("ready", runToPowerOff("was commissioned and powered off", "commission.log", 8*time.Minute))

	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/deploy", nil, map[string]any{"os": parts[0], "release": parts[3], "disk": "vdz"}, &refused); code != 400 ||
		!strings.Contains(refused.Error.Message, "vda (serial "+serialNo+")") {
		t.Fatalf("deploy to a disk the machine has not: %d %+v, want 400 naming vda", code, refused)
	}
	deploy["disk"] = serialNo
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/deploy", nil, deploy, &m); code != 200 || m.Status != "deploying" {
		t.Fatalf("deploy: %d %+v", code, m)
	}
	deployment := m.DeploymentID
	// The installed system stays up: the VM runs until the machine is
	// deployed, then the test stops it.
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
	for state(); m.Status == "deploying" && time.Now().Before(deadline); state() {
		select {
		case err := <-done:
			t.Fatalf("the VM stopped while deploying: %v\n%s", err, tail(console("deploy.log"), 60))
		case <-time.After(2 * time.Second):
		}
	}
	// The phone-home was taken; the system says so once its request
	// returns.
	for until := time.Now().Add(time.Minute); m.Status == "deployed" && time.Now().Before(until) &&
		!strings.Contains(console("deploy.log"), "rackplane: installed system up"); {
		time.Sleep(time.Second)
	}
	vcancel()
	<-done
	log := console("deploy.log")
	if m.Status != "deployed" || m.ImageVersionID != res.VersionID || m.PreseedName != "built" || m.PreseedVersion != 1 {
		t.Fatalf("after %s the machine is %s (%s), image %s, preseed %s %d: want deployed with %s and preseed built 1\n%s",
			time.Since(start).Round(time.Second), m.Status, m.StatusReason, m.ImageVersionID, m.PreseedName, m.PreseedVersion, res.VersionID, tail(log, 60))
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
	for _, want := range []string{"USER-DATA-RAN on " + hostname, "rackplane: phoned home",
		"instance-id: " + deployment, "local-hostname: " + hostname,
		// network-config: the NIC of the inventory the VM booted from.
		`macaddress: "` + mac + `"`} {
		if !strings.Contains(log, want) {
			t.Errorf("the console lacks %q", want)
		}
	}
	checkWrittenAndBootedFromDisk(t, a, m.ID, mac, res.DiskSize, res.DiskSHA256, uefi)
	root := rootStart(raw)
	if root <= 512 || root > len(raw) {
		t.Fatalf("the image's root partition starts at %d, not within its first %d bytes", root, len(raw))
	}
	got := diskHead(t, disk, root)
	if !bytes.Equal(got[:446], raw[:446]) || !bytes.Equal(got[512:root], raw[512:root]) {
		t.Errorf("the disk's boot code, GRUB core and ESP (bytes before %d) are not the image's", root)
	}
	if end := rootEnd(got); end != diskSize {
		t.Errorf("the root partition ends at byte %d, want the disk's end %d", end, diskSize)
	}
	if !uefi {
		return
	}

	// A byte of the image flips on its way from the rack: the next
	// deployment fails on its checksum and leaves the disk marked.
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/release", nil, map[string]any{"erase": "none"}, &m); code != 200 {
		t.Fatalf("release: %d", code)
	}
	status("ready", "")
	rl.flip.Store(true)
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/deploy", nil, deploy, &m); code != 200 {
		t.Fatalf("deploy again: %d", code)
	}
	status("failed", runToPowerOff("wrote a corrupt image, failed and powered off", "corrupt.log", 10*time.Minute))
	t.Logf("after the corrupt download the machine is %s: %s", m.Status, m.StatusReason)
	if rl.flipped.Load() == 0 {
		t.Error("the relay flipped no byte of the image: the deployment failed for another reason")
	}
	if !strings.Contains(m.StatusReason, "writing the disk image failed") || !strings.Contains(m.StatusReason, "checksum mismatch") ||
		!strings.Contains(m.StatusReason, "marked") {
		t.Errorf("failed with %q, want a checksum mismatch and the disk marked", m.StatusReason)
	}
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	first, last := make([]byte, 1<<20), make([]byte, 1<<20)
	f.ReadAt(first, 0)
	f.ReadAt(last, diskSize-1<<20)
	zero := make([]byte, 1<<20)
	if !bytes.Equal(first, zero) || !bytes.Equal(last, zero) {
		t.Error("after the checksum mismatch the disk's first and last MiB are not zero")
	}
	t.Logf("the test took %s", time.Since(began).Round(time.Second))
}

// imageHead is the first n bytes of a build's raw disk image (its table,
// boot code and ESP), decompressed without holding the rest: the test
// binary runs with the race detector, which multiplies what it holds.
func imageHead(t *testing.T, res *built, n int64) []byte {
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

// rootEnd is where the last partition of an msdos table ends, in bytes.
func rootEnd(raw []byte) int64 {
	var best, end int64
	for i := range 4 {
		e := raw[446+16*i:]
		start, size := int64(binary.LittleEndian.Uint32(e[8:])), int64(binary.LittleEndian.Uint32(e[12:]))
		if e[4] != 0 && start > best {
			best, end = start, (start+size)*512
		}
	}
	return end
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

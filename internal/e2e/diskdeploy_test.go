package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/ephemeral"
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/internal/pxetest"
)

// TestDeployDiskImage deploys a disk image through the ephemeral
// environment's agent, as an operator does on a lab switch with
// `rackplane dev`: a UEFI QEMU VM (OVMF) with an empty virtio disk is
// commissioned, then deployed with a disk image (installer agent). The
// agent streams the image from the rack, checks its sha256 as it writes
// it, grows its root partition, seeds the installed system and reboots;
// the rack boots the VM from its disk from then on (no kernel is fetched
// after the reboot); the installed system fetches its metadata and
// user-data from the rack's metadata service and phones home, and the
// machine is deployed with the image and preseed versions it was given.
// Released and deployed again with a relay between the machine and its
// rack flipping one byte of the image on its way, the deployment fails
// with a checksum error and the disk is marked: its first and last MiB
// are zero.
func TestDeployDiskImage(t *testing.T) {
	endToEnd(t)
	// A VM of its own, on a namespace of its own: it runs beside the
	// other deployment tests, which keeps CI within its time.
	t.Parallel()
	for _, tool := range []string{"sfdisk", "mkfs.ext4", "grub-mkimage", "fsck.fat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("this test needs %s", tool)
		}
	}
	began := time.Now()
	qemu := pxetest.QEMU(t)
	// Machines reach the rack through a relay of the test's, which
	// passes everything on until it is told to flip a byte of the disk
	// image as it goes by.
	seg, a, rackID := devLab(t, "-boot-url", "http://10.20.0.2:15248")
	relay := flippingRelay(t, seg.NS("lab"), "10.20.0.2:15248", "http://10.20.0.2:5248", "/disk.img.zst")
	env := importEphemeral(t, a, rackID)
	img := testDiskImage(t, env)
	var imp struct{ ID, State string }
	if code := a.call("POST", "/api/v1/racks/"+rackID+"/images/imports", nil, map[string]string{"dir": img.dir}, &imp); code != 202 {
		t.Fatalf("import the disk image: %d %+v", code, imp)
	}
	eventually(t, 60*time.Second, "the disk image imported and reported", func() error {
		var oses struct {
			OSes []struct{ OS, Release string }
		}
		a.call("GET", "/api/v1/os", nil, nil, &oses)
		for _, o := range oses.OSes {
			if o.OS == "rpdisk" && o.Release == "test" {
				return nil
			}
		}
		return fmt.Errorf("os registry %+v", oses)
	})

	const mac = "52:54:00:d1:5c:01"
	var m struct {
		ID, Status     string
		StatusReason   string `json:"status_reason"`
		ImageVersionID string `json:"image_version_id"`
		PreseedName    string `json:"preseed_name"`
		PreseedVersion int64  `json:"preseed_version"`
	}
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "disk1", "macs": []string{mac}, "boot_rack_id": rackID}, &m); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	var refused struct {
		Error struct{ Code, Message string }
	}
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/deploy", nil, map[string]any{"os": "rpdisk", "release": "test"}, &refused); code != 409 ||
		!strings.Contains(refused.Error.Message, "commission it first") {
		t.Fatalf("deploying a disk image to a machine never commissioned: %d %+v, want 409 saying to commission it", code, refused)
	}

	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	const diskSize = 384 << 20
	if err := os.Truncate(disk, diskSize); err != nil {
		t.Fatal(err)
	}
	vmNS, tap := seg.Tap()
	vm := func(what string, reboot bool, until time.Duration) string {
		t.Helper()
		args := []string{"-accel", "tcg", "-smp", "2", "-m", "1024", "-nographic", "-monitor", "none",
			"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no",
			"-drive", "file=" + disk + ",if=none,id=d0,format=raw", "-device", "virtio-blk-pci,drive=d0,serial=RP-DISK-1,bootindex=2"}
		if !reboot {
			args = append(args, "-no-reboot")
		}
		args = append(args, pxetest.OVMF(t, mac, pxetest.OVMFOptions{})...)
		serial := filepath.Join(dir, strings.ReplaceAll(what, " ", "-")+".log")
		args = append(args, "-serial", "file:"+serial)
		ctx, cancel := context.WithTimeout(context.Background(), until)
		defer cancel()
		start := time.Now()
		out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", vmNS, qemu}, args...)...).CombinedOutput()
		b, _ := os.ReadFile(serial)
		console := strings.ReplaceAll(string(b), "\r\n", "\n")
		if err != nil {
			t.Fatalf("%s: qemu (did the VM power off within %s?): %v\n%s\nserial:\n%s", what, until, err, tail(string(out), 20), tail(console, 80))
		}
		t.Logf("the VM %s in %s", what, time.Since(start).Round(time.Second))
		return console
	}
	status := func(want, console string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			a.call("GET", "/api/v1/machines/"+m.ID, nil, nil, &m)
			if m.Status == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the machine is %s (%s), want %s\nserial:\n%s", m.Status, m.StatusReason, want, tail(console, 80))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/commission", nil, nil, &m); code != 200 {
		t.Fatalf("commission: %d", code)
	}
	status("ready", vm("was commissioned and powered off", false, 8*time.Minute))

	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/deploy", nil, map[string]any{"os": "rpdisk", "release": "test", "disk": "vdz"}, &refused); code != 400 ||
		!strings.Contains(refused.Error.Message, "vda (serial RP-DISK-1)") {
		t.Fatalf("deploy to a disk the machine has not: %d %+v, want 400 naming vda", code, refused)
	}
	if code := a.call("POST", "/api/v1/preseeds", nil, map[string]any{"name": "disk1",
		"content": "#!/bin/sh\necho USER-DATA-RAN on {{.Machine.Hostname}}\n"}, nil); code != 201 {
		t.Fatalf("create preseed: %d", code)
	}
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/deploy", nil, map[string]any{"os": "rpdisk", "release": "test",
		"preseed": "disk1", "disk": "RP-DISK-1"}, &m); code != 200 || m.Status != "deploying" {
		t.Fatalf("deploy: %d %+v", code, m)
	}
	deployment := machineDeployment(t, a, m.ID)

	console := vm("wrote the image, rebooted into it, phoned home and powered off", true, 15*time.Minute)
	status("deployed", console)
	if m.ImageVersionID != img.versionID || m.PreseedName != "disk1" || m.PreseedVersion != 1 {
		t.Errorf("deployed machine %+v, want image %s and preseed disk1 version 1", m, img.versionID)
	}
	for _, line := range strings.Split(console, "\n") {
		if strings.Contains(line, "installed-system:") || strings.Contains(line, "USER-DATA-RAN") {
			t.Logf("console: %s", strings.TrimSpace(line))
		}
	}
	for _, want := range []string{
		"installed-system: seed instance-id " + deployment + " local-hostname disk1",
		"installed-system: fetched meta-data", "installed-system: fetched vendor-data", "installed-system: fetched network-config",
		"USER-DATA-RAN on disk1", "installed-system: phoned home: machine " + m.ID + " is deployed",
		// The inventory's NIC, which the VM booted from.
		`installed-system: network-config for "` + mac + `"`,
	} {
		if !strings.Contains(console, want) {
			t.Errorf("the console lacks %q:\n%s", want, tail(console, 60))
		}
	}
	checkWrittenAndBootedFromDisk(t, a, m.ID, mac, img.size, img.sha256, true)
	checkWritten(t, disk, img, diskSize)

	// A byte of the image flips on its way from the rack: the next
	// deployment fails on its checksum and leaves the disk marked.
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/release", nil, map[string]any{"erase": "none"}, &m); code != 200 {
		t.Fatalf("release: %d", code)
	}
	status("ready", "")
	relay.flip.Store(true)
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/deploy", nil, map[string]any{"os": "rpdisk", "release": "test", "preseed": "disk1"}, &m); code != 200 {
		t.Fatalf("deploy again: %d", code)
	}
	status("failed", vm("wrote a corrupt image, failed and powered off", false, 10*time.Minute))
	t.Logf("after the corrupt download the machine is %s: %s", m.Status, m.StatusReason)
	if relay.flipped.Load() == 0 {
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

// diskImage is a disk image source the test made.
type diskImage struct {
	dir, versionID     string
	raw                []byte // the decompressed image's head, up to espEnd
	size               int64
	sha256, fileSHA256 string
	espStart, espEnd   int64
}

// installedInit is /init of the test image's installed system, the
// ephemeral environment's userland booted from the disk: a stand-in for
// cloud-init's NoCloud-net, with busybox. It reads the seed the agent left
// on its root partition, fetches the documents from seedfrom, runs a
// user-data script, phones home as cloud-init's phone_home does, and
// powers off.
const installedInit = `#!/bin/sh
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp /target
exec </dev/console >/dev/console 2>&1
echo "installed-system: booted from the disk"
while read -r m; do
	[ -n "$m" ] && insmod "/lib/modules/$m" 2>/dev/null
done </etc/modules.order
i=0
while [ ! -b /dev/vda2 ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
mount -t ext4 /dev/vda2 /target || echo "installed-system: cannot mount the root partition"
seed=/target/var/lib/cloud/seed/nocloud-net/meta-data
val() { sed -n "s/^$1: *//p" "$seed" | head -n 1; }
id=$(val instance-id); host=$(val local-hostname); from=$(val seedfrom)
echo "installed-system: seed instance-id $id local-hostname $host"
grep -q NoCloud /target/etc/cloud/cloud.cfg.d/90_rackplane.cfg && echo "installed-system: cloud-init datasource NoCloud"
for d in /sys/class/net/*; do
	n=${d##*/}
	[ "$n" = lo ] && continue
	ip link set "$n" up
	udhcpc -i "$n" -n -q -t 10 -T 2 -s /usr/share/udhcpc/default.script && break
done
for doc in meta-data user-data vendor-data network-config; do
	wget -q -O "/tmp/$doc" "$from$doc" && echo "installed-system: fetched $doc"
done
sed -n 's/^ *macaddress: /installed-system: network-config for /p' /tmp/network-config
head -c 2 /tmp/user-data | grep -q '#!' && sh /tmp/user-data
echo "installed-system: phoned home: $(wget -q -O - --post-data "instance_id=$id&hostname=$host" "${from}phone-home")"
umount /target
sync
poweroff -f
while :; do sleep 60; done
`

// testDiskImage makes a disk image source: an msdos table with an ESP
// (GRUB for x86_64 EFI at the removable media path, made by grub-mkimage
// with its config built in) and an ext4 root partition, last, holding
// the ephemeral environment's kernel and its initrd with installedInit
// as /init; zstd-compressed, with grow_root.
func testDiskImage(t *testing.T, env *ephemeral.Result) diskImage {
	t.Helper()
	work := t.TempDir()
	kernel, err := os.ReadFile(filepath.Join(env.Dir, ephemeral.KernelFile))
	if err != nil {
		t.Fatal(err)
	}
	initrd, err := os.ReadFile(filepath.Join(env.Dir, ephemeral.InitrdFile))
	if err != nil {
		t.Fatal(err)
	}
	rootDir := filepath.Join(work, "root")
	for name, b := range map[string][]byte{"boot/vmlinuz": kernel,
		"boot/initrd.img": append(initrd, pxetest.Overlay(installedInit, nil)...), "etc/hostname": []byte("localhost\n")} {
		p := filepath.Join(rootDir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const espMiB, rootMiB = 8, 112
	root := filepath.Join(work, "root.img")
	mustRun(t, exec.Command("mkfs.ext4", "-q", "-F", "-L", "root", "-d", rootDir, root, fmt.Sprintf("%dM", rootMiB)))

	cfg := filepath.Join(work, "grub.cfg")
	if err := os.WriteFile(cfg, []byte("set timeout=0\nset root=(hd0,msdos2)\nlinux /boot/vmlinuz console=ttyS0,115200n8 panic=-1\ninitrd /boot/initrd.img\nboot\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	efi := filepath.Join(work, "BOOTX64.EFI")
	mustRun(t, exec.Command("grub-mkimage", "-O", "x86_64-efi", "-o", efi, "-p", "/EFI/BOOT", "-c", cfg,
		"part_msdos", "fat", "ext2", "linux", "normal", "boot", "configfile", "echo", "search"))
	efiBody, err := os.ReadFile(efi)
	if err != nil {
		t.Fatal(err)
	}
	esp := filepath.Join(work, "esp.img")
	if err := os.WriteFile(esp, espFAT16(t, espMiB<<20, efiBody), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, exec.Command("fsck.fat", "-n", esp))
	raw := filepath.Join(work, "disk.img")
	size := int64(1+espMiB+rootMiB) << 20
	if err := os.WriteFile(raw, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(raw, size); err != nil {
		t.Fatal(err)
	}
	sf := exec.Command("sfdisk", "-q", raw)
	sf.Stdin = strings.NewReader(fmt.Sprintf("label: dos\nstart=2048, size=%d, type=ef\nstart=%d, type=83\n", espMiB*2048, (1+espMiB)*2048))
	mustRun(t, sf)
	f, err := os.OpenFile(raw, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		file string
		at   int64
	}{{esp, 1 << 20}, {root, (1 + espMiB) << 20}} {
		b, err := os.ReadFile(p.file)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(b, p.at); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	body, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	var z bytes.Buffer
	zw, _ := zstd.NewWriter(&z)
	zw.Write(body)
	zw.Close()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "disk.img.zst"), z.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sumOf := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	// Only the head (table and ESP) is kept to compare with the disk: the
	// race detector multiplies what the test binary holds.
	img := diskImage{dir: src, versionID: "rpdisk/amd64/generic/test/stable/1", raw: bytes.Clone(body[:(1+espMiB)<<20]), size: size, sha256: sumOf(body),
		fileSHA256: sumOf(z.Bytes()), espStart: 1 << 20, espEnd: (1 + espMiB) << 20}
	manifest, _ := json.Marshal(map[string]any{"format": "rackplane.image_manifest.v1", "versions": []any{map[string]any{
		"kind": "image", "os": "rpdisk", "release": "test", "arch": "amd64", "subarch": "generic", "label": "stable", "version": "1",
		"installer": "agent",
		"files":     []any{map[string]any{"name": "disk.img.zst", "sha256": img.fileSHA256, "size": z.Len()}},
		"disk": map[string]any{"file": "disk.img.zst", "compression": "zstd", "size": size, "sha256": img.sha256,
			"table": "msdos", "root_partition": 2, "grow_root": true}}}})
	if err := os.WriteFile(filepath.Join(src, "manifest.json"), manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("test disk image: %d bytes, %d compressed, sha256 %s", size, z.Len(), img.sha256)
	return img
}

// espFAT16 is a FAT16 file system of size bytes holding only
// \EFI\BOOT\BOOTX64.EFI, the removable media path UEFI firmware boots:
// written here, as no FAT tool needs to be installed nor vfat mounted.
// One 512-byte sector a cluster, two FATs, 512 root entries.
func espFAT16(t *testing.T, size int, bootx64 []byte) []byte {
	t.Helper()
	const sector, fatSectors, rootSectors = 512, 64, 32
	total := size / sector
	dataStart := 1 + 2*fatSectors + rootSectors
	clusters := total - dataStart
	fileClusters := (len(bootx64) + sector - 1) / sector
	if clusters < 4085 || clusters+2 > fatSectors*sector/2 || 2+fileClusters+2 > clusters {
		t.Fatalf("ESP of %d bytes cannot hold a FAT16 with a %d-byte BOOTX64.EFI", size, len(bootx64))
	}
	img := make([]byte, size)
	b := img[:sector]
	copy(b, []byte{0xEB, 0x3C, 0x90})
	copy(b[3:], "RACKPLN ")
	binary.LittleEndian.PutUint16(b[11:], sector)
	b[13] = 1 // sectors a cluster
	binary.LittleEndian.PutUint16(b[14:], 1)
	b[16] = 2
	binary.LittleEndian.PutUint16(b[17:], rootSectors*sector/32)
	binary.LittleEndian.PutUint16(b[19:], uint16(total))
	b[21] = 0xF8
	binary.LittleEndian.PutUint16(b[22:], fatSectors)
	binary.LittleEndian.PutUint16(b[24:], 32)
	binary.LittleEndian.PutUint16(b[26:], 64)
	b[36], b[38] = 0x80, 0x29
	binary.LittleEndian.PutUint32(b[39:], 0x52504553)
	copy(b[43:], "NO NAME    FAT16   ")
	b[510], b[511] = 0x55, 0xAA
	// Clusters: 2 EFI, 3 BOOT, 4.. the file.
	fat := make([]byte, fatSectors*sector)
	set := func(c, v int) { binary.LittleEndian.PutUint16(fat[2*c:], uint16(v)) }
	set(0, 0xFFF8)
	set(1, 0xFFFF)
	set(2, 0xFFFF)
	set(3, 0xFFFF)
	for i := 0; i < fileClusters; i++ {
		next := 4 + i + 1
		if i == fileClusters-1 {
			next = 0xFFFF
		}
		set(4+i, next)
	}
	for i := range 2 {
		copy(img[(1+i*fatSectors)*sector:], fat)
	}
	entry := func(at int, name string, attr byte, cluster, size int) {
		e := img[at : at+32]
		copy(e, name)
		e[11] = attr
		binary.LittleEndian.PutUint16(e[24:], 0x5B7E) // 2025-11-30
		binary.LittleEndian.PutUint16(e[26:], uint16(cluster))
		binary.LittleEndian.PutUint32(e[28:], uint32(size))
	}
	clusterAt := func(c int) int { return (dataStart + c - 2) * sector }
	root := (1 + 2*fatSectors) * sector
	entry(root, "EFI        ", 0x10, 2, 0)
	entry(clusterAt(2), ".          ", 0x10, 2, 0)
	entry(clusterAt(2)+32, "..         ", 0x10, 0, 0)
	entry(clusterAt(2)+64, "BOOT       ", 0x10, 3, 0)
	entry(clusterAt(3), ".          ", 0x10, 3, 0)
	entry(clusterAt(3)+32, "..         ", 0x10, 2, 0)
	entry(clusterAt(3)+64, "BOOTX64 EFI", 0x20, 4, len(bootx64))
	copy(img[clusterAt(4):], bootx64)
	return img
}

// checkWritten compares the disk with the image: the ESP byte for byte,
// the MBR but for the root partition's size, which reaches the disk's end.
func checkWritten(t *testing.T, disk string, img diskImage, diskSize int64) {
	t.Helper()
	b := diskHead(t, disk, int(img.espEnd))
	if !bytes.Equal(b[img.espStart:img.espEnd], img.raw[img.espStart:img.espEnd]) {
		t.Error("the ESP on the disk is not the image's")
	}
	mbr, want := bytes.Clone(b[:512]), bytes.Clone(img.raw[:512])
	start := binary.LittleEndian.Uint32(mbr[446+16+8:])
	if got := int64(binary.LittleEndian.Uint32(mbr[446+16+12:])); int64(start)+got != diskSize/512 {
		t.Errorf("the root partition ends at sector %d, want the disk's end %d", int64(start)+got, diskSize/512)
	}
	copy(mbr[446+16+12:446+16+16], want[446+16+12:446+16+16])
	if !bytes.Equal(mbr, want) {
		t.Error("the MBR differs from the image's in more than the root partition's size")
	}
}

// relay is an HTTP relay between machines and their rack.
type relay struct {
	flip    atomic.Bool  // flip a byte of the file from now on
	flipped atomic.Int64 // responses of the file with a byte flipped
}

// flippingRelay serves HTTP on addr in namespace ns, relaying every
// request to target (reached in ns too); once flip is set, each response
// for a path ending in suffix has the byte at its middle (by its
// Content-Length) flipped on its way through, as a faulty switch or a
// hostile box on the boot network would.
func flippingRelay(t *testing.T, ns, addr, target, suffix string) *relay {
	t.Helper()
	r := &relay{}
	to, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(to)
	proxy.Transport = netnstest.HTTPClient(ns).Transport
	proxy.ModifyResponse = func(resp *http.Response) error {
		if r.flip.Load() && strings.HasSuffix(resp.Request.URL.Path, suffix) && resp.ContentLength > 1 {
			r.flipped.Add(1)
			resp.Body = &flipAt{ReadCloser: resp.Body, at: resp.ContentLength / 2}
		}
		return nil
	}
	var ln net.Listener
	if err := netnstest.InNS(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("relay on %s in %s: %v", addr, ns, err)
	}
	srv := &http.Server{Handler: proxy}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return r
}

// flipAt flips the byte at offset at of the body it reads.
type flipAt struct {
	io.ReadCloser
	at, off int64
}

func (f *flipAt) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if f.at >= f.off && f.at < f.off+int64(n) {
		p[f.at-f.off] ^= 0x10
	}
	f.off += int64(n)
	return n, err
}

// machineDeployment is the machine's current operation.
func machineDeployment(t *testing.T, a api, id string) string {
	t.Helper()
	var m struct {
		DeploymentID string `json:"deployment_id"`
	}
	a.call("GET", "/api/v1/machines/"+id, nil, nil, &m)
	return m.DeploymentID
}

func machineEvents(t *testing.T, a api, id string) []events.Event {
	t.Helper()
	var evs struct{ Events []events.Event }
	a.call("GET", "/api/v1/events?limit=1000&stream="+url.QueryEscape(events.MachineStreamName(id)), nil, nil, &evs)
	return evs.Events
}

// bootHandoffs are the rack's boot hand-offs.
func bootHandoffs(t *testing.T, a api) []events.Event {
	t.Helper()
	var evs struct{ Events []events.Event }
	a.call("GET", "/api/v1/events?limit=1000&type="+url.QueryEscape(events.TypeBootHandoff), nil, nil, &evs)
	return evs.Events
}

// checkWrittenAndBootedFromDisk checks what a deployment of a disk image
// to machine id (MAC mac) left in the event log: the agent wrote the
// image's size bytes to vda, read them back from the disk with the
// image's sha256, and after it reported them written the rack handed
// the machine local boot configs only, no kernel or initrd: the machine
// rebooted from its disk, not the network. Under UEFI (uefi) the agent
// made the disk's ESP the firmware's next boot, and the machine did not
// ask the rack at all; under BIOS it asked and was told to boot locally.
func checkWrittenAndBootedFromDisk(t *testing.T, a api, id, mac string, size int64, sha string, uefi bool) {
	t.Helper()
	var writtenAt time.Time
	var steps []string
	for _, e := range machineEvents(t, a, id) {
		switch e.Type {
		case events.TypeAgentStepReported:
			var s events.AgentStepReported
			json.Unmarshal(e.Data, &s)
			if s.Purpose == events.BootPurposeDeploy {
				steps = append(steps, fmt.Sprintf("%s %s %d %s", s.Name, s.State, s.Progress, s.Message))
			}
		case events.TypeAgentFinished:
			var f events.AgentFinished
			json.Unmarshal(e.Data, &f)
			if f.Purpose == events.BootPurposeDeploy && f.Success {
				writtenAt = e.Time
			}
		}
	}
	t.Logf("agent steps: %q", steps)
	all := strings.Join(steps, "\n")
	if writtenAt.IsZero() || !strings.Contains(all, fmt.Sprintf("write:vda done 100 %d bytes, sha256 %s", size, sha)) ||
		!strings.Contains(all, fmt.Sprintf("verify:vda done 100 read back %d bytes from vda, sha256 %s", size, sha)) {
		t.Errorf("the agent's steps %q lack the image written, and read back from the disk, with its sha256 %s", steps, sha)
	}
	var asked []string
	for _, e := range bootHandoffs(t, a) {
		var h events.BootHandoff
		json.Unmarshal(e.Data, &h)
		if !e.Time.After(writtenAt) || h.MAC != "" && h.MAC != mac {
			continue
		}
		// A kernel or initrd handed out after the image was written
		// would be this machine's (the others' have their own MACs; a
		// versioned file carries none). Its firmware still loads iPXE
		// (a bootloader) to ask for its config.
		if h.Route == "versioned" && !strings.HasPrefix(h.VersionID, "bootloaders/") || h.MAC == mac && h.Purpose != events.BootPurposeLocal {
			t.Errorf("after the image was written the rack handed out %s %s of %s (purpose %s): want local boot configs only",
				h.Route, h.FileName, h.VersionID, h.Purpose)
		}
		if h.MAC == mac {
			asked = append(asked, h.FileName+" "+h.Purpose)
		}
	}
	t.Logf("boot configs the VM asked for after the image was written: %q", asked)
	switch next := "boot-next done 100 BootNext is Boot"; {
	case uefi && !strings.Contains(all, next):
		t.Errorf("the agent's steps %q lack %q: the firmware's next boot was not set to the disk", steps, next)
	case uefi && len(asked) > 0:
		t.Error("the UEFI VM asked the rack after the reboot: BootNext did not take it to its disk")
	case !uefi && len(asked) == 0:
		t.Error("the VM did not ask the rack after the reboot (boot order?)")
	}
}

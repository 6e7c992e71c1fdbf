package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/internal/pxetest"
)

// vmInit brings up the VM's network, fetches the preseed URL of its
// kernel command line over HTTP and prints what it got. When the preseed
// has a "# report: <url>" line, it reports success there, as an
// installer's last step would. It then powers the VM off, unless the
// command line has rackplane.test.stay: then it runs on, as an installed
// system would, until something switches the VM off.
const vmInit = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox insmod /e1000.ko
/bin/busybox ifconfig lo up
/bin/busybox ifconfig eth0 up
/bin/busybox udhcpc -i eth0 -s /usr/share/udhcpc/default.script -q -n -t 10 -T 1
url=
stay=
for w in $(/bin/busybox cat /proc/cmdline); do
	case "$w" in url=*) url="${w#url=}" ;; rackplane.test.stay) stay=1 ;; esac
done
echo "CMDLINE: $(/bin/busybox cat /proc/cmdline)"
echo "PRESEED-URL: $url"
/bin/busybox wget -q -O /preseed.txt "$url"
echo PRESEED-BEGIN
/bin/busybox cat /preseed.txt
echo PRESEED-END
report=$(/bin/busybox sed -n 's/^# report: //p' /preseed.txt)
if [ -n "$report" ]; then
	echo "REPORT: $(/bin/busybox wget -q -O - --post-data 'result=success&message=installed+by+the+test+VM' "$report")"
fi
if [ -n "$stay" ]; then
	# Runs on, as an installed system would, until it is switched off.
	echo STAYING-ON
	exec /bin/busybox sleep 100000
fi
/bin/busybox poweroff -f
`

type api struct {
	t      *testing.T
	base   string
	token  string
	client *http.Client // nil: http.DefaultClient
}

func (a api) call(method, path string, header map[string]string, body any, out any) int {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+a.token)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := a.client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			a.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode
}

// pxeSite is a regiond and a rackd with a bootable image (Debian's kernel
// and the test initramfs) imported through the API.
type pxeSite struct {
	a        api
	rackID   string
	tftpPort string
	qemu     string
	bootFile string // what DHCP tells the VM to load
	rackHTTP string

	ns         *natsserver.Test
	region     *proc
	regionArgs []string
}

func newPXESite(t *testing.T, filesOverHTTP bool, bootFile string) *pxeSite {
	t.Helper()
	return newPXESiteWith(t, filesOverHTTP, bootFile)
}

// newPXESiteWith is newPXESite with more flags for rackd.
func newPXESiteWith(t *testing.T, filesOverHTTP bool, bootFile string, rackFlags ...string) *pxeSite {
	t.Helper()
	qemu, kernel, initrd := vmImage(t)

	ns := natsserver.StartTest(t)
	dbURL := pgtest.NewDatabase(t)
	regionAddr := freeAddr(t)
	regionArgs := []string{"-no-nats-callout", "-nats-url", ns.URL, "-database-url", dbURL, "-http-addr", regionAddr}
	site := &pxeSite{a: api{t: t, base: "http://" + regionAddr, token: token(t, dbURL)}, qemu: qemu, bootFile: bootFile,
		ns: ns, region: start(t, "regiond", regionArgs...), regionArgs: regionArgs}
	rackHTTP, tftpAddr := freeAddr(t), freeUDPAddr(t)
	site.rackHTTP = rackHTTP
	_, httpPort, _ := net.SplitHostPort(rackHTTP)
	_, site.tftpPort, _ = net.SplitHostPort(tftpAddr)
	start(t, "rackd", append([]string{"-insecure-nats", "-nats-url", ns.URL, "-data-dir", filepath.Join(t.TempDir(), "rack"), "-name", "pxe-rack",
		"-http-addr", rackHTTP, "-tftp-addr", tftpAddr, "-boot-url", "http://10.0.2.2:" + httpPort,
		fmt.Sprintf("-boot-files-over-http=%v", filesOverHTTP),
		fmt.Sprintf("-import-system-bootloaders=%v", bootFile != "ipxe/boot.ipxe"), "-heartbeat-interval", "1s"}, rackFlags...)...)
	eventually(t, 15*time.Second, "rack online", func() error {
		rs, err := racks(context.Background(), site.a.base, site.a.token)
		if err != nil || len(rs) != 1 || !rs[0].Online {
			return fmt.Errorf("racks %+v %v", rs, err)
		}
		site.rackID = rs[0].ID
		return nil
	})

	site.a.importBookworm(site.rackID, kernel, initrd)
	return site
}

// machineRef is a machine as the API returns it.
type machineRef struct{ ID, Status string }

// deployNew enrols a machine (hostname, mac), creates preseed name with
// tmpl, and deploys debian/bookworm with console=ttyS0, panic=-1 and
// params.
func (a api) deployNew(hostname, mac, preseed, tmpl string, params ...string) machineRef {
	t := a.t
	t.Helper()
	var m machineRef
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": hostname, "macs": []string{mac}}, &m); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	if code := a.call("POST", "/api/v1/preseeds", nil, map[string]any{"name": preseed, "content": tmpl}, nil); code != 201 {
		t.Fatalf("create preseed: %d", code)
	}
	deploy := map[string]any{"os": "debian", "release": "bookworm", "kernel_params": append([]string{"console=ttyS0", "panic=-1"}, params...)}
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/deploy", nil, deploy, &m); code != 200 || m.Status != "deploying" {
		t.Fatalf("deploy: %d %+v", code, m)
	}
	return m
}

// vmImage returns QEMU and what the test VMs boot: Debian's kernel, and an
// initramfs running vmInit with the e1000 driver.
func vmImage(t *testing.T) (qemu string, kernel, initrd []byte) {
	t.Helper()
	qemu = pxetest.QEMU(t)
	kernel, err := os.ReadFile(pxetest.Kernel(t))
	if err != nil {
		t.Fatal(err)
	}
	return qemu, kernel, pxetest.Initramfs(t, vmInit, map[string][]byte{"e1000.ko": pxetest.E1000(t)})
}

// importBookworm imports kernel and initrd as debian/bookworm into rack
// rackID through the API, and waits until the OS registry lists it.
func (a api) importBookworm(rackID string, kernel, initrd []byte) {
	a.t.Helper()
	a.importSource(rackID, bookwormSource(a.t, kernel, initrd), 60*time.Second)
}

// importSource imports the bookworm image source src into rack rackID
// through the API, and waits up to timeout until the OS registry lists it.
func (a api) importSource(rackID, src string, timeout time.Duration) {
	t := a.t
	t.Helper()
	var imp struct{ ID, State string }
	if code := a.call("POST", "/api/v1/racks/"+rackID+"/images/imports", nil, map[string]string{"dir": src}, &imp); code != 202 {
		t.Fatalf("import: %d %+v", code, imp)
	}
	eventually(t, timeout, "image imported and reported", func() error {
		var oses struct {
			OSes []struct{ OS, Release string }
		}
		a.call("GET", "/api/v1/os", nil, nil, &oses)
		if len(oses.OSes) != 1 || oses.OSes[0].Release != "bookworm" {
			return fmt.Errorf("os registry %+v", oses)
		}
		return nil
	})
}

// bookwormSource is an image source directory with a manifest of one
// version, debian/bookworm/amd64/generic, made of kernel and initrd.
func bookwormSource(t *testing.T, kernel, initrd []byte) string {
	t.Helper()
	return imageSource(t, "debian", "bookworm", kernel, initrd)
}

// imageSource is an image source directory with a manifest of one
// version, os/release/amd64/generic, made of kernel and initrd.
func imageSource(t *testing.T, osName, release string, kernel, initrd []byte) string {
	t.Helper()
	return imageSourceWith(t, osName, release, kernel, initrd, nil)
}

// imageSourceWith is imageSource with more fields of the version (such
// as its installer family).
func imageSourceWith(t *testing.T, osName, release string, kernel, initrd []byte, fields map[string]any) string {
	t.Helper()
	src := t.TempDir()
	var files []map[string]any
	for name, body := range map[string][]byte{"linux": kernel, "initrd.gz": initrd} {
		if err := os.WriteFile(filepath.Join(src, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(body)
		files = append(files, map[string]any{"name": name, "sha256": hex.EncodeToString(sum[:]), "size": len(body)})
	}
	version := map[string]any{"kind": "image", "os": osName, "release": release, "arch": "amd64", "subarch": "generic",
		"label": "stable", "version": "20261123", "files": files}
	for k, v := range fields {
		version[k] = v
	}
	manifest, _ := json.Marshal(map[string]any{"format": "rackplane.image_manifest.v1", "versions": []any{version}})
	if err := os.WriteFile(filepath.Join(src, "manifest.json"), manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	return src
}

// boot PXE-boots a QEMU VM with mac from the rack and returns what it
// printed on its serial console.
func (p *pxeSite) boot(t *testing.T, mac string) string {
	t.Helper()
	serial := filepath.Join(t.TempDir(), "serial.log")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.qemu, "-accel", "tcg", "-m", "384", "-nographic", "-no-reboot", "-monitor", "none",
		"-serial", "file:"+serial,
		"-netdev", "user,id=n0,bootfile=tftp://10.0.2.2:"+p.tftpPort+"/"+p.bootFile,
		"-device", "e1000,netdev=n0,mac="+mac, "-boot", "n")
	out, err := cmd.CombinedOutput()
	log, _ := os.ReadFile(serial)
	if err != nil {
		t.Fatalf("qemu: %v\n%s\nserial:\n%s", err, out, tail(string(log), 80))
	}
	return string(log)
}

// preseedOf returns what the VM printed between its preseed markers.
func preseedOf(t *testing.T, serial string) string {
	t.Helper()
	i, j := strings.Index(serial, "PRESEED-BEGIN"), strings.Index(serial, "PRESEED-END")
	if i < 0 || j < i {
		t.Fatalf("the VM printed no preseed\nserial:\n%s", tail(serial, 80))
	}
	return strings.ReplaceAll(strings.TrimSpace(serial[i+len("PRESEED-BEGIN"):j]), "\r\n", "\n")
}

// TestDeployedVMFetchesItsPinnedPreseed creates a machine for a QEMU VM's
// MAC and deploys it with a preseed; the VM PXE-boots through rackd (iPXE
// script over TFTP, kernel and initrd over HTTP) into an initramfs that
// fetches the preseed URL from its kernel command line and prints it, then
// reports success to the URL the preseed gave it: the machine is deployed
// and the rack boots it from its disk from then on. After an edit of the
// preseed, a redeploy serves the new version, and the history shows both
// with who changed what.
func TestDeployedVMFetchesItsPinnedPreseed(t *testing.T) {
	vmTest(t)
	site := newPXESite(t, true, "ipxe/boot.ipxe")
	a := site.a
	const mac = "52:54:00:7a:00:01"
	tmpl := "#cloud-config\nhostname: {{.Machine.Hostname}}\n# preseed {{.Preseed.Name}} version {{.Preseed.Version}} for {{.OS.Name}}/{{.OS.Release}} on {{.Machine.MAC}}\n# report: {{.URLs.Status}}\n"
	m := a.deployNew("vm1", mac, "vm", tmpl)
	deploy := map[string]any{"os": "debian", "release": "bookworm", "kernel_params": []string{"console=ttyS0", "panic=-1"}}

	boot := func(wantVersion int) {
		t.Helper()
		serial := site.boot(t, mac)
		got := preseedOf(t, serial)
		want := fmt.Sprintf("hostname: vm1\n# preseed vm version %d for debian/bookworm on %s", wantVersion, mac)
		if !strings.Contains(got, want) {
			t.Fatalf("the VM got preseed\n%s\nwant it to contain\n%s", got, want)
		}
		t.Logf("VM booted and fetched preseed version %d:\n%s", wantVersion, got)
		// The VM's report reached the region through the rack.
		if !strings.Contains(serial, "REPORT: machine "+m.ID+" is deployed") {
			t.Fatalf("the VM's success report was not taken\nserial:\n%s", tail(serial, 40))
		}
		var after struct{ Status string }
		a.call("GET", "/api/v1/machines/"+m.ID, nil, nil, &after)
		if after.Status != "deployed" {
			t.Fatalf("after the VM reported success the machine is %s", after.Status)
		}
		eventually(t, 10*time.Second, "the rack boots the deployed VM from its disk", func() error {
			resp, err := http.Get("http://" + site.rackHTTP + "/ipxe/" + strings.ReplaceAll(mac, ":", "-") + ".ipxe")
			if err != nil {
				return err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), "kernel") || !strings.Contains(string(b), "exit") {
				return fmt.Errorf("iPXE script %q", b)
			}
			return nil
		})
	}
	boot(1)

	// Edit the preseed; a redeploy gets the new version.
	if code := a.call("PUT", "/api/v1/preseeds/vm", map[string]string{"If-Match": `"1"`},
		map[string]any{"content": strings.Replace(tmpl, "#cloud-config", "#cloud-config\n# edited", 1), "comment": "second take"}, nil); code != 200 {
		t.Fatalf("edit preseed: %d", code)
	}
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/release", nil, nil, nil); code != 200 {
		t.Fatalf("release: %d", code)
	}
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/deploy", nil, deploy, &m); code != 200 {
		t.Fatalf("redeploy: %d", code)
	}
	boot(2)

	var hist struct {
		Versions []struct {
			Version         int64
			Author, Comment string
		}
	}
	a.call("GET", "/api/v1/preseeds/vm/versions", nil, nil, &hist)
	if len(hist.Versions) != 2 || hist.Versions[0].Author != "e2e" || hist.Versions[1].Author != "e2e" || hist.Versions[1].Comment != "second take" {
		t.Fatalf("preseed history: %+v", hist)
	}
	var audit struct {
		Entries []struct{ Actor, Action string }
	}
	a.call("GET", "/api/v1/audit?target=preseed/vm", nil, nil, &audit)
	if len(audit.Entries) != 2 || audit.Entries[0].Actor != "e2e" || audit.Entries[1].Action != "PUT /api/v1/preseeds/{name}" {
		t.Fatalf("audit of the preseed: %+v", audit)
	}
}

// TestPXEBootThroughRackdOverTFTP boots a deployed VM through rackd with
// every boot file over TFTP: the iPXE script, then kernel and initrd. The
// command line the VM's kernel printed carries values rendered for that
// VM's machine, and the rack's transfer events (in the region's log) show
// the kernel and initrd went over TFTP.
func TestPXEBootThroughRackdOverTFTP(t *testing.T) {
	vmTest(t)
	t.Run("ipxe", func(t *testing.T) { bootOverTFTP(t, "ipxe/boot.ipxe", "52:54:00:7a:00:02") })
	// pxelinux.0 and its ldlinux.c32 come from the rack's imported
	// bootloader packages; pxelinux then reads pxelinux.cfg/01-<mac>.
	t.Run("pxelinux", func(t *testing.T) { bootOverTFTP(t, "pxelinux.0", "52:54:00:7a:00:03") })
}

func bootOverTFTP(t *testing.T, bootFile, mac string) {
	site := newPXESite(t, false, bootFile)
	var m struct{ ID string }
	if code := site.a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "vm2", "macs": []string{mac}}, &m); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	if code := site.a.call("POST", "/api/v1/preseeds", nil, map[string]any{"name": "p", "content": "machine {{.Machine.ID}}\n"}, nil); code != 201 {
		t.Fatalf("create preseed: %d", code)
	}
	if code := site.a.call("POST", "/api/v1/machines/"+m.ID+"/deploy", nil,
		map[string]any{"os": "debian", "release": "bookworm", "kernel_params": []string{"console=ttyS0", "panic=-1"}}, nil); code != 200 {
		t.Fatalf("deploy: %d", code)
	}
	serial := site.boot(t, mac)
	var cmdline string
	for _, l := range strings.Split(serial, "\n") {
		if c, ok := strings.CutPrefix(strings.TrimSpace(l), "CMDLINE: "); ok {
			cmdline = c
		}
	}
	t.Logf("kernel command line: %s", cmdline)
	if !strings.Contains(cmdline, "rackplane.machine="+m.ID) || !strings.Contains(cmdline, "rackplane.hostname=vm2") {
		t.Fatalf("command line %q lacks the values rendered for %s\nserial:\n%s", cmdline, mac, tail(serial, 40))
	}
	if got := preseedOf(t, serial); got != "machine "+m.ID {
		t.Fatalf("preseed %q", got)
	}
	eventually(t, 10*time.Second, "TFTP transfers of kernel and initrd in the log", func() error {
		var evs struct {
			Events []struct {
				Data struct {
					Protocol, Path, Error string
					Bytes, Size           int64
				}
			}
		}
		site.a.call("GET", "/api/v1/events?limit=1000&type=rackplane.rack.boot_transfer.v1", nil, nil, &evs)
		got := map[string]bool{}
		for _, e := range evs.Events {
			d := e.Data
			if d.Protocol == "tftp" && d.Error == "" && d.Bytes == d.Size && d.Size > 0 {
				got[filepath.Base(d.Path)] = true
			}
		}
		if !got["linux"] || !got["initrd.gz"] {
			return fmt.Errorf("complete TFTP transfers: %v", got)
		}
		return nil
	})
}

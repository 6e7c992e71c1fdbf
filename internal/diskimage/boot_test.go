package diskimage

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/pxetest"
)

// seedServer is the metadata service the booted system's seed points
// at: it serves the instance's data and records what the VM asked.
type seedServer struct {
	mu        sync.Mutex
	got       []string // "GET /path" or "POST /path body"
	phoneHome chan url.Values
}

func (s *seedServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
	s.mu.Lock()
	s.got = append(s.got, strings.TrimSpace(r.Method+" "+r.URL.RequestURI()+" "+string(body)))
	s.mu.Unlock()
	// Paths are /<instance>/<file>.
	iid, file, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	host := "http://" + r.Host
	switch file {
	case "meta-data":
		fmt.Fprintf(w, "instance-id: %s\nlocal-hostname: host-%s\n", iid, iid)
	case "user-data":
		// The script tells the server it ran, with the host name the
		// system took from meta-data.
		fmt.Fprintf(w, "#!/bin/sh\nwget -q -O /dev/null \"%s/%s/user-data-ran?hostname=$(hostname)\"\n", host, iid)
	case "vendor-data":
		fmt.Fprint(w, "#cloud-config\n{}\n")
	case "network-config":
		fmt.Fprint(w, "version: 2\nethernets:\n  nic:\n    match:\n      macaddress: \"52:54:00:12:34:56\"\n    dhcp4: true\n")
	case "user-data-ran":
	case "phone-home":
		v, _ := url.ParseQuery(string(body))
		select {
		case s.phoneHome <- v:
		default:
		}
	default:
		http.NotFound(w, r)
	}
}

func (s *seedServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

// TestBoot boots the amd64 image from its disk under SeaBIOS and under
// OVMF, and the arm64 one under AAVMF, as a machine does after the agent
// wrote it and its seed: the system must fetch its data from the seed's
// URL, run the user-data script, phone home with its instance id and
// say it is up.
func TestBoot(t *testing.T) {
	longTest(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &seedServer{phoneHome: make(chan url.Values, 1)}
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	// QEMU's user network takes the guest's connections to 10.0.2.2 to
	// the host's loopback.
	base := fmt.Sprintf("http://10.0.2.2:%d", ln.Addr().(*net.TCPAddr).Port)
	const mac = "52:54:00:12:34:56"

	for _, fw := range []struct {
		name, arch string
		// vm returns QEMU and its arguments of the machine and
		// firmware.
		vm func(t *testing.T) (string, []string)
	}{
		{"seabios", "amd64", func(t *testing.T) (string, []string) {
			return pxetest.QEMU(t), []string{"-machine", "pc", "-device", "virtio-net-pci,netdev=n0,romfile=,mac=" + mac}
		}},
		{"ovmf", "amd64", func(t *testing.T) (string, []string) {
			return pxetest.QEMU(t), pxetest.OVMF(t, mac, pxetest.OVMFOptions{})
		}},
		{"aavmf", "arm64", func(t *testing.T) (string, []string) {
			qemu, firmware := pxetest.QEMUARM64(t)
			return qemu, append([]string{"-machine", "virt", "-cpu", "cortex-a57",
				"-device", "virtio-net-pci,netdev=n0,romfile=,mac=" + mac}, firmware...)
		}},
	} {
		t.Run(fw.name, func(t *testing.T) {
			qemu, machine := fw.vm(t)
			res := build(t, fw.arch)
			disk := rawDisk(t, res)
			iid := "i-" + fw.name
			seed := map[string][]byte{"meta-data": fmt.Appendf(nil, "instance-id: %s\nlocal-hostname: seed-%s\nseedfrom: %s/%s/\n", iid, fw.name, base, iid)}
			if err := WriteSeed(context.Background(), disk, "nocloud-net", seed); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			log, exited := startVM(t, qemu, disk, machine)

			// TCG boots the kernel in a minute or two; the bound is
			// generous for a loaded machine.
			bound := time.After(6 * time.Minute)
			var ph url.Values
		wait:
			for {
				select {
				case ph = <-srv.phoneHome:
					break wait
				case err := <-exited:
					t.Fatalf("QEMU exited: %v\nserial:\n%s", err, log())
				case <-bound:
					t.Fatalf("no phone-home within 6m; requests %q\nserial:\n%s", srv.requests(), log())
				case <-time.After(time.Second):
					// Up without phoning home: it will not.
					if strings.Contains(log(), "rackplane: installed system up") && len(srv.phoneHome) == 0 {
						t.Fatalf("the system is up and did not phone home; requests %q\nserial:\n%s", srv.requests(), log())
					}
				}
			}
			if ph.Get("instance_id") != iid || ph.Get("hostname") != "host-"+iid {
				t.Errorf("phone-home %v, want instance_id=%s hostname=host-%s", ph, iid, iid)
			}
			t.Logf("%s: booted from disk and phoned home in %s", fw.name, time.Since(start).Round(time.Second))
			reqs := strings.Join(srv.requests(), "\n")
			for _, want := range []string{
				"GET /" + iid + "/meta-data", "GET /" + iid + "/user-data", "GET /" + iid + "/vendor-data", "GET /" + iid + "/network-config",
				"GET /" + iid + "/user-data-ran?hostname=host-" + iid,
				"POST /" + iid + "/phone-home instance_id=" + iid + "&hostname=host-" + iid,
			} {
				if !strings.Contains(reqs, want) {
					t.Errorf("the server had no %q; it had:\n%s", want, reqs)
				}
			}
			out := console(t, log, []string{
				"rackplane: seed /var/lib/cloud/seed/nocloud-net instance-id " + iid + " seedfrom " + base + "/<credential>/",
				"rackplane: DHCP on eth0",
				"----- BEGIN RACKPLANE user-data -----", "----- END RACKPLANE network-config -----",
				"rackplane: user-data exited with status 0",
				"rackplane: phoned home",
				"rackplane: installed system up",
			})
			if strings.Contains(out, "cannot load module") {
				t.Errorf("a module did not load:\n%s", out)
			}
		})
	}
}

// rawDisk decompresses res's image into a file of t's.
func rawDisk(t *testing.T, res *Result) string {
	t.Helper()
	disk := filepath.Join(t.TempDir(), "disk.img")
	if _, _, err := Decompress(filepath.Join(res.Dir, DiskFile), disk); err != nil {
		t.Fatal(err)
	}
	return disk
}

// startVM boots a VM from disk (virtio, first in the boot order) with
// machine's arguments, and kills it when t ends; netdev n0 is QEMU's
// user network. It returns the VM's serial console so far and what
// QEMU exited with.
func startVM(t *testing.T, qemu, disk string, machine []string) (serial func() string, exited <-chan error) {
	t.Helper()
	log := filepath.Join(t.TempDir(), "serial.log")
	args := append([]string{"-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-monitor", "none",
		"-serial", "file:" + log, "-netdev", "user,id=n0",
		"-drive", "if=none,id=d0,format=raw,file=" + disk, "-device", "virtio-blk-pci,drive=d0,bootindex=0"},
		machine...)
	ctx, cancel := context.WithCancel(context.Background())
	var out strings.Builder
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		if err != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w: %s", err, out.String())
		}
		done <- err
	}()
	t.Cleanup(func() {
		cancel() // kills QEMU
		<-done
	})
	return func() string { b, _ := os.ReadFile(log); return string(b) }, done
}

// TestBootLocalSeed boots the image with a nocloud seed holding the
// data itself and naming the second of two NICs: the system must take
// that NIC, run the seed's user-data and set the host name, without
// any seedfrom.
func TestBootLocalSeed(t *testing.T) {
	qemu := pxetest.QEMU(t)
	res := build(t, "amd64")
	ran := make(chan string, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case ran <- r.URL.RequestURI():
		default:
		}
	}))
	t.Cleanup(hs.Close)
	port := hs.Listener.Addr().(*net.TCPAddr).Port
	disk := rawDisk(t, res)
	const second = "52:54:00:12:34:99"
	seed := map[string][]byte{
		"meta-data":      []byte("instance-id: i-local\nlocal-hostname: local-host\n"),
		"user-data":      fmt.Appendf(nil, "#!/bin/sh\nwget -q -O /dev/null \"http://10.0.2.2:%d/ran?hostname=$(hostname)\"\n", port),
		"network-config": []byte("version: 2\nethernets:\n  second:\n    match:\n      macaddress: \"" + second + "\"\n    dhcp4: true\n"),
	}
	if err := WriteSeed(context.Background(), disk, "nocloud", seed); err != nil {
		t.Fatal(err)
	}
	// The first NIC has a network of its own, which leads nowhere.
	log, exited := startVM(t, qemu, disk, []string{"-machine", "pc",
		"-netdev", "user,id=n1,restrict=on", "-device", "virtio-net-pci,netdev=n1,romfile=,mac=52:54:00:12:34:01",
		"-device", "virtio-net-pci,netdev=n0,romfile=,mac=" + second})
	select {
	case got := <-ran:
		if got != "/ran?hostname=local-host" {
			t.Errorf("user-data asked %s, want /ran?hostname=local-host", got)
		}
	case err := <-exited:
		t.Fatalf("QEMU exited: %v\nserial:\n%s", err, log())
	case <-time.After(6 * time.Minute):
		t.Fatalf("user-data did not run within 6m:\n%s", log())
	}
	out := console(t, log, []string{
		"rackplane: seed /var/lib/cloud/seed/nocloud instance-id i-local seedfrom none",
		"rackplane: DHCP on eth1",
		"----- BEGIN RACKPLANE user-data -----",
		"rackplane: user-data exited with status 0",
		"rackplane: installed system up",
	})
	if strings.Contains(out, "phone") {
		t.Errorf("phoned home without a seedfrom:\n%s", out)
	}
}

// console waits up to a minute for the system to say it is up (it does
// right after the steps the tests wait for), checks that the console
// has each of want, and returns it.
func console(t *testing.T, log func() string, want []string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(log(), "rackplane: installed system up") && time.Now().Before(deadline) {
		time.Sleep(time.Second)
	}
	out := log()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("the console has no %q:\n%s", w, out)
		}
	}
	return out
}

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/netns"
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/internal/pxetest"
)

// debianInstallerAMD64 is where Debian package
// debian-installer-12-netboot-amd64 installs the installer's netboot
// kernel and initrd.
const debianInstallerAMD64 = "/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64"

// TestDebianInstallerRunsItsPreseed deploys a machine with Debian's real
// netboot installer (an image of installer family debian-installer) and
// a d-i preseed whose early_command calls the test's own HTTP server. The
// VM boots from the rack of `rackplane dev` on a lab segment, whose DHCP
// gives d-i's own DHCP client an address and no boot file (a URL there
// would be loaded before url=). With the kernel parameters the rack
// renders for the family (auto=true priority=critical, locale, keymap,
// hostname, the boot NIC's MAC, url= with the deployment's credential)
// d-i asks nothing, configures the NIC it booted from (the VM's second),
// fetches the preseed from the rack and runs its early_command: the proof
// the installer executed our preseed. It stops later, for want of a
// mirror; the test ends there.
func TestDebianInstallerRunsItsPreseed(t *testing.T) {
	endToEnd(t)
	// A VM of its own, on a namespace of its own: it runs beside the
	// other deployment tests, which keeps CI within its time.
	t.Parallel()
	qemu := pxetest.QEMU(t)
	var files [2][]byte
	for i, name := range []string{"linux", "initrd.gz"} {
		b, err := os.ReadFile(filepath.Join(debianInstallerAMD64, name))
		if err != nil {
			t.Fatalf("the Debian installer is missing: install Debian package debian-installer-12-netboot-amd64 (%v)", err)
		}
		files[i] = b
	}

	// netcfg asks for name servers, at critical priority, when DHCP
	// gives none: the lab's subnet gives one (nothing here looks a name
	// up; the preseed URL and the early_command's are addresses).
	subnets := filepath.Join(t.TempDir(), "subnets.json")
	writeJSON(t, subnets, []map[string]any{{"cidr": "10.20.0.0/24", "router": "10.20.0.2", "dns_servers": []string{"10.20.0.3"},
		"ranges": []map[string]string{{"start": "10.20.0.100", "end": "10.20.0.120"}}}})
	seg, a, rackID := devLab(t, "-dhcp-subnets", subnets)
	vmNS, tap := seg.Tap()
	early := earlyCommandServer(t, seg)

	// The manifest the test writes, as an importer of Debian's netboot
	// tree would: installer family debian-installer.
	a.importSource(rackID, imageSourceWith(t, "debian", "bookworm", files[0], files[1], map[string]any{"installer": events.InstallerDebian}),
		2*time.Minute)
	const mac = "52:54:00:de:12:01"
	var m machineRef
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "di1", "macs": []string{mac}}, &m); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	// {{.Machine.ID}} in the path: the call says whose installer made it.
	preseed := "# Debian installer, preseeded by Rackplane\n" +
		"d-i debian-installer/locale string en_US.UTF-8\n" +
		"d-i keyboard-configuration/xkb-keymap select us\n" +
		"d-i preseed/early_command string wget -q -O /dev/null " + early.url + "/early/{{.Machine.ID}}\n" +
		"d-i preseed/late_command string wget -q -O /dev/null --post-data result=success {{.URLs.Status}}\n"
	var created struct{ Version struct{ Format string } }
	if code := a.call("POST", "/api/v1/preseeds", nil, map[string]any{"name": "debian", "content": preseed}, &created); code != 201 ||
		created.Version.Format != events.PreseedFormatDebian {
		t.Fatalf("create preseed: %d, format %q", code, created.Version.Format)
	}
	deploy := map[string]any{"os": "debian", "release": "bookworm", "preseed": "debian", "kernel_params": []string{"console=ttyS0,115200n8", "no_timer_check"}}
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/deploy", nil, deploy, &m); code != 200 || m.Status != "deploying" {
		t.Fatalf("deploy: %d %+v", code, m)
	}

	// d-i needs its memory: with less than about 1 GiB it goes into its
	// low-memory mode, which asks questions.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	// The VM has a first NIC on no network at all, and boots from its
	// second: d-i must configure the NIC it booted from, not ask which
	// (as it does, at critical priority, with more than one) nor take
	// the first, where DHCP would time out.
	vm := startVM(ctx, t, qemu, vmNS, tap, 1280, []string{"-nic", "none", "-device", "e1000,mac=52:54:00:de:12:02",
		"-device", "e1000,netdev=n0,mac=" + mac + ",bootindex=1"})
	select {
	case path := <-early.calls:
		t.Logf("the installer ran its preseed's early_command %s after the VM started: GET %s", time.Since(vm.start).Round(time.Second), path)
		if path != "/early/"+m.ID {
			t.Errorf("early_command called %s, want /early/%s", path, m.ID)
		}
	case <-vm.done:
		t.Fatalf("the VM stopped after %s before the installer ran its early_command\n%s", vm.took.Round(time.Second), vm.report())
	case <-ctx.Done():
		t.Fatalf("the installer did not run its early_command within %s\n%s", 15*time.Minute, vm.report())
	}
	console := vm.console()
	for _, w := range []string{"auto=true priority=critical", "netcfg/choose_interface=" + mac, "url=http://10.20.0.2:5248/preseed/" + m.ID + "/"} {
		if !strings.Contains(console, w) {
			t.Errorf("the installer's kernel command line lacks %q\n%s", w, tail(console, 40))
		}
	}

	// The rack served the preseed to that machine's installer, and the
	// region recorded it.
	eventually(t, 30*time.Second, "preseed_served of the machine", func() error {
		var page struct {
			Events []struct {
				Data events.PreseedServed
			}
		}
		a.call("GET", "/api/v1/events?limit=100&stream=machine/"+m.ID+"&type="+events.TypePreseedServed, nil, nil, &page)
		for _, e := range page.Events {
			if e.Data.MachineID == m.ID && e.Data.Name == "debian" && e.Data.RackID == rackID {
				t.Logf("preseed_served: %+v", e.Data)
				return nil
			}
		}
		return fmt.Errorf("events %+v", page.Events)
	})
}

// earlyServer is the test's own HTTP server on the lab segment, at
// 10.20.0.3:8080, where a preseed's commands call home.
type earlyServer struct {
	url   string
	calls chan string
}

func earlyCommandServer(t *testing.T, seg *netnstest.Segment) *earlyServer {
	t.Helper()
	ns := seg.Host("web", "02:00:00:00:00:03", "10.20.0.3/24")
	var ln net.Listener
	if err := netns.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp", "10.20.0.3:8080")
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", ns, err)
	}
	s := &earlyServer{url: "http://10.20.0.3:8080", calls: make(chan string, 16)}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case s.calls <- r.URL.Path:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("early_command server: %v", err)
		}
	}()
	t.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})
	return s
}

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// poweredVM is a machine whose power a rack drives: how the test sees it
// apart from Rackplane (its serial console, whether it runs) and the
// power parameters that reach its BMC.
type poweredVM struct {
	params  map[string]any
	serial  func() string
	running func() (bool, error)
}

// qmpStatus asks a QEMU's QMP socket whether the VM runs, as an operator
// with the socket would.
func qmpStatus(socket string) (bool, error) {
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return false, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadBytes('\n'); err != nil { // the greeting
		return false, err
	}
	for _, cmd := range []string{"qmp_capabilities", "query-status"} {
		if _, err := fmt.Fprintf(c, `{"execute":%q}`+"\n", cmd); err != nil {
			return false, err
		}
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return false, err
			}
			var reply struct {
				Return json.RawMessage `json:"return"`
				Error  any             `json:"error"`
			}
			if json.Unmarshal(line, &reply) != nil || reply.Return == nil && reply.Error == nil {
				continue // an event
			}
			if reply.Error != nil {
				return false, fmt.Errorf("qmp %s: %v", cmd, reply.Error)
			}
			if cmd == "query-status" {
				var st struct{ Running bool }
				err := json.Unmarshal(reply.Return, &st)
				return st.Running, err
			}
			break
		}
	}
	return false, fmt.Errorf("no status")
}

// pausedVM starts QEMU with args, paused before its firmware runs (a
// machine that is plugged in and off) with a QMP socket, and returns the
// socket's path and where its serial console goes.
func pausedVM(t *testing.T, args []string) (socket, serial string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "rp-vm-") // a socket path must be short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket, serial = filepath.Join(dir, "qmp.sock"), filepath.Join(dir, "serial.log")
	args = append(args, "-S", "-qmp", "unix:"+socket+",server=on,wait=off", "-serial", "file:"+serial)
	startCmd(t, "qemu", exec.Command(args[0], args[1:]...))
	eventually(t, 20*time.Second, "the VM's QMP socket", func() error {
		_, err := qmpStatus(socket)
		return err
	})
	return socket, serial
}

// TestPowerDrivesTheDeployment is the power lifecycle on real machines,
// one per kind of driver: a QEMU VM behind OpenIPMI's BMC simulator
// (ipmi: ipmitool against ipmi_sim, whose power commands start and stop
// the VM), a VM driven through its QMP socket (qemu), and one driven by a
// power driver written in shell (testdata/power/qmpvm, QMP through
// socat). For each, through the API: the power is off; a deploy has the
// rack power the machine on, and it PXE-boots from the rack into the
// installer, whose command line is the one rendered for the deployment,
// and reports success; the power is on; a release switches it off, and
// the machine is ready only then. What the API shows agrees with the
// machine: ipmitool against the same simulator, the VM's own QMP status.
func TestPowerDrivesTheDeployment(t *testing.T) {
	endToEnd(t)
	search, err := filepath.Abs("testdata/power")
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"ipmi_sim", "ipmitool", "socat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: the power lifecycle test runs it (bash .ci/run installs it from .ci/packages)", tool)
		}
	}
	site := newPXESiteWith(t, true, "ipxe/boot.ipxe", "-power-search-path", search, "-power-timeout", "30s")
	a := site.a
	tmpl := "#cloud-config\nhostname: {{.Machine.Hostname}}\n# report: {{.URLs.Status}}\n"
	if code := a.call("POST", "/api/v1/preseeds", nil, map[string]any{"name": "powered", "content": tmpl}, nil); code != 201 {
		t.Fatalf("create preseed: %d", code)
	}
	// A QMP driver's off is stop and reset, which a VM run with -no-reboot
	// takes for an exit: only the VM behind ipmi_sim (whose off ends the
	// process) has it.
	vmArgs := func(mac string, more ...string) []string {
		return append([]string{site.qemu, "-accel", "tcg", "-m", "384", "-nographic", "-monitor", "none",
			"-netdev", "user,id=n0,bootfile=tftp://10.0.2.2:" + site.tftpPort + "/" + site.bootFile,
			"-device", "e1000,netdev=n0,mac=" + mac, "-boot", "n"}, more...)
	}
	qmpVM := func(driver, mac string) poweredVM {
		socket, serial := pausedVM(t, vmArgs(mac))
		return poweredVM{
			params: map[string]any{"driver": driver, "address": socket},
			serial: func() string {
				b, _ := os.ReadFile(serial)
				return string(b)
			},
			running: func() (bool, error) { return qmpStatus(socket) },
		}
	}

	for i, tc := range []struct {
		driver string
		vm     func(mac string) poweredVM
	}{
		{"ipmi", func(mac string) poweredVM {
			v := startIPMIVM(t, vmArgs(mac, "-no-reboot"))
			return poweredVM{
				params: map[string]any{"driver": "ipmi", "address": "127.0.0.1", "port": v.Port, "username": v.User, "password": v.Password,
					"extra": map[string]string{"cipher_suite": "3"}},
				serial: v.serial,
				running: func() (bool, error) {
					// ipmitool, as an operator would ask the BMC, and the
					// process the simulator started must agree.
					st, err := v.powerStatus()
					if err != nil {
						return false, err
					}
					if (st == "on") != v.running() {
						return false, fmt.Errorf("ipmitool says %s, the VM process running: %v", st, v.running())
					}
					return st == "on", nil
				},
			}
		}},
		{"qemu", func(mac string) poweredVM { return qmpVM("qemu", mac) }},
		{"qmpvm", func(mac string) poweredVM { return qmpVM("qmpvm", mac) }},
	} {
		t.Run(tc.driver, func(t *testing.T) {
			a := a
			a.t = t
			mac := fmt.Sprintf("52:54:00:9e:00:%02x", i+1)
			vm := tc.vm(mac)
			var m machineRef
			if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "pw-" + tc.driver, "macs": []string{mac},
				"boot_rack_id": site.rackID}, &m); code != 201 {
				t.Fatalf("create machine: %d", code)
			}
			path := "/api/v1/machines/" + m.ID
			if code := a.call("PUT", path+"/power", nil, vm.params, nil); code != 200 {
				t.Fatalf("set power parameters: %d", code)
			}
			type power struct {
				PowerState    string  `json:"power_state"`
				DrivingRackID *string `json:"driving_rack_id"`
			}
			agree := func(want string) {
				t.Helper()
				var p power
				if code := a.call("GET", path+"/power", nil, nil, &p); code != 200 || p.PowerState != want {
					t.Fatalf("GET power: %d %+v, want %s", code, p, want)
				}
				if p.DrivingRackID == nil || *p.DrivingRackID != site.rackID {
					t.Fatalf("driving rack %v, want %s", p.DrivingRackID, site.rackID)
				}
				running, err := vm.running()
				if err != nil || running != (want == "on") {
					t.Fatalf("the API says %s; the machine itself: running %v (%v)", want, running, err)
				}
			}
			agree("off")

			deploy := map[string]any{"os": "debian", "release": "bookworm", "preseed": "powered",
				"kernel_params": []string{"console=ttyS0", "panic=-1", "rackplane.test.stay"}}
			var dm struct {
				Status       string
				DeploymentID string `json:"deployment_id"`
			}
			if code := a.call("POST", path+"/deploy", nil, deploy, &dm); code != 200 || dm.Status != "deploying" {
				t.Fatalf("deploy: %d %+v", code, dm)
			}
			// Nobody but the rack powers the VM: it boots from the rack into
			// the installer with the command line rendered for it.
			var cmdline string
			eventually(t, 4*time.Minute, "the VM to boot into its installer and report", func() error {
				out := vm.serial()
				for _, l := range strings.Split(out, "\n") {
					if v, ok := strings.CutPrefix(strings.TrimSpace(l), "CMDLINE: "); ok {
						cmdline = v
					}
				}
				if !strings.Contains(out, "STAYING-ON") {
					return fmt.Errorf("serial:\n%s", tail(out, 15))
				}
				return nil
			})
			for _, want := range []string{"rackplane.machine=" + m.ID, "rackplane.hostname=pw-" + tc.driver, "url=http://10.0.2.2:",
				"/preseed/" + m.ID + "/", "console=ttyS0", "rackplane.test.stay"} {
				if !strings.Contains(cmdline, want) {
					t.Errorf("the installer's command line %q lacks %q", cmdline, want)
				}
			}
			var got struct{ Status string }
			eventually(t, 30*time.Second, "deployed", func() error {
				a.call("GET", path, nil, nil, &got)
				if got.Status != "deployed" {
					return fmt.Errorf("status %s", got.Status)
				}
				return nil
			})
			agree("on")

			if code := a.call("POST", path+"/release", nil, nil, &got); code != 200 {
				t.Fatalf("release: %d", code)
			}
			eventually(t, 90*time.Second, "ready once switched off", func() error {
				a.call("GET", path, nil, nil, &got)
				if got.Status != "ready" {
					return fmt.Errorf("status %s", got.Status)
				}
				return nil
			})
			agree("off")

			// Every action is in the machine's log, requested and done.
			var page struct {
				Events []struct {
					Type string
					Data struct {
						Action     string
						BootDevice string `json:"boot_device"`
						OK         *bool
						Outcome    string
					}
				}
			}
			// The racks' events reach the log a moment after their replies.
			var requested, completed, statuses []string
			eventually(t, 20*time.Second, "every action's outcome in the log", func() error {
				requested, completed, statuses = nil, nil, nil
				a.call("GET", "/api/v1/events?limit=1000&stream=machine/"+m.ID, nil, nil, &page)
				for _, e := range page.Events {
					switch {
					case strings.HasSuffix(e.Type, ".power_action_requested.v1"):
						requested = append(requested, e.Data.Action)
					case strings.HasSuffix(e.Type, ".power_action_completed.v1"):
						completed = append(completed, e.Data.Action+"="+e.Data.Outcome)
					case strings.HasPrefix(e.Type, "rackplane.region.machine_"):
						statuses = append(statuses, strings.TrimSuffix(strings.TrimPrefix(e.Type, "rackplane.region.machine_"), ".v1"))
					}
				}
				if len(completed) < len(requested) {
					return fmt.Errorf("requested %v, completed %v", requested, completed)
				}
				return nil
			})
			wantRequested := []string{"status", "set_boot", "status", "on", "status", "off", "status"}
			if tc.driver != "ipmi" {
				// Neither QMP driver sets a boot device: the VM boots from
				// its NIC first.
				wantRequested = slices.DeleteFunc(slices.Clone(wantRequested), func(s string) bool { return s == "set_boot" })
			}
			if !slices.Equal(requested, wantRequested) {
				t.Errorf("power actions requested %v, want %v", requested, wantRequested)
			}
			if len(completed) != len(requested) || slices.ContainsFunc(completed, func(s string) bool { return !strings.HasSuffix(s, "=ok") }) {
				t.Errorf("power actions completed %v", completed)
			}
			if i := slices.Index(statuses, "deploying"); i < 0 || !slices.Equal(statuses[i:], []string{"deploying", "deployed", "releasing", "released"}) {
				t.Errorf("machine statuses %v", statuses)
			}
			t.Logf("%s: %s", tc.driver, strconv.Quote(strings.Join(completed, " ")))
		})
	}
}

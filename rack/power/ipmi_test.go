package power

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/scriptrun/scriptruntest"
)

// ipmiSim is OpenIPMI's BMC simulator on a loopback UDP port, its chassis
// controlled by a script that keeps the power state and the boot device
// in files, and logs every call.
type ipmiSim struct {
	dir  string
	port int
}

const (
	simUser     = "admin"
	simPassword = "sim-Secret-4242"
)

// chassisControl is the sim's chassis_control program: called as
// "<script> get power" (answering power:<0|1>) or "<script> set <parm>
// <value> ...", with parm power (1 on, 0 off), boot (pxe, default, ...)
// or shutdown (the soft off, which this machine obeys at once).
const chassisControl = `#!/bin/sh
dir=$(dirname "$0")
echo "$*" >> "$dir/calls"
op=$1; shift
case $op in
get)
	for p in "$@"; do
		case $p in
		power) echo "power:$(cat "$dir/power")" ;;
		boot) echo "boot:$(cat "$dir/boot")" ;;
		esac
	done ;;
set)
	while [ $# -gt 1 ]; do
		case $1 in
		power) echo "$2" > "$dir/power" ;;
		boot) echo "$2" > "$dir/boot" ;;
		shutdown) echo 0 > "$dir/power" ;;
		esac
		shift 2
	done ;;
esac
`

// startIPMISim starts ipmi_sim in a directory of its own, with the
// machine off, and waits until ipmitool reaches it.
func startIPMISim(t *testing.T) *ipmiSim {
	t.Helper()
	sim := needTool(t, "ipmi_sim", "openipmi")
	needTool(t, "ipmitool", "ipmitool")
	s := &ipmiSim{dir: t.TempDir()}
	for name, body := range map[string]string{"power": "0\n", "boot": "default\n", "calls": ""} {
		scriptruntest.WriteFile(t, filepath.Join(s.dir, name), body, 0o644)
	}
	scriptruntest.WriteFile(t, filepath.Join(s.dir, "chassis"), chassisControl, 0o755)
	scriptruntest.WriteFile(t, filepath.Join(s.dir, "sim.emu"), "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n", 0o644)
	if err := os.Mkdir(filepath.Join(s.dir, "state"), 0o755); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		s.port = freeUDPPort(t)
		conf := fmt.Sprintf(`name "rptest"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s"
  user 2 true "%s" "%s" admin 10 none md2 md5 straight
  user 3 true "viewer" "%s" user 10 none md2 md5 straight
`, s.port, filepath.Join(s.dir, "chassis"), simUser, simPassword, simPassword)
		scriptruntest.WriteFile(t, filepath.Join(s.dir, "lan.conf"), conf, 0o600)
		exited, out := startProcess(t, s.dir, sim, "-c", "lan.conf", "-f", "sim.emu", "-s", "state", "-n")
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := s.ipmitool("power", "status"); err == nil {
				return s
			}
			select {
			case <-exited:
			default:
				if time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
					continue
				}
			}
			break
		}
		if attempt == 2 {
			t.Fatalf("ipmi_sim on 127.0.0.1:%d does not answer ipmitool: %s", s.port, out)
		}
	}
}

// ipmitool runs ipmitool against the sim as an operator would.
func (s *ipmiSim) ipmitool(args ...string) (string, error) {
	cmd := exec.Command("ipmitool", append([]string{"-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", strconv.Itoa(s.port),
		"-U", simUser, "-E", "-N", "1", "-R", "2"}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "IPMI_PASSWORD=" + simPassword}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// status is what ipmitool itself says of the power.
func (s *ipmiSim) status(t *testing.T) string {
	t.Helper()
	out, err := s.ipmitool("power", "status")
	if err != nil {
		t.Fatalf("ipmitool power status: %v: %s", err, out)
	}
	state, err := ParseIPMIPowerStatus([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	return state
}

func (s *ipmiSim) file(t *testing.T, name string) string {
	return readTrim(t, filepath.Join(s.dir, name))
}

func freeUDPPort(t *testing.T) int {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// TestIPMIAgainstIPMISim drives OpenIPMI's simulator through ipmitool,
// action after action, and checks after each what the simulator's
// chassis did, and that ipmitool run by hand reports the state the
// driver reports.
func TestIPMIAgainstIPMISim(t *testing.T) {
	s := startIPMISim(t)
	m := newManager(t, Config{Settings: Settings{Timeout: 20 * time.Second}})
	params := func(change func(p *events.PowerParameters)) events.PowerParameters {
		p := events.PowerParameters{Address: "127.0.0.1", Port: s.port, Username: simUser, Password: simPassword,
			Extra: map[string]string{"retries": "1", "retry_interval": "1"}}
		if change != nil {
			change(&p)
		}
		return p
	}
	cases := []actionCase{
		{name: "status off", action: events.PowerStatus, params: params(nil), state: "off", outcome: "ok"},
		{name: "cycle of a machine that is off powers it on", action: events.PowerCycle, params: params(nil), state: "on", outcome: "ok",
			check: func(t *testing.T) {
				want(t, s.file(t, "power"), "1")
				if strings.Contains(s.file(t, "calls"), "set power 0") {
					t.Errorf("the machine that was off was cycled:\n%s", s.file(t, "calls"))
				}
			}},
		{name: "status on", action: events.PowerStatus, params: params(nil), state: "on", outcome: "ok"},
		{name: "cycle of a machine that is on", action: events.PowerCycle, params: params(nil), state: "on", outcome: "ok",
			check: func(t *testing.T) {
				// The simulator turns it off, and back on a second later.
				scriptruntest.Eventually(t, "the machine to be back on", func() bool {
					calls := s.file(t, "calls")
					return strings.Contains(calls, "set power 0") && strings.HasSuffix(strings.TrimSpace(strings.ReplaceAll(calls, "get power", "")), "set power 1")
				})
			}},
		{name: "off", action: events.PowerOff, params: params(nil), state: "off", outcome: "ok",
			check: func(t *testing.T) { want(t, s.file(t, "power"), "0") }},
		{name: "on", action: events.PowerOn, params: params(nil), state: "on", outcome: "ok",
			check: func(t *testing.T) { want(t, s.file(t, "power"), "1") }},
		{name: "next boot from the network", action: events.PowerSetBoot, device: "pxe", params: params(nil), state: "unknown", outcome: "ok",
			check: func(t *testing.T) { want(t, s.file(t, "boot"), "pxe") }},
		{name: "next boot from disk, EFI", action: events.PowerSetBoot, device: "disk", params: params(func(p *events.PowerParameters) { p.Extra["boot_type"] = "efi" }),
			state: "unknown", outcome: "ok", check: func(t *testing.T) { want(t, s.file(t, "boot"), "default") }},
		{name: "soft off", action: events.PowerSoftOff, params: params(nil), state: "unknown", outcome: "ok",
			check: func(t *testing.T) {
				want(t, s.file(t, "power"), "0")
				if !strings.Contains(s.file(t, "calls"), "set shutdown 1") {
					t.Error("no graceful shutdown asked of the chassis")
				}
			}},
		{name: "status off again", action: events.PowerStatus, params: params(nil), state: "off", outcome: "ok"},
		{name: "wrong password", action: events.PowerOn, params: params(func(p *events.PowerParameters) { p.Password = "not-the-password" }),
			state: "unknown", outcome: "auth_failed", errHas: "RAKP 2 HMAC is invalid"},
		{name: "unknown user", action: events.PowerStatus, params: params(func(p *events.PowerParameters) { p.Username = "nobody" }),
			state: "unknown", outcome: "auth_failed", errHas: "unauthorized name"},
		{name: "user without the privilege", action: events.PowerOn,
			params: params(func(p *events.PowerParameters) { p.Username = "viewer"; p.Extra["privilege"] = "user" }),
			state:  "unknown", outcome: "auth_failed", errHas: "Insufficient privilege"},
		{name: "nothing at that port", action: events.PowerStatus, params: params(func(p *events.PowerParameters) { p.Port = freeUDPPort(t) }),
			state: "unknown", outcome: "unreachable", errHas: "Get Auth Capabilities error"},
		{name: "address that is an option", action: events.PowerStatus, params: params(func(p *events.PowerParameters) { p.Address = "-H" }),
			state: "unknown", outcome: "invalid", errHas: "host name or IP address"},
		{name: "cipher suite out of range", action: events.PowerStatus, params: params(func(p *events.PowerParameters) { p.Extra["cipher_suite"] = "99" }),
			state: "unknown", outcome: "invalid", errHas: "want 0 to 17"},
		{name: "password longer than IPMI takes", action: events.PowerStatus, params: params(func(p *events.PowerParameters) { p.Password = strings.Repeat("p", 21) }),
			state: "unknown", outcome: "invalid", errHas: "a password of at most 20"},
		{name: "unknown extra", action: events.PowerStatus, params: params(func(p *events.PowerParameters) { p.Extra["interface"] = "lan" }),
			state: "unknown", outcome: "invalid", errHas: "the ipmi driver has no extra interface"},
	}
	// ipmitool run by hand agrees with every status the driver reads.
	runCases(t, m, DriverIPMI, cases, []string{simPassword, "not-the-password"}, func(t *testing.T, tc actionCase, r Reply) {
		if tc.action == events.PowerStatus {
			if got := s.status(t); got != r.State {
				t.Errorf("the driver says %s, ipmitool by hand %s", r.State, got)
			}
		}
	})
}

// TestIPMIPasswordNotOnTheCommandLine: while ipmitool runs (waiting for a
// BMC that does not answer), its command line, which anyone may read in
// ps, lacks the password, and its environment has it.
func TestIPMIPasswordNotOnTheCommandLine(t *testing.T) {
	needTool(t, "ipmitool", "ipmitool")
	m := newManager(t, Config{Settings: Settings{Timeout: 20 * time.Second}})
	port := freeUDPPort(t)
	var wg sync.WaitGroup
	wg.Add(1)
	var r Reply
	go func() {
		defer wg.Done()
		r = m.Do(context.Background(), Request{MachineID: "m-ps", Driver: DriverIPMI, Action: events.PowerStatus,
			Parameters: events.PowerParameters{Address: "127.0.0.1", Port: port, Username: simUser, Password: simPassword,
				Extra: map[string]string{"retries": "1", "retry_interval": "1"}}})
	}()
	var cmdline, environ string
	scriptruntest.Eventually(t, "ipmitool to run", func() bool {
		for _, pid := range pidsWith(RunMarker) {
			c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			e, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
			if strings.Contains(string(c), "ipmitool") {
				cmdline, environ = strings.ReplaceAll(string(c), "\x00", " "), string(e)
				return true
			}
		}
		return false
	})
	wg.Wait()
	if strings.Contains(cmdline, simPassword) || !strings.Contains(cmdline, " -E ") {
		t.Errorf("command line %q", cmdline)
	}
	if !strings.Contains(environ, "IPMI_PASSWORD="+simPassword) {
		t.Error("the password is not in ipmitool's environment")
	}
	if r.Outcome != events.PowerOutcomeUnreachable {
		t.Errorf("reply %+v", r)
	}
	t.Logf("ipmitool ran as: %s", cmdline)
}

// pidsWith returns the processes whose environment has the variable.
func pidsWith(variable string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err == nil && strings.Contains("\x00"+string(env), "\x00"+variable+"=") {
			out = append(out, pid)
		}
	}
	return out
}

func TestParseIPMI(t *testing.T) {
	for _, tc := range []struct {
		out, state, err string
	}{
		{"Chassis Power is on\n", "on", ""},
		{"Discovered IPMB address 0x0\nChassis Power is off\n", "off", ""},
		{"Chassis Power is off \r\n", "off", ""},
		{"Chassis Power is unknown\n", "", `"Chassis Power is unknown"`},
		{"", "", "no output"},
		{"chassis power is on", "", "no \"Chassis Power is on|off\""},
	} {
		state, err := ParseIPMIPowerStatus([]byte(tc.out))
		if state != tc.state || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseIPMIPowerStatus(%q) = %q, %v; want %q, %q", tc.out, state, err, tc.state, tc.err)
		}
	}
	for _, tc := range []struct {
		tail    []string
		outcome string
	}{
		{[]string{"> RAKP 2 HMAC is invalid", "Error: Unable to establish IPMI v2 / RMCP+ session"}, "auth_failed"},
		{[]string{"RAKP 2 message indicates an error : unauthorized name"}, "auth_failed"},
		{[]string{"Set Chassis Power Control to Up/On failed: Insufficient privilege level"}, "auth_failed"},
		{[]string{"Get Auth Capabilities error", "Error: Unable to establish IPMI v2 / RMCP+ session"}, "unreachable"},
		{[]string{"Address lookup for bmc.invalid failed"}, "unreachable"},
		{[]string{"Unsupported cipher suite ID : 99", "Error: Unable to establish IPMI v2 / RMCP+ session"}, "failed"},
		{nil, "failed"},
	} {
		if got := ClassifyIPMIFailure(tc.tail); got != tc.outcome {
			t.Errorf("ClassifyIPMIFailure(%q) = %s, want %s", tc.tail, got, tc.outcome)
		}
	}
}

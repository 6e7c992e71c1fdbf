package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/pxetest"
)

// ipmiVM is a QEMU VM behind OpenIPMI's BMC simulator, ipmi_sim, as in
// OpenIPMI's QEMU setup: power on runs the VM's command (lan.conf's
// startcmd), and the VM connects back to the simulator over its "VM"
// serial codec (QEMU's ipmi-bmc-extern), through which power off, reset
// and soft off reach it. The power state is whether that process lives.
// ipmitool reaches the BMC over lanplus at 127.0.0.1:Port.
//
// The VM's first serial port goes to a file that every start of the VM
// appends to (serial); the harness owns -serial and -pidfile, so the
// VM's command must set neither. QEMU's stdin is /dev/null and its
// output goes to ipmi_sim's: give it -monitor none.
//
// What the simulator does with a VM (ipmi_sim 1.0.13, QEMU 7.2):
//   - power on starts the VM at once and status reads on from then;
//     power on of a machine that is on does nothing.
//   - power off asks the VM over the codec to power off, and QEMU exits
//     at once; a VM not connected is sent SIGTERM (poweroff_wait, then
//     SIGKILL after kill_wait).
//   - power cycle of a machine that is on stops the VM and starts a new
//     QEMU process about a second later; of a machine that is off, it
//     powers it on.
//   - power reset resets the VM in place, which a VM run with -no-reboot
//     takes as an exit: the machine is then off.
//   - power soft is an ACPI power button press: a VM with no OS ignores it.
//   - chassis bootdev is refused (Invalid data field in request): the
//     simulator keeps boot options only for a chassis_control program,
//     which would take the power from the VM. ipmitool still exits 0.
//     The VM's command decides what it boots from.
type ipmiVM struct {
	Port     int
	User     string
	Password string

	dir     string
	pidfile string
	serialF string
}

const (
	ipmiVMUser     = "admin"
	ipmiVMPassword = "vm-Secret-4242"
)

// startIPMIVM starts ipmi_sim with the machine off, the VM to run being
// qemuArgs (the QEMU binary first), and waits until ipmitool reads the
// power status. At cleanup the VM and the simulator are killed.
func startIPMIVM(t *testing.T, qemuArgs []string) *ipmiVM {
	t.Helper()
	return startIPMIVMWith(t, qemuArgs, ipmiVMOptions{})
}

// ipmiVMOptions configure the simulated BMC.
type ipmiVMOptions struct {
	// LANAddress, if set, is the IPv4 address of the BMC's LAN channel
	// 1 (static, netmask 255.255.255.0, gateway .1), as Get LAN
	// Configuration Parameters answers it over the LAN and to the VM's
	// system interface. Without it ipmi_sim has no LAN configuration:
	// it answers those requests with an error.
	LANAddress string
}

// lanControl is ipmi_sim's lan_config_program: ipmi_sim runs it as
// "<program> get <name>..." and reads "<name>:<value>" lines. It holds
// the address given; a set is accepted and changes nothing.
const lanControl = `#!/bin/sh
[ "$1" = get ] || exit 0
shift
for n in "$@"; do
	case $n in
	ip_addr) echo "ip_addr:ADDR" ;;
	ip_addr_src) echo "ip_addr_src:static" ;;
	mac_addr) echo "mac_addr:52:54:00:be:ef:01" ;;
	subnet_mask) echo "subnet_mask:255.255.255.0" ;;
	default_gw_ip_addr) echo "default_gw_ip_addr:GW" ;;
	backup_gw_ip_addr) echo "backup_gw_ip_addr:0.0.0.0" ;;
	*_mac_addr) echo "$n:00:00:00:00:00:00" ;;
	*) exit 1 ;;
	esac
done
`

func startIPMIVMWith(t *testing.T, qemuArgs []string, o ipmiVMOptions) *ipmiVM {
	t.Helper()
	sim := needTool(t, "ipmi_sim", "openipmi")
	needTool(t, "ipmitool", "ipmitool")
	setpriv := needTool(t, "setpriv", "util-linux")
	if len(qemuArgs) == 0 {
		t.Fatal("startIPMIVM: no VM command")
	}
	dir := t.TempDir()
	v := &ipmiVM{User: ipmiVMUser, Password: ipmiVMPassword, dir: dir,
		pidfile: filepath.Join(dir, "qemu.pid"), serialF: filepath.Join(dir, "serial.log")}
	writeFile(t, filepath.Join(dir, "sim.emu"), "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n", 0o644)
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o755); err != nil {
		t.Fatal(err)
	}
	lanConfig := ""
	if o.LANAddress != "" {
		a, err := netip.ParseAddr(o.LANAddress)
		if err != nil || !a.Is4() {
			t.Fatalf("LAN address %q: want IPv4", o.LANAddress)
		}
		gw := a.As4()
		gw[3] = 1
		prog := filepath.Join(dir, "lancontrol.sh")
		writeFile(t, prog, strings.NewReplacer("ADDR", a.String(), "GW", netip.AddrFrom4(gw).String()).Replace(lanControl), 0o755)
		lanConfig = "\n    lan_config_program \"" + prog + "\""
	}
	reconnect := qemuReconnectOption(t, qemuArgs[0])
	// ipmi_sim runs startcmd with /bin/sh -c and lan.conf's strings have
	// no escapes: the command goes in a script, which execs QEMU so that
	// the process the simulator watches and signals is QEMU itself.
	// setpriv makes QEMU die with the simulator, even one killed with
	// SIGKILL, which would otherwise leave it running.
	script := filepath.Join(dir, "vm.sh")
	for attempt := 0; ; attempt++ {
		v.Port = freeUDPPort(t)
		serialPort := freePort(t)
		argv := append([]string{setpriv, "--pdeathsig", "KILL", "--"}, qemuArgs...)
		argv = append(argv,
			"-chardev", fmt.Sprintf("socket,id=ipmi0,host=127.0.0.1,port=%d,%s", serialPort, reconnect),
			"-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0",
			"-device", "isa-ipmi-kcs,bmc=bmc0",
			"-chardev", "file,id=serial0,append=on,path="+v.serialF,
			"-serial", "chardev:serial0",
			"-pidfile", v.pidfile)
		writeFile(t, script, "#!/bin/sh\nexec "+shellQuote(argv)+"\n", 0o755)
		conf := fmt.Sprintf(`name "rpvm"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef%s
  endlan
  serial kcs 127.0.0.1 %d codec VM
  startcmd "%s"
  startnow false
  poweroff_wait 10
  kill_wait 5
  user 2 true "%s" "%s" admin 10 none md2 md5 straight
`, v.Port, lanConfig, serialPort, script, v.User, v.Password)
		writeFile(t, filepath.Join(dir, "lan.conf"), conf, 0o600)
		cmd := exec.Command(sim, "-c", "lan.conf", "-f", "sim.emu", "-s", "state", "-n")
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		p := startCmd(t, "ipmi_sim", cmd)
		// Cleanups run last first: the VM is killed before ipmi_sim,
		// which reaps it, so that no QEMU is left to init.
		t.Cleanup(v.killVM)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := v.ipmitool("power", "status"); err == nil {
				return v
			}
			select {
			case <-p.done:
			default:
				if time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
					continue
				}
			}
			break
		}
		// Most likely a port taken since it was found free.
		p.Kill()
		if attempt == 2 {
			t.Fatalf("ipmi_sim on 127.0.0.1:%d does not answer ipmitool: %s", v.Port, tail(p.Output(), 20))
		}
	}
}

// ipmitool runs ipmitool against the BMC as an operator would, the
// password in IPMI_PASSWORD.
func (v *ipmiVM) ipmitool(args ...string) (string, error) {
	cmd := exec.Command("ipmitool", append([]string{"-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", strconv.Itoa(v.Port),
		"-U", v.User, "-E", "-N", "1", "-R", "2"}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "IPMI_PASSWORD=" + v.Password}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// powerStatus is what "ipmitool power status" says: "on" or "off".
func (v *ipmiVM) powerStatus() (string, error) {
	out, err := v.ipmitool("power", "status")
	if err != nil {
		return "", fmt.Errorf("ipmitool power status: %w: %s", err, out)
	}
	m := regexp.MustCompile(`(?m)^Chassis Power is (on|off)\s*$`).FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("ipmitool power status: no power state in %q", out)
	}
	return m[1], nil
}

// serial is all the VM printed on its first serial port, every start of
// it one after the other.
func (v *ipmiVM) serial() string {
	b, _ := os.ReadFile(v.serialF)
	return string(b)
}

// running says whether a QEMU of this harness is alive.
func (v *ipmiVM) running() bool { return v.pid() != 0 }

// pid is the pid of the VM's QEMU, or 0. QEMU removes its pidfile when it
// exits, but not when killed: the process must also be a QEMU with this
// pidfile on its command line, and not a zombie.
func (v *ipmiVM) pid() int {
	b, err := os.ReadFile(v.pidfile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "\x00"+v.pidfile+"\x00") {
		return 0
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The state follows the command name, which is in parentheses.
	if i := strings.LastIndexByte(string(stat), ')'); i < 0 || strings.HasPrefix(string(stat[i+1:]), " Z") {
		return 0
	}
	return pid
}

// killVM kills the VM's QEMU, if any, and waits (bounded) until it is
// gone.
func (v *ipmiVM) killVM() {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		pid := v.pid()
		if pid == 0 {
			return
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
		time.Sleep(50 * time.Millisecond)
	}
}

// qemuReconnectOption is the socket chardev's option to reconnect every
// second: QEMU 9.2 took reconnect-ms in place of reconnect.
func qemuReconnectOption(t *testing.T, qemu string) string {
	t.Helper()
	out, err := exec.Command(qemu, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", qemu, err)
	}
	m := regexp.MustCompile(`version (\d+)\.(\d+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("%s --version: no version in %q", qemu, out)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	if major > 9 || major == 9 && minor >= 2 {
		return "reconnect-ms=1000"
	}
	return "reconnect=1"
}

func needTool(t *testing.T, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("this test runs %s: install the Debian package %s (%v)", tool, pkg, err)
	}
	return p
}

func writeFile(t *testing.T, path, body string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	_, port, _ := strings.Cut(freeUDPAddr(t), ":")
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func freePort(t *testing.T) int {
	t.Helper()
	_, port, _ := strings.Cut(freeAddr(t), ":")
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// shellQuote quotes each of args for sh.
func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// TestIPMISimDrivesAQEMUVM: ipmitool's power commands against ipmi_sim
// start and stop the QEMU VM behind it, and power status follows.
func TestIPMISimDrivesAQEMUVM(t *testing.T) {
	endToEnd(t)
	qemu := pxetest.QEMU(t)
	// No disk: SeaBIOS finds nothing to boot and says so on the serial
	// port, then retries after 60s, which -no-reboot makes an exit.
	v := startIPMIVM(t, []string{qemu, "-accel", "tcg", "-m", "128", "-nographic", "-monitor", "none", "-nodefaults", "-no-reboot"})
	status := func(want string) {
		t.Helper()
		eventually(t, 10*time.Second, "power status "+want, func() error {
			got, err := v.powerStatus()
			if err == nil && got != want {
				err = fmt.Errorf("power status %s", got)
			}
			return err
		})
	}
	power := func(op string) {
		t.Helper()
		if out, err := v.ipmitool("chassis", "power", op); err != nil {
			t.Fatalf("ipmitool chassis power %s: %v: %s", op, err, out)
		}
	}

	status("off")
	if v.running() {
		t.Fatal("a VM runs before power on")
	}

	power("on")
	took := eventually(t, 20*time.Second, "the VM to run after power on", func() error {
		if !v.running() {
			return fmt.Errorf("no QEMU")
		}
		return nil
	})
	t.Logf("power on to QEMU running: %s", took)
	status("on")
	first := v.pid()
	eventually(t, 30*time.Second, "SeaBIOS on the serial port", func() error {
		if !strings.Contains(v.serial(), "SeaBIOS") {
			return fmt.Errorf("serial: %q", v.serial())
		}
		return nil
	})

	// Refused by the simulator, yet ipmitool exits 0; the VM runs on.
	out, err := v.ipmitool("chassis", "bootdev", "pxe")
	t.Logf("ipmitool chassis bootdev pxe: err %v: %s", err, out)
	status("on")
	if v.pid() != first {
		t.Fatalf("bootdev pxe changed the VM: pid %d, was %d", v.pid(), first)
	}

	// A cycle stops this QEMU and starts another, which appends to the
	// serial file.
	power("cycle")
	took = eventually(t, 30*time.Second, "another QEMU after power cycle", func() error {
		if p := v.pid(); p == 0 || p == first {
			return fmt.Errorf("pid %d, first %d", p, first)
		}
		return nil
	})
	t.Logf("power cycle to the new QEMU running: %s", took)
	status("on")
	eventually(t, 30*time.Second, "SeaBIOS twice on the serial port", func() error {
		if n := strings.Count(v.serial(), "SeaBIOS"); n != 2 {
			return fmt.Errorf("SeaBIOS %d times in %q", n, v.serial())
		}
		return nil
	})

	second := v.pid()
	power("off")
	took = eventually(t, 20*time.Second, "QEMU to exit after power off", func() error {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", second)); err == nil {
			return fmt.Errorf("pid %d still there", second)
		}
		return nil
	})
	t.Logf("power off to QEMU gone: %s", took)
	if v.running() {
		t.Fatal("running after power off")
	}
	status("off")
}

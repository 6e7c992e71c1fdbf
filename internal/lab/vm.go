package lab

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// vm is one lab machine: a QEMU process in the lab's namespace.
type vm struct {
	name, mac, firmware, tap string
	disk, qmp, serial, vars  string
	cmd                      *exec.Cmd
	done                     chan struct{} // closed when the process is reaped
	err                      error         // its end, once done
	machineID                string        // once enlisted and given its power driver
}

// labMAC is VM i's MAC: QEMU's prefix, two bytes of the data
// directory's hash (two labs on one database do not share MACs) and i.
// It is the same at every start with that directory, so the machines
// stay the same machines.
func labMAC(dataDir string, i int) string {
	h := sha256.Sum256([]byte(dataDir))
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", h[0], h[1], i+1)
}

// newVM lays out VM i's files below dataDir; its disk and UEFI variables
// are made on its first start and kept.
func (c Config) newVM(dataDir string, i int, tap string) (*vm, error) {
	v := &vm{name: fmt.Sprintf("vm%d", i+1), mac: labMAC(dataDir, i), firmware: "bios", tap: tap,
		disk: c.vmFile(dataDir, i, "disk.raw"), qmp: c.vmFile(dataDir, i, "qmp.sock"), serial: c.vmFile(dataDir, i, "serial.log")}
	if i%2 == 1 {
		v.firmware, v.vars = "uefi", c.vmFile(dataDir, i, "OVMF_VARS.fd")
	}
	if err := os.MkdirAll(filepath.Dir(v.disk), 0o755); err != nil {
		return nil, err
	}
	if _, err := os.Stat(v.disk); errors.Is(err, fs.ErrNotExist) {
		f, err := os.Create(v.disk)
		if err != nil {
			return nil, err
		}
		err = f.Truncate(int64(c.DiskMiB) << 20) // sparse
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
	}
	if v.vars != "" {
		if _, err := os.Stat(v.vars); errors.Is(err, fs.ErrNotExist) {
			b, err := os.ReadFile(c.OVMFVars)
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(v.vars, b, 0o644); err != nil {
				return nil, err
			}
		}
	}
	// A socket a killed QEMU left would refuse the new one's bind.
	_ = os.Remove(v.qmp)
	return v, nil
}

// args is v's QEMU command line. The NIC boots first and the disk
// second, so a deployed machine boots from its disk once the rack tells
// its iPXE to boot locally. -no-shutdown keeps a VM that powered off
// (commissioning ends so) in QEMU, where the qemu power driver turns it
// on again.
func (c Config) args(v *vm) []string {
	a := []string{"-name", v.name, "-accel", "tcg", "-smp", "2", "-m", strconv.Itoa(c.MemoryMiB),
		"-display", "none", "-monitor", "none", "-serial", "file:" + v.serial,
		"-qmp", "unix:" + v.qmp + ",server=on,wait=off", "-no-shutdown",
		"-netdev", "tap,id=n0,ifname=" + v.tap + ",script=no,downscript=no",
		"-drive", "file=" + v.disk + ",if=none,id=d0,format=raw",
		"-device", "virtio-blk-pci,drive=d0,serial=RP-LAB-" + v.name + ",bootindex=2"}
	if v.firmware == "uefi" {
		// OVMF's own PXE (no iPXE ROM on the NIC) loads the rack's
		// snponly.efi, as a real UEFI machine does.
		return append(a, "-machine", "q35", "-drive", "if=pflash,format=raw,readonly=on,file="+c.OVMFCode,
			"-drive", "if=pflash,format=raw,file="+v.vars, "-device", "virtio-net-pci,netdev=n0,bootindex=1,romfile=,mac="+v.mac)
	}
	// The BIOS VMs' NIC is virtio too, booting with the iPXE ROM QEMU
	// gives it by default (NICROM, checked to be there: given as
	// romfile=, Debian's QEMU 7.2 loads no boot ROM from it). An
	// emulated e1000 was tried first: under TCG on a loaded host its
	// guest driver at times read the MAC address as 00:00:00:00:00:00
	// after a QMP power cycle, so the ephemeral environment found no
	// NIC with the boot MAC and the deployment never reported.
	nic := "virtio-net-pci,netdev=n0,bootindex=1,mac=" + v.mac
	return append(a, "-machine", "pc", "-device", nic)
}

// start runs v in namespace ns. QEMU runs in a process group of its own,
// so the terminal's Ctrl-C reaches the lab, which stops it in order, and
// dies with the lab should the lab be killed.
func (c Config) start(v *vm, ns string, stderr io.Writer) error {
	v.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, c.QEMU}, c.args(v)...)...)
	v.cmd.Stdout, v.cmd.Stderr = stderr, stderr
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := v.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", v.name, err)
	}
	v.done = make(chan struct{})
	go func() {
		v.err = v.cmd.Wait()
		close(v.done)
	}()
	return nil
}

// stop asks QEMU to quit over QMP and kills it when it has not within
// wait.
func (v *vm) stop(wait time.Duration) {
	if v.cmd == nil {
		return
	}
	if c, err := net.DialTimeout("unix", v.qmp, time.Second); err == nil {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		r := bufio.NewReader(c)
		_, _ = r.ReadBytes('\n') // the greeting
		_, _ = io.WriteString(c, `{"execute":"qmp_capabilities"}`+"\n"+`{"execute":"quit"}`+"\n")
		_, _ = r.ReadBytes('\n')
		c.Close()
	}
	select {
	case <-v.done:
	case <-time.After(wait):
		_ = v.cmd.Process.Kill()
		<-v.done
	}
	_ = os.Remove(v.qmp)
}

// exited says whether v's QEMU has ended.
func (v *vm) exited() bool {
	select {
	case <-v.done:
		return true
	default:
		return false
	}
}

package lab

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// validConfig is DefaultConfig with what main fills in, and a firmware
// and QEMU that exist whether or not the machine has them.
func validConfig(t *testing.T) Config {
	c := DefaultConfig()
	c.DataDir = t.TempDir()
	c.Executable = "/bin/true"
	c.QEMU = "true"
	fw := filepath.Join(t.TempDir(), "fw.fd")
	if err := os.WriteFile(fw, []byte("fw"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.OVMFCode, c.OVMFVars, c.NICROM = fw, fw, fw
	return c
}

func TestValidate(t *testing.T) {
	defer func(f func() int) { geteuid = f }(geteuid)
	geteuid = func() int { return 0 }
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("ip not found: install the Debian package iproute2")
	}
	if err := validConfig(t).Validate(); err != nil {
		t.Fatalf("a valid config: %v", err)
	}

	// Every bad setting is named, all at once.
	geteuid = func() int { return 1000 }
	c := validConfig(t)
	c.VMs = 17
	c.DataDir = "/" + strings.Repeat("d", 100)
	c.Executable = ""
	c.APIAddr = "127.0.0.1:0"
	c.NATSAddr = "nowhere"
	c.Subnet = netip.MustParsePrefix("fd00::/64")
	c.MemoryMiB = 4096
	c.DiskMiB = 10
	c.QEMU = "qemu-system-none-such"
	c.OVMFCode = "/nonexistent/OVMF_CODE.fd"
	err := c.Validate()
	c.QEMU = "true"
	c.NICROM = "/nonexistent/efi-virtio.rom"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "/nonexistent/efi-virtio.rom is missing: install the Debian package ipxe-qemu") {
		t.Errorf("a missing NIC ROM: %v", err)
	}
	if err == nil {
		t.Fatal("a config wrong in every way passed")
	}
	for _, want := range []string{"run it as root", "-vms 17: from 1 to 16", "too long a path for the VMs' QMP sockets",
		"no rackplane executable", `-http-addr "127.0.0.1:0"`, `-nats-addr "nowhere"`, "lab subnet fd00::/64",
		"memory 4096 MiB", "disk 10 MiB", "qemu-system-none-such not found: install the Debian package qemu-system-x86",
		"/nonexistent/OVMF_CODE.fd missing: install the Debian package ovmf"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the errors lack %q:\n%v", want, err)
		}
	}
	c = validConfig(t)
	c.VMs = 0
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "-vms 0: from 1 to 16") {
		t.Errorf("-vms 0: %v", err)
	}

	// QEMU splits its options at commas: a path with one would end the
	// option there and pass the rest as options of its own.
	c = validConfig(t)
	c.DataDir = filepath.Join(t.TempDir(), "a,snapshot=on")
	c.OVMFCode = filepath.Join(t.TempDir(), "code,readonly=off.fd")
	if err := os.WriteFile(c.OVMFCode, []byte("fw"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	for _, want := range []string{"-data-dir " + c.DataDir + ": QEMU takes a comma", "UEFI firmware " + c.OVMFCode + ": QEMU takes a comma"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("paths with commas: the errors lack %q: %v", want, err)
		}
	}
}

// TestCleanStale leaves a namespace as a killed lab does (a process in
// it, its record naming a process that is gone) and checks the next
// start deletes both, and refuses while the lab that made it runs.
func TestCleanStale(t *testing.T) {
	if os.Geteuid() != 0 {
		if testing.Short() {
			t.Skip("makes a network namespace: needs root")
		}
		t.Fatal("this test makes a network namespace: run it as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("ip not found: install the Debian package iproute2")
	}
	dataDir := t.TempDir()
	// The pid of a process that has ended.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	ns := NSPrefix + "test" + strconv.Itoa(os.Getpid())
	t.Cleanup(func() { _ = deleteNamespace(ns) })
	for _, args := range [][]string{{"netns", "add", ns}, {"-n", ns, "link", "add", "br0", "type", "bridge"},
		{"-n", ns, "tuntap", "add", "tap1", "mode", "tap"}, {"-n", ns, "link", "set", "tap1", "master", "br0"}} {
		if err := ip(args...); err != nil {
			t.Fatal(err)
		}
	}
	sleeper := exec.Command("ip", "netns", "exec", ns, "sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sleeper.Wait() }()
	record := func(pid int) {
		t.Helper()
		b, _ := json.Marshal(state{Namespace: ns, PID: pid})
		if err := os.MkdirAll(labDir(dataDir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(stateFile(dataDir), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	// While the lab that made it runs (a rackplane process), it stays.
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(t.TempDir(), "rackplane")
	if err := os.WriteFile(fake, b, 0o755); err != nil {
		t.Fatal(err)
	}
	lab := exec.Command(fake, "600")
	if err := lab.Start(); err != nil {
		t.Fatal(err)
	}
	record(lab.Process.Pid)
	if _, err := CleanStale(dataDir, log); err == nil || !strings.Contains(err.Error(), "a lab runs with data directory") {
		t.Errorf("CleanStale while its lab runs: %v, want a refusal", err)
	}
	_ = lab.Process.Kill()
	_ = lab.Wait()
	if _, err := os.Stat("/run/netns/" + ns); err != nil {
		t.Fatalf("namespace %s went while its lab ran: %v", ns, err)
	}

	record(gone.Process.Pid)
	got, err := CleanStale(dataDir, log)
	if err != nil || got != ns {
		t.Fatalf("CleanStale: %q %v, want %s deleted", got, err, ns)
	}
	if _, err := os.Stat("/run/netns/" + ns); err == nil {
		t.Errorf("namespace %s is still there", ns)
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), ns) {
		t.Errorf("ip netns list still has %s:\n%s", ns, out)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Error("the process in the namespace was not killed")
		_ = sleeper.Process.Signal(syscall.SIGKILL)
	}
	if _, err := os.Stat(stateFile(dataDir)); err == nil {
		t.Error("the state file is still there")
	}
	// Nothing left: nothing to do.
	if got, err := CleanStale(dataDir, log); err != nil || got != "" {
		t.Errorf("CleanStale with nothing left: %q %v", got, err)
	}
}

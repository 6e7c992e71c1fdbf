package pxetest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// VMSlotsEnv overrides how many tests of this machine boot VMs at once
// (default: one per CPU).
const VMSlotsEnv = "RACKPLANE_TEST_VMS"

// vmSlots are the slots this process holds, by the name of the test that
// holds one: a subtest of a holder runs in its parent's slot.
var vmSlots struct {
	sync.Mutex
	held map[string]bool
}

// holdVMSlot waits until fewer tests than the machine has CPUs boot VMs,
// across every test binary on the machine (go test runs packages side by
// side), and holds a slot until t ends. Firmware under TCG emulation
// keeps time by the host's clock: a VM that gets less than a CPU sees its
// network peers as slow and gives up on them (PXELINUX's HTTP client
// dropped a kernel halfway when many VMs shared two CPUs). A slot is a
// lock on a file in the temporary directory, which the kernel lets go
// when the process that held it dies.
func holdVMSlot(t testing.TB) {
	t.Helper()
	name := t.Name()
	vmSlots.Lock()
	for held := range vmSlots.held {
		if name == held || strings.HasPrefix(name, held+"/") {
			vmSlots.Unlock()
			return
		}
	}
	vmSlots.Unlock()
	n := runtime.NumCPU()
	if s, err := strconv.Atoi(os.Getenv(VMSlotsEnv)); err == nil && s > 0 {
		n = s
	}
	dir := filepath.Join(os.TempDir(), "rackplane-test-vm-slots")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatalf("VM slots: %v", err)
	}
	began := time.Now()
	deadline, hasDeadline := time.Time{}, false
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		deadline, hasDeadline = d.Deadline()
	}
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		for i := range n {
			f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("slot-%d", i)), os.O_CREATE|os.O_RDWR, 0o666)
			if err != nil {
				t.Fatalf("VM slots: %v", err)
			}
			if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
				f.Close()
				continue
			}
			if w := time.Since(began); w > time.Second {
				t.Logf("waited %s for one of the machine's %d VM slots", w.Round(time.Second), n)
			}
			vmSlots.Lock()
			if vmSlots.held == nil {
				vmSlots.held = map[string]bool{}
			}
			vmSlots.held[name] = true
			vmSlots.Unlock()
			t.Cleanup(func() {
				vmSlots.Lock()
				delete(vmSlots.held, name)
				vmSlots.Unlock()
				f.Close() // lets the lock go
			})
			return
		}
		if hasDeadline && time.Now().Add(time.Minute).After(deadline) {
			t.Fatalf("no VM slot free after %s (%d tests of this machine boot VMs; %s=%d)", time.Since(began).Round(time.Second), n, VMSlotsEnv, n)
		}
		time.Sleep(wait)
	}
}

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
func holdVMSlot(t testing.TB) { holdVMSlots(t, 1) }

// holdVMSlots is holdVMSlot for a test that runs n VMs at once: it takes
// n slots (at most all of them) together or none, so that two such
// tests waiting for each other's slots cannot hold one each for ever.
func holdVMSlots(t testing.TB, n int) {
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
	total := runtime.NumCPU()
	if s, err := strconv.Atoi(os.Getenv(VMSlotsEnv)); err == nil && s > 0 {
		total = s
	}
	n = max(1, min(n, total))
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
		var got []*os.File
		for i := 0; i < total && len(got) < n; i++ {
			f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("slot-%d", i)), os.O_CREATE|os.O_RDWR, 0o666)
			if err != nil {
				for _, g := range got {
					g.Close()
				}
				t.Fatalf("VM slots: %v", err)
			}
			if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
				f.Close()
				continue
			}
			got = append(got, f)
		}
		if len(got) == n {
			if w := time.Since(began); w > time.Second {
				t.Logf("waited %s for %d of the machine's %d VM slots", w.Round(time.Second), n, total)
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
				for _, f := range got {
					f.Close() // lets the lock go
				}
			})
			return
		}
		for _, f := range got {
			f.Close()
		}
		if hasDeadline && time.Now().Add(time.Minute).After(deadline) {
			t.Fatalf("no %d VM slots free after %s (%d tests of this machine boot VMs; %s=%d)", n, time.Since(began).Round(time.Second), total, VMSlotsEnv, total)
		}
		time.Sleep(wait)
	}
}

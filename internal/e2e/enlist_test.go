package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/pxetest"
	"github.com/rackplane/rackplane/region/postgres"
)

// TestUnknownMachinesAreCommissioned is enlistment as an operator sees it
// on a lab switch: `rackplane dev` serves DHCP, TFTP and HTTP on its own
// network segment, with the ephemeral environment imported through the
// API and nothing said about the machines. A QEMU VM under SeaBIOS and
// another under OVMF (UEFI), each with 2 CPUs, 1 GiB, two virtio disks of
// set sizes and serials and two NICs, PXE-boot with MACs the region has
// never seen: each becomes a machine, commissions on that same boot (the
// rack's iPXE asks again until the region has decided), powers off and
// is ready, with the inventory QEMU gave it.
func TestUnknownMachinesAreCommissioned(t *testing.T) {
	endToEnd(t)
	// Its VMs and servers are its own (namespaces, ports, databases):
	// it runs beside the other VM tests, which keeps CI within its time.
	t.Parallel()
	qemu := pxetest.QEMU(t)
	seg, a, rackID := devLab(t)
	importEphemeral(t, a, rackID)

	vms := []struct {
		firmware          string
		bootMAC, otherMAC string
	}{
		{"bios", "52:54:00:e1:00:01", "52:54:00:e1:00:02"},
		{"uefi", "52:54:00:e1:01:01", "52:54:00:e1:01:02"},
	}
	for i, vm := range vms {
		t.Run(vm.firmware, func(t *testing.T) {
			disks := []vmDisk{{fmt.Sprintf("RP-ENL-%d-A", i), 64 << 20}, {fmt.Sprintf("RP-ENL-%d-B", i), 80 << 20}}
			vmNS, bootTap := seg.Tap()
			_, otherTap := seg.Tap()
			args := []string{"-accel", "tcg", "-smp", "2", "-m", "1024", "-nographic", "-no-reboot", "-monitor", "none",
				"-netdev", "tap,id=n0,ifname=" + bootTap + ",script=no,downscript=no",
				"-netdev", "tap,id=n1,ifname=" + otherTap + ",script=no,downscript=no",
				// The second NIC has no option ROM: the VM boots from the first.
				"-device", "virtio-net-pci,netdev=n1,romfile=,mac=" + vm.otherMAC}
			if vm.firmware == "uefi" {
				args = append(args, pxetest.OVMF(t, vm.bootMAC, pxetest.OVMFOptions{})...)
			} else {
				args = append(args, "-device", "e1000,netdev=n0,bootindex=1,mac="+vm.bootMAC)
			}
			dir := t.TempDir()
			args = append(args, diskArgs(t, dir, disks)...)
			serial := filepath.Join(dir, "serial.log")
			args = append(args, "-serial", "file:"+serial)

			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
			defer cancel()
			start := time.Now()
			out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", vmNS, qemu}, args...)...).CombinedOutput()
			b, _ := os.ReadFile(serial)
			console := strings.ReplaceAll(string(b), "\r\n", "\n")
			if err != nil {
				t.Fatalf("qemu (did the VM power off within 8m?): %v\n%s\nserial:\n%s", err, tail(string(out), 20), tail(console, 80))
			}
			t.Logf("the %s VM booted, was enlisted, commissioned and powered off in %s", vm.firmware, time.Since(start).Round(time.Second))

			var list struct {
				Machines []struct{ ID, Status, Origin, StatusReason string }
			}
			eventually(t, 30*time.Second, "the machine ready", func() error {
				a.call("GET", "/api/v1/machines?mac="+vm.bootMAC, nil, nil, &list)
				if len(list.Machines) != 1 || list.Machines[0].Status != "ready" {
					return fmt.Errorf("machines with MAC %s: %+v", vm.bootMAC, list.Machines)
				}
				return nil
			})
			if m := list.Machines[0]; m.Origin != "discovered" {
				t.Errorf("machine %+v, want it discovered", m)
			}
			var hw postgres.Hardware
			if code := a.call("GET", "/api/v1/machines/"+list.Machines[0].ID+"/hardware", nil, nil, &hw); code != 200 {
				t.Fatalf("hardware: %d", code)
			}
			checkInventory(t, hw.Inventory, vmShape{threads: 2, memory: 1 << 30, disks: disks,
				bootMAC: vm.bootMAC, otherMAC: vm.otherMAC, firmware: vm.firmware}, console)
		})
	}
}

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/netns"
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/internal/pxetest"
	"github.com/rackplane/rackplane/internal/tftp"
	"github.com/rackplane/rackplane/internal/tftp/tftptest"
	"github.com/rackplane/rackplane/rack/dhcp"
)

// TestUEFIPXEThroughLoss boots OVMF's own PXE client from rackd with a
// lossy network between them: rackd's DHCP names as next-server an
// address of the rack's namespace where a relay of tftptest passes TFTP
// on to rackd, dropping 5% of the packets at random, or every 50th, each
// way. The firmware must fetch snponly.efi whole through it (the rack's
// transfer event says every byte of the ipxe package's file went out,
// and none failed) and boot; iPXE then takes kernel and initrd over
// HTTP, as the rack tells iPXE clients to.
func TestUEFIPXEThroughLoss(t *testing.T) {
	vmTest(t)
	loader, err := os.Stat("/usr/lib/ipxe/" + dhcp.FileSNPOnly)
	if err != nil {
		t.Fatalf("%s missing: install the Debian package ipxe (%v)", dhcp.FileSNPOnly, err)
	}
	for i, l := range tftptest.Standard() {
		t.Run(l.Name, func(t *testing.T) {
			uefiPXEThroughLoss(t, fmt.Sprintf("52:54:00:d4:c1:%02x", i+1), l.Loss, loader.Size())
		})
	}
}

func uefiPXEThroughLoss(t *testing.T, mac string, loss tftptest.Loss, loaderSize int64) {
	qemu := pxetest.QEMU(t)
	curl := netnstest.Need(t, "curl", "curl")
	seg := netnstest.New(t)
	rackNS := seg.Host("rack", "02:00:00:00:00:02", "10.20.0.2/24")
	seg.IP("-n", rackNS, "addr", "add", "10.20.0.3/24", "dev", "eth0")
	vmNS, tap := seg.Tap()
	rec := collectEvents(t, natsForRack(t, rackNS))
	rack := newBootRack(t, map[string]events.BootDecision{mac: bootDecision(mac, "lossy-vm", "rackplane.loss=ok")})
	// rackd's TFTP leaves 10.20.0.3:69 to the relay, which DHCP gives
	// clients as next-server.
	rack.start(t, rackNS, "-dhcp-mode", "managed", "-dhcp-subnets", subnetsFile(t), "-import-system-bootloaders=true",
		"-tftp-addr", "10.20.0.2:69,127.0.0.1:69", "-dhcp-server-ip", "10.20.0.3")
	eventually(t, 60*time.Second, dhcp.FileSNPOnly+" over TFTP from rackd", func() error {
		_, err := netnstest.Run(rackNS, curl, "-sS", "--max-time", "5", "-o", os.DevNull, "tftp://127.0.0.1/"+dhcp.FileSNPOnly)
		return err
	})
	relay, err := tftptest.NewRelayOn("10.20.0.3:69", "10.20.0.2:69", loss, func(laddr *net.UDPAddr) (c *net.UDPConn, err error) {
		err = netns.Do(rackNS, func() error {
			c, err = net.ListenUDP("udp", laddr)
			return err
		})
		return c, err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	vm := startVM(ctx, t, qemu, vmNS, tap, 384, pxetest.OVMF(t, mac, pxetest.OVMFOptions{}))
	if err := vm.wait(); err != nil {
		t.Fatalf("the VM did not boot: %v\n%s", err, vm.report())
	}
	if cl := vm.cmdline(); !slices.Contains(strings.Fields(cl), "rackplane.loss=ok") {
		t.Fatalf("the VM booted the command line %q, not its decision's", cl)
	}
	_, toServer := relay.Counts(tftptest.ToServer)
	_, toClient := relay.Counts(tftptest.ToClient)
	var asked []map[string]string
	for _, rq := range relay.Requests() {
		asked = append(asked, rq.Options)
	}
	t.Logf("VM booted after %s; the relay dropped %d packets to rackd, %d to the VM (%s); requests' options: %v",
		vm.took.Round(time.Second), toServer, toClient, loss, asked)
	if toServer == 0 || toClient == 0 {
		t.Errorf("the relay dropped nothing one way")
	}

	whole := func() bool {
		for _, bt := range rec.transfers(t) {
			if bt.FileName == dhcp.FileSNPOnly && (bt.Error == "" || strings.Contains(bt.Error, tftp.ErrLastUnacknowledged.Error())) &&
				bt.Bytes == loaderSize && bt.Size == loaderSize {
				return true
			}
		}
		return false
	}
	if !netnstest.WaitFor(10*time.Second, whole) {
		t.Errorf("no boot_transfer of all %d bytes of %s: %+v", loaderSize, dhcp.FileSNPOnly, rec.transfers(t))
	}
	for _, bt := range rec.transfers(t) {
		// A lost final ACK is what loss does to a client that is done:
		// the firmware has moved on, and the rack says so.
		if bt.Error != "" && !strings.Contains(bt.Error, tftp.ErrLastUnacknowledged.Error()) {
			t.Errorf("failed transfer: %s %s to %s, %d of %d bytes: %s", bt.Protocol, bt.FileName, bt.Remote, bt.Bytes, bt.Size, bt.Error)
		}
	}
}

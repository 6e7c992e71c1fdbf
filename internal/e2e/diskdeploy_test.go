package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/netns"
	"github.com/rackplane/rackplane/internal/netnstest"
)

// relay is an HTTP relay between machines and their rack.
type relay struct {
	flip    atomic.Bool  // flip a byte of the file from now on
	flipped atomic.Int64 // responses of the file with a byte flipped
}

// flippingRelay serves HTTP on addr in namespace ns, relaying every
// request to target (reached in ns too); once flip is set, each response
// for a path ending in suffix has the byte at its middle (by its
// Content-Length) flipped on its way through, as a faulty switch or a
// hostile box on the boot network would.
func flippingRelay(t *testing.T, ns, addr, target, suffix string) *relay {
	t.Helper()
	r := &relay{}
	to, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(to)
	proxy.Transport = netnstest.HTTPClient(ns).Transport
	proxy.ModifyResponse = func(resp *http.Response) error {
		if r.flip.Load() && strings.HasSuffix(resp.Request.URL.Path, suffix) && resp.ContentLength > 1 {
			r.flipped.Add(1)
			resp.Body = &flipAt{ReadCloser: resp.Body, at: resp.ContentLength / 2}
		}
		return nil
	}
	var ln net.Listener
	if err := netns.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("relay on %s in %s: %v", addr, ns, err)
	}
	srv := &http.Server{Handler: proxy}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return r
}

// flipAt flips the byte at offset at of the body it reads.
type flipAt struct {
	io.ReadCloser
	at, off int64
}

func (f *flipAt) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if f.at >= f.off && f.at < f.off+int64(n) {
		p[f.at-f.off] ^= 0x10
	}
	f.off += int64(n)
	return n, err
}

func machineEvents(t *testing.T, a api, id string) []events.Event {
	t.Helper()
	var evs struct{ Events []events.Event }
	a.call("GET", "/api/v1/events?limit=1000&stream="+url.QueryEscape(events.MachineStreamName(id)), nil, nil, &evs)
	return evs.Events
}

// bootHandoffs are the rack's boot hand-offs.
func bootHandoffs(t *testing.T, a api) []events.Event {
	t.Helper()
	var evs struct{ Events []events.Event }
	a.call("GET", "/api/v1/events?limit=1000&type="+url.QueryEscape(events.TypeBootHandoff), nil, nil, &evs)
	return evs.Events
}

// checkWrittenAndBootedFromDisk checks what a deployment of a disk image
// to machine id (MAC mac) left in the event log: the agent wrote the
// image's size bytes to vda, read them back from the disk with the
// image's sha256, and after it reported them written the rack handed
// the machine local boot configs only, no kernel or initrd: the machine
// rebooted from its disk, not the network. Under UEFI (uefi) the agent
// made the disk's ESP the firmware's next boot, and the machine did not
// ask the rack at all; under BIOS it asked and was told to boot locally.
func checkWrittenAndBootedFromDisk(t *testing.T, a api, id, mac string, size int64, sha string, uefi bool) {
	t.Helper()
	var writtenAt time.Time
	var steps []string
	for _, e := range machineEvents(t, a, id) {
		switch e.Type {
		case events.TypeAgentStepReported:
			var s events.AgentStepReported
			json.Unmarshal(e.Data, &s)
			if s.Purpose == events.BootPurposeDeploy {
				steps = append(steps, fmt.Sprintf("%s %s %d %s", s.Name, s.State, s.Progress, s.Message))
			}
		case events.TypeAgentFinished:
			var f events.AgentFinished
			json.Unmarshal(e.Data, &f)
			if f.Purpose == events.BootPurposeDeploy && f.Success {
				writtenAt = e.Time
			}
		}
	}
	t.Logf("agent steps: %q", steps)
	all := strings.Join(steps, "\n")
	if writtenAt.IsZero() || !strings.Contains(all, fmt.Sprintf("write:vda done 100 %d bytes, sha256 %s", size, sha)) ||
		!strings.Contains(all, fmt.Sprintf("verify:vda done 100 read back %d bytes from vda, sha256 %s", size, sha)) {
		t.Errorf("the agent's steps %q lack the image written, and read back from the disk, with its sha256 %s", steps, sha)
	}
	var asked []string
	for _, e := range bootHandoffs(t, a) {
		var h events.BootHandoff
		json.Unmarshal(e.Data, &h)
		if !e.Time.After(writtenAt) || h.MAC != "" && h.MAC != mac {
			continue
		}
		// A kernel or initrd handed out after the image was written
		// would be this machine's (the others' have their own MACs; a
		// versioned file carries none). Its firmware still loads iPXE
		// (a bootloader) to ask for its config.
		if h.Route == "versioned" && !strings.HasPrefix(h.VersionID, "bootloaders/") || h.MAC == mac && h.Purpose != events.BootPurposeLocal {
			t.Errorf("after the image was written the rack handed out %s %s of %s (purpose %s): want local boot configs only",
				h.Route, h.FileName, h.VersionID, h.Purpose)
		}
		if h.MAC == mac {
			asked = append(asked, h.FileName+" "+h.Purpose)
		}
	}
	t.Logf("boot configs the VM asked for after the image was written: %q", asked)
	switch next := "boot-next done 100 BootNext is Boot"; {
	case uefi && !strings.Contains(all, next):
		t.Errorf("the agent's steps %q lack %q: the firmware's next boot was not set to the disk", steps, next)
	case uefi && len(asked) > 0:
		t.Error("the UEFI VM asked the rack after the reboot: BootNext did not take it to its disk")
	case !uefi && len(asked) == 0:
		t.Error("the VM did not ask the rack after the reboot (boot order?)")
	}
}

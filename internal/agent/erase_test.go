package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/agent"
	"github.com/rackplane/rackplane/rack/agentapi"
	"github.com/rackplane/rackplane/rack/machinecred"
)

const mib = 1 << 20

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("this test needs %s: install the Debian package named in .ci/packages", tool)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// image makes a sparse file of size bytes standing in for a disk.
func image(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

// gptExt4 gives img a GPT with one partition from 1 MiB, of size bytes,
// holding an ext4 filesystem, and returns the partition.
func gptExt4(t *testing.T, img string, size int64) agent.Extent {
	t.Helper()
	cmd := exec.Command("sfdisk", "--quiet", img)
	cmd.Stdin = strings.NewReader(fmt.Sprintf("label: gpt\nstart=2048, size=%d, type=linux\n", size/512))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	run(t, "mkfs.ext4", "-q", "-F", "-E", fmt.Sprintf("offset=%d", mib), img, fmt.Sprintf("%dk", size/1024))
	return agent.Extent{Start: mib, Size: size}
}

// signatures is what wipefs and blkid find on img, at its start and at
// each offset: "" when nothing.
func signatures(t *testing.T, img string, offsets ...int64) string {
	t.Helper()
	var found []string
	if out := run(t, "wipefs", "--no-act", img); strings.TrimSpace(out) != "" {
		found = append(found, "wipefs: "+out)
	}
	for _, off := range append([]int64{0}, offsets...) {
		// blkid -p exits 2 when it finds nothing.
		out, err := exec.Command("blkid", "-p", "-O", fmt.Sprint(off), img).CombinedOutput()
		if err == nil || strings.TrimSpace(string(out)) != "" {
			found = append(found, fmt.Sprintf("blkid at %d: %s (%v)", off, out, err))
		}
	}
	return strings.Join(found, "\n")
}

// marker writes a few bytes at off, which only a full erase reaches.
func marker(t *testing.T, img string, off int64) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("rackplane"), off); err != nil {
		t.Fatal(err)
	}
}

func hasMarker(t *testing.T, img string, off int64) bool {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 9)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return string(b) == "rackplane"
}

// TestEraseDevice erases image files made as an installer leaves disks:
// afterwards neither wipefs nor blkid finds a partition table or a
// filesystem, at the disk's start or at the partition's. A quick erase
// leaves the middle alone; a full one zeroes it too, telling its progress.
func TestEraseDevice(t *testing.T) {
	need(t, "sfdisk", "mkfs.ext4", "wipefs", "blkid")
	const middle = 20 * mib
	for _, tc := range []struct {
		name   string
		size   int64
		mode   string
		make   func(t *testing.T, img string) []agent.Extent
		keeps  bool // the marker in the middle stays
		needed []string
	}{
		{"gpt and ext4 in a partition, quick", 64 * mib, events.EraseQuick, func(t *testing.T, img string) []agent.Extent {
			return []agent.Extent{gptExt4(t, img, 40*mib)}
		}, true, nil},
		{"ext4 on the whole disk, quick", 96 * mib, events.EraseQuick, func(t *testing.T, img string) []agent.Extent {
			run(t, "mkfs.ext4", "-q", "-F", img)
			return nil
		}, true, nil},
		{"xfs on the whole disk, quick", 320 * mib, events.EraseQuick, func(t *testing.T, img string) []agent.Extent {
			run(t, "mkfs.xfs", "-q", "-f", img)
			return nil
		}, true, []string{"mkfs.xfs"}},
		{"gpt and ext4 in a partition, full", 48 * mib, events.EraseFull, func(t *testing.T, img string) []agent.Extent {
			return []agent.Extent{gptExt4(t, img, 40*mib)}
		}, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			need(t, tc.needed...)
			img := image(t, tc.size)
			parts := tc.make(t, img)
			var offsets []int64
			for _, p := range parts {
				offsets = append(offsets, p.Start)
			}
			if signatures(t, img, offsets...) == "" {
				t.Fatal("the image has no signature to erase")
			}
			marker(t, img, middle)
			var calls int
			var last, total int64
			err := agent.EraseDevice(context.Background(), img, tc.mode, parts, func(done, all int64) {
				if done < last {
					t.Errorf("progress went back from %d to %d", last, done)
				}
				calls, last, total = calls+1, done, all
			})
			if err != nil {
				t.Fatal(err)
			}
			if s := signatures(t, img, offsets...); s != "" {
				t.Fatalf("left behind:\n%s", s)
			}
			if got := hasMarker(t, img, middle); got != tc.keeps {
				t.Fatalf("data in the middle kept: %v, want %v", got, tc.keeps)
			}
			if last != total || calls == 0 {
				t.Fatalf("progress ended at %d of %d after %d calls", last, total, calls)
			}
			if tc.mode == events.EraseFull && total != tc.size {
				t.Fatalf("a full erase wrote %d bytes of %d", total, tc.size)
			}
			fi, err := os.Stat(img)
			if err != nil || fi.Size() != tc.size {
				t.Fatalf("image is %v bytes now (%v), want %d", fi.Size(), err, tc.size)
			}
		})
	}
	if err := agent.EraseDevice(context.Background(), image(t, mib), "zero", nil, nil); err == nil {
		t.Fatal("an unknown mode erased")
	}
}

// fakeRoot is a machine's /proc, /sys and /dev as the agent reads them:
// disks maps a disk's name to its attributes (removable, ro) and device
// file, with the partitions of parts.
type fakeDisk struct {
	name      string
	img       string
	removable bool
	readOnly  bool
	parts     []agent.Extent
}

func fakeRoot(t *testing.T, cmdline string, disks ...fakeDisk) string {
	t.Helper()
	root := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("proc/cmdline", cmdline+"\n")
	one := map[bool]string{true: "1\n", false: "0\n"}
	for _, d := range disks {
		fi, err := os.Stat(d.img)
		if err != nil {
			t.Fatal(err)
		}
		dir := "sys/block/" + d.name + "/"
		write(dir+"size", fmt.Sprintf("%d\n", fi.Size()/512))
		write(dir+"removable", one[d.removable])
		write(dir+"ro", one[d.readOnly])
		write(dir+"device/model", "QEMU\n")
		for i, p := range d.parts {
			write(fmt.Sprintf("%s%s%d/start", dir, d.name, i+1), fmt.Sprintf("%d\n", p.Start/512))
			write(fmt.Sprintf("%s%s%d/size", dir, d.name, i+1), fmt.Sprintf("%d\n", p.Size/512))
		}
		if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(d.img, filepath.Join(root, "dev", d.name)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// eraseRack takes the agent's reports as a rack does for a boot with
// purpose erase.
func eraseRack(t *testing.T) (url string, published func() []events.Event) {
	t.Helper()
	keys, err := machinecred.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var evs []events.Event
	h, err := agentapi.New(agentapi.Config{RackID: "0190f0e0-0000-7000-8000-0000000000ee",
		Boot: func(id string) (events.BootDecision, bool) {
			return events.BootDecision{MachineID: id, Purpose: events.BootPurposeErase, DeploymentID: opID}, id == machineID
		},
		Check:   keys.Check,
		Publish: func(e events.Event) { mu.Lock(); evs = append(evs, e); mu.Unlock() },
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "refused"}, []string{"endpoint", "reason"}),
		Logger:  slog.New(slog.DiscardHandler), Rate: 1000, Burst: 1000})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/agent/" + machineID + "/" + keys.For(machineID, opID), func() []events.Event {
		mu.Lock()
		defer mu.Unlock()
		return append([]events.Event(nil), evs...)
	}
}

// TestRunErase: with rackplane.purpose=erase the agent erases every disk
// but removable and read-only ones, reports a step per disk and its
// outcome, with the purpose, to the rack.
func TestRunErase(t *testing.T) {
	need(t, "sfdisk", "mkfs.ext4", "wipefs", "blkid")
	vda, stick, ro := image(t, 64*mib), image(t, 32*mib), image(t, 32*mib)
	part := gptExt4(t, vda, 40*mib)
	run(t, "mkfs.ext4", "-q", "-F", stick)
	run(t, "mkfs.ext4", "-q", "-F", ro)
	for _, tc := range []struct {
		mode, want string
		success    bool
	}{
		{"bogus", "want quick or full", false},
		{"quick", "quick erase of 1 disks", true},
	} {
		url, published := eraseRack(t)
		root := fakeRoot(t, "console=ttyS0 rackplane.purpose=erase rackplane.erase="+tc.mode,
			fakeDisk{name: "vda", img: vda, parts: []agent.Extent{part}},
			fakeDisk{name: "sdb", img: stick, removable: true},
			fakeDisk{name: "vdc", img: ro, readOnly: true})
		err := agent.Run(context.Background(), agent.Config{URL: url, Root: root, Attempts: 2, Backoff: 1})
		if (err == nil) != tc.success {
			t.Fatalf("erase %s: %v", tc.mode, err)
		}
		var steps []string
		var fin *events.AgentFinished
		for _, e := range published() {
			switch e.Type {
			case events.TypeAgentStepReported:
				var d events.AgentStepReported
				if err := json.Unmarshal(e.Data, &d); err != nil {
					t.Fatal(err)
				}
				steps = append(steps, fmt.Sprintf("%s %s %d", d.Name, d.State, d.Progress))
			case events.TypeAgentFinished:
				fin = &events.AgentFinished{}
				if err := json.Unmarshal(e.Data, fin); err != nil {
					t.Fatal(err)
				}
			}
		}
		if fin == nil || fin.Success != tc.success || fin.Purpose != events.BootPurposeErase || !strings.Contains(fin.Message, tc.want) {
			t.Fatalf("erase %s: outcome %+v, want success %v with %q (steps %v)", tc.mode, fin, tc.success, tc.want, steps)
		}
		if !tc.success {
			if signatures(t, vda) == "" {
				t.Fatal("a refused erase erased")
			}
			continue
		}
		// Only vda, from 0 to done, with progress between.
		if len(steps) < 3 || steps[0] != "erase:vda started 0" || steps[len(steps)-1] != "erase:vda done 100" ||
			!strings.HasPrefix(steps[1], "erase:vda started ") {
			t.Fatalf("steps %v", steps)
		}
	}
	if s := signatures(t, vda, part.Start); s != "" {
		t.Fatalf("vda left behind:\n%s", s)
	}
	for _, img := range []string{stick, ro} {
		if signatures(t, img) == "" {
			t.Fatalf("%s was erased: it is removable or read-only", img)
		}
	}
}

// An erase that finds no disk to erase fails: the ephemeral environment
// without the driver of the machine's disk controller (a SAS HBA, a RAID
// controller) sees none, and a success would make the machine ready with
// its disks as they were.
func TestRunEraseWithoutDisksFails(t *testing.T) {
	need(t, "mkfs.ext4")
	stick := image(t, 32*mib)
	run(t, "mkfs.ext4", "-q", "-F", stick)
	url, published := eraseRack(t)
	root := fakeRoot(t, "rackplane.purpose=erase rackplane.erase=quick", fakeDisk{name: "sdb", img: stick, removable: true})
	if err := agent.Run(context.Background(), agent.Config{URL: url, Root: root, Attempts: 2, Backoff: 1}); err == nil {
		t.Error("an erase without disks ended without an error")
	}
	var fin *events.AgentFinished
	for _, e := range published() {
		if e.Type == events.TypeAgentFinished {
			fin = &events.AgentFinished{}
			if err := json.Unmarshal(e.Data, fin); err != nil {
				t.Fatal(err)
			}
		}
	}
	if fin == nil || fin.Success || !strings.Contains(fin.Message, "no disk to erase") {
		t.Fatalf("outcome %+v, want a failure saying no disk to erase", fin)
	}
	if signatures(t, stick) == "" {
		t.Fatal("the removable disk was erased")
	}
}

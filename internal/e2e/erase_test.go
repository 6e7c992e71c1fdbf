package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
)

// TestReleaseWithQuickErase releases a machine with a quick erase through
// a regiond and a rackd: the QEMU VM (SeaBIOS) has two virtio disks an
// installer left behind, one with a GPT and ext4 in a partition, one with
// a filesystem on the whole disk. It PXE-boots the ephemeral environment,
// whose agent erases both, reports its steps with progress and its outcome,
// and powers the VM off. The machine is then ready, and neither wipefs nor
// blkid finds anything on either disk image.
func TestReleaseWithQuickErase(t *testing.T) {
	endToEnd(t)
	// Its VMs and servers are its own (namespaces, ports, databases):
	// it runs beside the other VM tests, which keeps CI within its time.
	t.Parallel()
	for _, tool := range []string{"sfdisk", "mkfs.ext4", "wipefs", "blkid"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("this test needs %s: install the Debian package named in .ci/packages", tool)
		}
	}
	began := time.Now()
	site := newPXESiteWith(t, true, "ipxe/boot.ipxe")
	a := site.a
	importEphemeral(t, site.a, site.rackID)

	// The cheapest honest way to a machine that can be released: a
	// deployment started (debian/bookworm, which the site imports) whose
	// machine never booted its installer.
	const mac = "52:54:00:7e:00:01"
	var m machineRef
	if code := a.call("POST", "/api/v1/machines", nil,
		map[string]any{"hostname": "erase1", "macs": []string{mac}, "boot_rack_id": site.rackID}, &m); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	if code := a.call("POST", "/api/v1/preseeds", nil, map[string]any{"name": "erase1", "content": "# nothing to do\n"}, nil); code != 201 {
		t.Fatalf("create preseed: %d", code)
	}
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/deploy", nil, map[string]any{"os": "debian", "release": "bookworm"}, &m); code != 200 || m.Status != "deploying" {
		t.Fatalf("deploy: %d %+v", code, m)
	}

	// A mode the region does not know is refused, naming the field, and
	// changes nothing.
	var refused struct {
		Error struct{ Code, Message string }
	}
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/release", nil, map[string]any{"erase": "shred"}, &refused); code != 400 ||
		!strings.HasPrefix(refused.Error.Message, "erase ") {
		t.Fatalf("release with erase shred: %d %+v, want 400 naming erase", code, refused)
	}

	dir := t.TempDir()
	disks := []struct {
		name string
		size int64
	}{{"gpt-ext4", 64 << 20}, {"whole", 320 << 20}}
	imgs := make([]string, len(disks))
	args := []string{"-accel", "tcg", "-smp", "2", "-m", "1024", "-nographic", "-no-reboot", "-monitor", "none",
		"-netdev", "user,id=n0,bootfile=tftp://10.0.2.2:" + site.tftpPort + "/" + site.bootFile,
		"-device", "e1000,netdev=n0,mac=" + mac, "-boot", "n"}
	for i, d := range disks {
		p := filepath.Join(dir, d.name+".img")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, d.size); err != nil {
			t.Fatal(err)
		}
		imgs[i] = p
		id := fmt.Sprintf("d%d", i)
		args = append(args, "-drive", "file="+p+",if=none,id="+id+",format=raw", "-device", "virtio-blk-pci,drive="+id)
	}
	// As an installer leaves them: a GPT with ext4 in its partition, and
	// XFS (ext4 without mkfs.xfs) on the whole of the other disk.
	sfdisk := exec.Command("sfdisk", "--quiet", imgs[0])
	sfdisk.Stdin = strings.NewReader("label: gpt\nstart=2048, size=81920, type=linux\n")
	mustRun(t, sfdisk)
	mustRun(t, exec.Command("mkfs.ext4", "-q", "-F", "-E", "offset=1048576", imgs[0], "40960k"))
	if _, err := exec.LookPath("mkfs.xfs"); err == nil {
		mustRun(t, exec.Command("mkfs.xfs", "-q", "-f", imgs[1]))
	} else {
		mustRun(t, exec.Command("mkfs.ext4", "-q", "-F", imgs[1]))
	}
	for _, img := range imgs {
		if found := foundOn(t, img); found == "" {
			t.Fatalf("%s has no signature before the erase", img)
		}
	}

	var rel struct{ Status string }
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/release", nil, map[string]any{"erase": "quick"}, &rel); code != 200 || rel.Status != "erasing" {
		t.Fatalf("release with erase quick: %d %+v", code, rel)
	}

	log := runVM(t, site.qemu, dir, args, "erased its disks")

	eventually(t, 30*time.Second, "the machine is ready", func() error {
		var got struct{ Status, StatusReason string }
		a.call("GET", "/api/v1/machines/"+m.ID, nil, nil, &got)
		if got.Status != "ready" {
			return fmt.Errorf("status %s %s", got.Status, got.StatusReason)
		}
		return nil
	})
	for _, img := range imgs {
		if found := foundOn(t, img, 1<<20); found != "" {
			t.Errorf("%s after the erase:\n%s\nserial:\n%s", img, found, tail(string(log), 40))
		}
	}

	var evs struct {
		Events []events.Event
	}
	a.call("GET", "/api/v1/events?limit=1000&stream="+url.QueryEscape(events.MachineStreamName(m.ID)), nil, nil, &evs)
	seen := map[string]int{}
	progress := map[string][]int{}
	var finished events.AgentFinished
	var released events.MachineRef
	for _, e := range evs.Events {
		seen[events.Name(e.Type)]++
		switch e.Type {
		case events.TypeAgentStepReported:
			var d events.AgentStepReported
			if err := json.Unmarshal(e.Data, &d); err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(d.Name, "erase:") && d.Purpose == events.BootPurposeErase {
				progress[d.Name] = append(progress[d.Name], d.Progress)
			}
		case events.TypeAgentFinished:
			if err := json.Unmarshal(e.Data, &finished); err != nil {
				t.Fatal(err)
			}
		case events.TypeMachineReleased:
			if err := json.Unmarshal(e.Data, &released); err != nil {
				t.Fatal(err)
			}
		}
	}
	if seen["machine_erasing"] != 1 || !finished.Success || finished.Purpose != events.BootPurposeErase ||
		!strings.Contains(released.Reason, "the disks were erased") {
		t.Errorf("events %v, outcome %+v, released %+v", seen, finished, released)
	}
	for _, disk := range []string{"erase:vda", "erase:vdb"} {
		p := progress[disk]
		if len(p) < 3 || p[len(p)-1] != 100 || p[1] <= 0 || p[1] >= 100 {
			t.Errorf("%s reported progress %v, want 0, some between and 100", disk, p)
		}
	}
	t.Logf("machine events: %v; progress %v; the test took %s", seen, progress, time.Since(began).Round(time.Second))
}

func mustRun(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
}

// foundOn is what wipefs --no-act and blkid -p find on img, at its start
// and at offsets: "" when nothing.
func foundOn(t *testing.T, img string, offsets ...int64) string {
	t.Helper()
	var found []string
	out, err := exec.Command("wipefs", "--no-act", img).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		found = append(found, fmt.Sprintf("wipefs: %s (%v)", out, err))
	}
	for _, off := range append([]int64{0}, offsets...) {
		// blkid -p exits 2 when it finds nothing.
		out, err := exec.Command("blkid", "-p", "-O", fmt.Sprint(off), img).CombinedOutput()
		if err == nil || strings.TrimSpace(string(out)) != "" {
			found = append(found, fmt.Sprintf("blkid -p -O %d: %s (%v)", off, out, err))
		}
	}
	return strings.Join(found, "\n")
}

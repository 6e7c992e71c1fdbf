package machine_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/machine"
)

var now = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

const id = "0190f0e0-0000-7000-8000-000000000001"

func at(status string) rackplane.Machine {
	m := rackplane.Machine{ID: id, Hostname: "node1", MACs: []string{"52:54:00:00:00:01", "52:54:00:00:00:02"}, Arch: "amd64",
		Status: status, Version: 3}
	if status == events.MachineDeployed || status == events.MachineRescue {
		m.DeployedAt = &now
	}
	return m
}

var image = machine.BootImage{OS: "ubuntu", Release: "noble", Arch: "amd64", Subarch: "generic", // as machinetest.Database has it
	VersionID: "ubuntu/amd64/generic/noble/stable/1", RackID: "0190f0e0-0000-7000-8000-0000000000aa", RackName: "r1",
	BootURL: "http://10.0.0.1:5248/", Files: []string{"linux", "initrd"}, Version: "1", Online: true}

var env = machine.BootImage{VersionID: "rackplane/amd64/ga/ephemeral/stable/1", Files: []string{"vmlinuz", "initrd.img"}}

// diskImage is a disk image (installer agent) on image's rack, and
// diskEnv the ephemeral environment there that writes it.
var (
	diskImage = machine.BootImage{OS: "ubuntu", Release: "noble", Arch: "amd64", Subarch: "generic",
		VersionID: "ubuntu/amd64/generic/noble/disk/1", RackID: image.RackID, RackName: "r1", BootURL: image.BootURL,
		Files: []string{"disk.img.zst"}, Version: "1", Online: true, Installer: events.InstallerAgent,
		Disk: &events.DiskImage{File: "disk.img.zst", Compression: events.DiskCompressionZstd, Size: 1 << 30,
			SHA256: strings.Repeat("ab", 32), Table: "msdos", RootPartition: 2, GrowRoot: true}}
	diskEnv = machine.BootImage{VersionID: env.VersionID, Files: env.Files, RackID: image.RackID, RackName: "r1"}
)

// commands are one of each command, and the types of the events each
// emits when allowed, boot decisions aside.
var commands = []struct {
	name  string
	cmd   machine.Command
	emits string
	// to is the status the machine is in after the events, for one that
	// was never deployed.
	to string
}{
	{"deploy", machine.Deploy{Image: image, Preseed: machine.PreseedPin{Name: "default", Version: 2}}, events.TypeMachineDeploying, events.MachineDeploying},
	{"deploy disk image", machine.Deploy{Image: diskImage, Environment: diskEnv, TargetDisk: "vda"}, events.TypeMachineDeploying, events.MachineDeploying},
	{"disk written", machine.DiskWritten{Success: true}, events.TypeBootDecisionSet, ""},
	{"disk write failed", machine.DiskWritten{Message: "checksum mismatch"}, events.TypeMachineFailed, events.MachineFailed},
	{"release", machine.Release{}, events.TypeMachineReleased, events.MachineReady},
	{"release powering off", machine.Release{PowerOff: true}, events.TypeMachineReleasing, events.MachineReleasing},
	{"release erasing", machine.Release{Erase: events.EraseQuick, Environment: env, PowerOff: true}, events.TypeMachineErasing, events.MachineErasing},
	{"release erasing none", machine.Release{Erase: events.EraseNone, Environment: env}, events.TypeMachineReleased, events.MachineReady},
	{"erased", machine.EraseReport{Success: true}, events.TypeMachineReleased, events.MachineReady},
	{"erase failed", machine.EraseReport{Message: "vda: I/O error"}, events.TypeMachineFailed, events.MachineFailed},
	{"erase timed out", machine.EraseTimedOut{Timeout: time.Hour}, events.TypeMachineFailed, events.MachineFailed},
	{"released", machine.ReleaseFinished{Success: true}, events.TypeMachineReleased, events.MachineReady},
	{"release failed", machine.ReleaseFinished{Message: "BMC unreachable"}, events.TypeMachineFailed, events.MachineFailed},
	{"power failed", machine.PowerFailed{Reason: "BMC refused the credentials"}, events.TypeMachineFailed, events.MachineFailed},
	{"mark-failed", machine.MarkFailed{Reason: "stuck"}, events.TypeMachineFailed, events.MachineFailed},
	{"mark-broken", machine.MarkBroken{Reason: "PSU"}, events.TypeMachineBroken, events.MachineBroken},
	{"mark-fixed", machine.MarkFixed{}, events.TypeMachineFixed, events.MachineReady},
	{"commission", machine.Commission{Environment: env}, events.TypeMachineCommissioning, events.MachineCommissioning},
	{"commissioned", machine.CommissioningReport{Success: true}, events.TypeMachineCommissioned, events.MachineReady},
	{"rescue", machine.Rescue{Environment: env}, events.TypeMachineRescueEntered, events.MachineRescue},
	{"exit-rescue", machine.ExitRescue{}, events.TypeMachineRescueExited, events.MachineReady},
	{"installed", machine.InstallReport{Success: true}, events.TypeMachineDeployed, events.MachineDeployed},
	{"install failed", machine.InstallReport{Message: "no disk"}, events.TypeMachineFailed, events.MachineFailed},
	{"timed out", machine.DeployTimedOut{Timeout: time.Hour}, events.TypeMachineFailed, events.MachineFailed},
	{"commission timed out", machine.CommissionTimedOut{Timeout: time.Hour}, events.TypeMachineFailed, events.MachineFailed},
	{"commission failed", machine.CommissioningReport{Message: "no disks"}, events.TypeMachineFailed, events.MachineFailed},
	{"delete", machine.Delete{}, events.TypeMachineDeleted, ""},
	{"update", machine.Change{Hostname: ptr("node2")}, events.TypeMachineUpdated, ""},
	{"set-tags", machine.SetTags{Tags: []string{"rack4", "gpu"}}, events.TypeMachineTagsSet, ""},
}

// allowed is the lifecycle, written out: for each command, the statuses
// it is allowed in. Anything else must be refused (or, for reports and
// timeouts, be a no-op where the machine is already where they lead).
var allowed = map[string][]string{
	"deploy":               {"new", "ready", "failed"},
	"deploy disk image":    {"new", "ready", "failed"},
	"disk written":         {"deploying"},
	"disk write failed":    {"deploying"},
	"release":              {"deploying", "deployed", "releasing", "erasing", "failed", "rescue"},
	"release powering off": {"deploying", "deployed", "releasing", "erasing", "failed", "rescue"},
	"release erasing":      {"deploying", "deployed", "releasing", "erasing", "failed", "rescue"},
	"release erasing none": {"deploying", "deployed", "releasing", "erasing", "failed", "rescue"},
	"erased":               {"erasing"},
	"erase failed":         {"erasing"},
	"erase timed out":      {"erasing"},
	"released":             {"releasing"},
	"release failed":       {"releasing"},
	"power failed":         {"deploying", "erasing"},
	"mark-failed":          {"commissioning", "deploying", "releasing", "erasing"},
	"mark-broken":          {"new", "commissioning", "ready", "deploying", "deployed", "releasing", "failed", "rescue"},
	"mark-fixed":           {"broken"},
	"commission":           {"new", "ready", "failed", "broken"},
	"commissioned":         {"commissioning"},
	"rescue":               {"deployed", "failed", "broken"},
	"exit-rescue":          {"rescue"},
	"installed":            {"deploying"},
	"install failed":       {"deploying"},
	"timed out":            {"deploying"},
	"commission timed out": {"commissioning"},
	"commission failed":    {"commissioning"},
	"delete":               {"new", "ready", "deployed", "failed", "broken"},
	"update":               events.MachineStatuses,
	"set-tags":             events.MachineStatuses,
}

// noops are where a command finds the machine where it would take it: an
// installer's retried report, a timeout that lost a race.
var noops = map[string][]string{
	"installed":            {"deployed"},
	"install failed":       {"failed"},
	"commissioned":         {"ready"},
	"timed out":            {"new", "commissioning", "ready", "deployed", "releasing", "erasing", "failed", "broken", "rescue"},
	"commission timed out": {"new", "ready", "deploying", "deployed", "releasing", "erasing", "failed", "broken", "rescue"},
	"erase timed out":      {"new", "commissioning", "ready", "deploying", "deployed", "releasing", "failed", "broken", "rescue"},
	"erased":               {"ready"},
	"erase failed":         {"failed"},
	"commission failed":    {"failed"},
	// The lifecycle's power outcomes come late when an operator acted
	// meanwhile: they change nothing then.
	"released":       {"new", "commissioning", "ready", "deploying", "deployed", "erasing", "failed", "broken", "rescue"},
	"release failed": {"new", "commissioning", "ready", "deploying", "deployed", "erasing", "failed", "broken", "rescue"},
	"power failed":   {"new", "commissioning", "ready", "releasing", "deployed", "failed", "broken", "rescue"},
}

func TestEveryTransition(t *testing.T) {
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range commands {
		for _, status := range events.MachineStatuses {
			t.Run(c.name+" when "+status, func(t *testing.T) {
				m := at(status)
				evs, err := machine.Decide(m, c.cmd, now)
				switch {
				case slices.Contains(allowed[c.name], status):
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					if len(evs) == 0 || evs[0].Type != c.emits {
						t.Fatalf("emits %v, want %s first", types(evs), c.emits)
					}
					if c.to != "" {
						to, ok := machine.StatusAfter(m, evs[0].Type)
						want := c.to
						if m.DeployedAt != nil && (c.name == "mark-fixed" || c.name == "exit-rescue") {
							want = events.MachineDeployed
						}
						if !ok || to != want {
							t.Errorf("leaves the machine %q, want %q", to, want)
						}
					}
					for _, ev := range evs {
						if ev.Subject != events.MachineStreamName(id) || !ev.Time.Equal(now) || ev.Source != events.RegionSource {
							t.Errorf("event %s: subject %q time %v source %q", ev.Type, ev.Subject, ev.Time, ev.Source)
						}
						if !machine.IsChange(ev.Type) {
							t.Errorf("event %s does not count as a change of the machine", ev.Type)
						}
						if err := v.Validate(ev); err != nil {
							t.Errorf("event %s does not validate: %v", ev.Type, err)
						}
					}
				case slices.Contains(noops[c.name], status):
					if err != nil || len(evs) != 0 {
						t.Fatalf("want nothing to do, got %v, %v", types(evs), err)
					}
				default:
					if err == nil {
						t.Fatalf("allowed (%v), want a refusal", types(evs))
					}
					if rackplane.ErrorCode(err) != rackplane.ECONFLICT {
						t.Errorf("refusal has code %s, want conflict: %v", rackplane.ErrorCode(err), err)
					}
					if !strings.Contains(rackplane.ErrorMessage(err), "node1") || !strings.Contains(rackplane.ErrorMessage(err), status) {
						t.Errorf("refusal %q does not name the machine and its status", rackplane.ErrorMessage(err))
					}
				}
			})
		}
	}
}

func types(evs []events.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func decisions(t *testing.T, evs []events.Event) map[string]events.BootDecision {
	t.Helper()
	out := map[string]events.BootDecision{}
	for _, e := range evs {
		if e.Type != events.TypeBootDecisionSet {
			continue
		}
		var d events.BootDecision
		if err := e.DecodeData(&d); err != nil {
			t.Fatal(err)
		}
		out[d.MAC] = d
	}
	return out
}

// What each transition tells the racks to boot.
func TestBootDecisions(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		cmd     machine.Command
		purpose string // of every MAC; "" for none set
	}{
		{"deploy installs", "ready", machine.Deploy{Image: image}, events.BootPurposeInstall},
		{"success boots from disk", "deploying", machine.InstallReport{Success: true}, events.BootPurposeLocal},
		{"failure leaves the installer", "deploying", machine.InstallReport{}, ""},
		{"release boots from disk", "deployed", machine.Release{}, events.BootPurposeLocal},
		{"broken boots from disk", "deploying", machine.MarkBroken{}, events.BootPurposeLocal},
		{"commission boots the agent", "new", machine.Commission{Environment: env}, events.BootPurposeCommission},
		{"rescue boots the agent", "deployed", machine.Rescue{Environment: env}, events.BootPurposeRescue},
		{"exit rescue boots from disk", "rescue", machine.ExitRescue{}, events.BootPurposeLocal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := at(tt.status)
			m.BootFile = "quirk/snponly.efi" // the firmware's quirk stays whatever it boots
			evs, err := machine.Decide(m, tt.cmd, now)
			if err != nil {
				t.Fatal(err)
			}
			ds := decisions(t, evs)
			if tt.purpose == "" {
				if len(ds) != 0 {
					t.Fatalf("set boot decisions %v", ds)
				}
				return
			}
			if len(ds) != len(m.MACs) {
				t.Fatalf("decisions for %d MACs, want %d", len(ds), len(m.MACs))
			}
			for _, mac := range m.MACs {
				d := ds[mac]
				if d.Purpose != tt.purpose || d.MachineID != id || d.BootFile != m.BootFile {
					t.Errorf("%s: %+v, want purpose %s and boot file %s", mac, d, tt.purpose, m.BootFile)
				}
				if d.Purpose != events.BootPurposeLocal && (d.Kernel == "" || d.Initrd == "" || !slices.Contains(d.Params, "rackplane.machine="+id)) {
					t.Errorf("%s: %+v lacks kernel, initrd or the machine parameter", mac, d)
				}
				// The event that started the operation names it: the rack
				// derives the credential of its installer or agent from it.
				if d.Purpose != events.BootPurposeLocal && d.DeploymentID != evs[0].ID {
					t.Errorf("%s: operation %q, want %s's id %s", mac, d.DeploymentID, evs[0].Type, evs[0].ID)
				}
			}
			for _, e := range evs[1:] {
				if e.CausationID != evs[0].ID {
					t.Errorf("%s is not caused by %s", e.Type, evs[0].Type)
				}
			}
		})
	}
}

func TestDeployPinsWhatItInstalls(t *testing.T) {
	evs, err := machine.Decide(at("ready"), machine.Deploy{Image: image, Preseed: machine.PreseedPin{Name: "default", Version: 2},
		KernelParams: []string{"console=ttyS0"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	var dep events.Deployment
	if err := evs[0].DecodeData(&dep); err != nil {
		t.Fatal(err)
	}
	want := events.Deployment{MachineID: id, OS: "ubuntu", Release: "noble", Arch: "amd64", Subarch: "generic",
		ImageVersionID: image.VersionID, RackID: image.RackID, PreseedName: "default", PreseedVersion: 2}
	if dep != want {
		t.Fatalf("deployment %+v, want %+v", dep, want)
	}
	d := decisions(t, evs)["52:54:00:00:00:01"]
	if d.Kernel != image.VersionID+"/linux" || d.Initrd != image.VersionID+"/initrd" ||
		d.PreseedURL != "http://10.0.0.1:5248/preseed/"+id || !slices.Equal(d.Params, []string{"rackplane.machine=" + id, "rackplane.hostname=node1", "console=ttyS0"}) {
		t.Fatalf("install decision %+v", d)
	}
	// Without a preseed there is no preseed URL.
	evs, _ = machine.Decide(at("ready"), machine.Deploy{Image: image}, now)
	if d := decisions(t, evs)["52:54:00:00:00:01"]; d.PreseedURL != "" {
		t.Fatalf("a deployment without preseed has preseed URL %q", d.PreseedURL)
	}
}

func TestBadCommandsAreInvalid(t *testing.T) {
	tests := []struct {
		name string
		m    rackplane.Machine
		cmd  machine.Command
		code string
		want string
	}{
		{"kernel parameter with a space", at("ready"), machine.Deploy{Image: image, KernelParams: []string{"a b"}}, rackplane.EINVALID, "one word each"},
		{"image without initrd", at("ready"), machine.Deploy{Image: machine.BootImage{VersionID: "x", RackName: "r1", Files: []string{"linux"}}}, rackplane.ECONFLICT, "no kernel and initrd"},
		{"bad hostname", rackplane.Machine{}, machine.Create{ID: id, Hostname: "Bad Name", MACs: []string{"52:54:00:00:00:01"}}, rackplane.EINVALID, "hostname"},
		{"no MAC", rackplane.Machine{}, machine.Create{ID: id, Hostname: "n"}, rackplane.EINVALID, "1 to 16"},
		{"bad MAC", at("ready"), machine.Change{MACs: &[]string{"x"}}, rackplane.EINVALID, "not a MAC address"},
		{"bad arch", at("ready"), machine.Change{Arch: ptr("a b")}, rackplane.EINVALID, "architecture"},
		{"boot file with a space", at("ready"), machine.Change{BootFile: ptr("a b.efi")}, rackplane.EINVALID, "without spaces"},
		{"boot file too long", at("ready"), machine.Change{BootFile: ptr(strings.Repeat("x", 128))}, rackplane.EINVALID, "127 bytes"},
		{"boot file URL not http", rackplane.Machine{}, machine.Create{ID: id, Hostname: "n", MACs: []string{"52:54:00:00:00:01"}, BootFile: "tftp://x/y"},
			rackplane.EINVALID, "http:// or https://"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := machine.Decide(tt.m, tt.cmd, now)
			if err == nil || rackplane.ErrorCode(err) != tt.code || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decide = %v, %v; want a %s error saying %q", types(evs), err, tt.code, tt.want)
			}
		})
	}
}

func TestCreate(t *testing.T) {
	for _, tt := range []struct{ origin, status string }{{"api", "ready"}, {"discovered", "new"}} {
		evs, err := machine.Decide(rackplane.Machine{}, machine.Create{ID: id, Hostname: "n1", MACs: []string{"52:54:00:AA:00:01", "52-54-00-aa-00-01"}, Origin: tt.origin}, now)
		if err != nil {
			t.Fatal(err)
		}
		var st events.MachineState
		if err := evs[0].DecodeData(&st); err != nil {
			t.Fatal(err)
		}
		if st.Status != tt.status || st.Arch != "amd64" || !slices.Equal(st.MACs, []string{"52:54:00:aa:00:01"}) {
			t.Errorf("%s: created %+v", tt.origin, st)
		}
		if ds := decisions(t, evs); len(ds) != 1 || ds["52:54:00:aa:00:01"].Purpose != events.BootPurposeLocal {
			t.Errorf("%s: boot decisions %+v", tt.origin, ds)
		}
	}
}

// A change of MACs forgets the removed ones and gives new ones the boot
// the machine has now.
func TestChangeCarriesTheBootOver(t *testing.T) {
	install := &events.BootDecision{MAC: "52:54:00:00:00:01", MachineID: id, Purpose: events.BootPurposeInstall, Kernel: "k", Initrd: "i"}
	evs, err := machine.Decide(at("deploying"), machine.Change{MACs: &[]string{"52:54:00:00:00:01", "52:54:00:00:00:03"}, Boot: install}, now)
	if err != nil {
		t.Fatal(err)
	}
	var cleared []string
	for _, e := range evs {
		if e.Type == events.TypeBootDecisionCleared {
			var c events.BootDecisionCleared
			_ = e.DecodeData(&c)
			cleared = append(cleared, c.MAC)
		}
	}
	if !slices.Equal(cleared, []string{"52:54:00:00:00:02"}) {
		t.Errorf("cleared %v, want the removed MAC", cleared)
	}
	ds := decisions(t, evs)
	if ds["52:54:00:00:00:03"].Purpose != events.BootPurposeInstall || ds["52:54:00:00:00:03"].Kernel != "k" || ds["52:54:00:00:00:03"].Hostname != "node1" {
		t.Errorf("the new MAC boots %+v", ds["52:54:00:00:00:03"])
	}
}

func TestRefusalsSayWhatToDo(t *testing.T) {
	tests := []struct {
		status string
		cmd    machine.Command
		want   string
	}{
		{"deploying", machine.Deploy{Image: image}, "machine node1 is already deploying; release it first"},
		{"deployed", machine.Deploy{Image: image}, "machine node1 is deployed; release it first to reinstall it"},
		{"ready", machine.Release{}, "machine node1 is ready: there is nothing to release"},
		{"broken", machine.Deploy{Image: image}, "machine node1 is broken; mark it fixed first"},
		{"ready", machine.MarkFailed{}, "machine node1 is ready: mark-failed is allowed only when it is commissioning, deploying, releasing or erasing"},
		{"erasing", machine.MarkBroken{}, "machine node1 is erasing its disks; mark it failed first"},
		{"erasing", machine.Deploy{Image: image}, "machine node1 is erasing its disks; deploy it once it is ready, or release it with erase none to abandon the erase"},
		{"deployed", machine.InstallReport{}, "machine node1 is deployed; a failure report is too late"},
	}
	for _, tt := range tests {
		_, err := machine.Decide(at(tt.status), tt.cmd, now)
		if got := rackplane.ErrorMessage(err); got != tt.want {
			t.Errorf("%s, %T: %q, want %q", tt.status, tt.cmd, got, tt.want)
		}
		if r, ok := machine.AsRefusal(err); ok && (r.Status != tt.status || r.MachineID != id) {
			t.Errorf("refusal %+v", r)
		}
	}
	if _, err := machine.Decide(at("ready"), machine.Release{}, now); !errors.As(err, new(*machine.Refusal)) {
		t.Errorf("a refused release is not a *Refusal: %v", err)
	}
}

func TestActionsFollowTheTable(t *testing.T) {
	want := map[string][]string{
		"new":           {"deploy", "commission", "mark-broken", "delete"},
		"ready":         {"deploy", "commission", "mark-broken", "delete"},
		"commissioning": {"mark-failed", "mark-broken"},
		"deploying":     {"release", "mark-failed", "mark-broken"},
		"deployed":      {"release", "mark-broken", "delete"},
		"failed":        {"deploy", "commission", "release", "mark-broken", "delete"},
		"broken":        {"commission", "mark-fixed", "delete"},
	}
	for status, w := range want {
		if got := machine.Actions(status); !slices.Equal(got, w) {
			t.Errorf("%s offers %v, want %v", status, got, w)
		}
	}
}

func TestChooseImage(t *testing.T) {
	other := "0190f0e0-0000-7000-8000-0000000000bb"
	newer := image
	newer.Version, newer.VersionID = "2", "ubuntu/amd64/generic/noble/stable/2"
	offline := newer
	offline.Online, offline.RackName, offline.Version = false, "r2", "3"
	tests := []struct {
		name   string
		boot   *string
		offers []machine.BootImage
		req    machine.DeployRequest
		want   string // version id, or the error's text
	}{
		{"the newest online", nil, []machine.BootImage{image, newer, offline}, machine.DeployRequest{}, newer.VersionID},
		{"none", nil, nil, machine.DeployRequest{OS: "ubuntu", Release: "jammy", Arch: "amd64"}, "ubuntu/jammy/amd64: no rack has an image of it"},
		{"only offline", nil, []machine.BootImage{offline}, machine.DeployRequest{}, "rack r2 has it but is offline"},
		{"not the boot rack", &other, []machine.BootImage{image}, machine.DeployRequest{}, "cannot reach the machine"},
		{"subarch", nil, []machine.BootImage{image}, machine.DeployRequest{Subarch: "hwe"}, "only for subarch generic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := at("ready")
			m.BootRackID = tt.boot
			got, err := machine.ChooseImage(m, tt.offers, tt.req)
			if err != nil {
				if !strings.Contains(err.Error(), tt.want) || rackplane.ErrorCode(err) != rackplane.ECONFLICT {
					t.Fatalf("error %v, want a conflict saying %q", err, tt.want)
				}
				return
			}
			if got.VersionID != tt.want {
				t.Fatalf("chose %s, want %s", got.VersionID, tt.want)
			}
		})
	}
}

// TestDecisionsGoToTheMachinesRack: every boot decision and clear names
// the rack it is for, which is the subject it travels on: the deploy rack
// while the machine deploys, else its boot rack, none when it has neither;
// a machine moved to another rack has its decisions cleared on the old one
// and set on the new one.
func TestDecisionsGoToTheMachinesRack(t *testing.T) {
	const rackA, rackB = "0190f0e0-0000-7000-8000-0000000000a1", "0190f0e0-0000-7000-8000-0000000000b1"
	withRack := func(m rackplane.Machine, boot, deploy string) rackplane.Machine {
		if boot != "" {
			m.BootRackID = &boot
		}
		if deploy != "" {
			m.DeployRackID = &deploy
		}
		return m
	}
	type routed struct{ typ, mac, rack string }
	for _, tt := range []struct {
		name string
		m    rackplane.Machine
		cmd  machine.Command
		want []routed
	}{
		{"no rack", at("ready"), machine.Change{Hostname: ptr("n2")}, []routed{
			{"set", "52:54:00:00:00:01", ""}, {"set", "52:54:00:00:00:02", ""}}},
		{"boot rack", withRack(at("ready"), rackA, ""), machine.Change{Hostname: ptr("n2")}, []routed{
			{"set", "52:54:00:00:00:01", rackA}, {"set", "52:54:00:00:00:02", rackA}}},
		{"deploy goes to the image's rack", at("ready"), machine.Deploy{Image: image}, []routed{
			{"set", "52:54:00:00:00:01", image.RackID}, {"set", "52:54:00:00:00:02", image.RackID}}},
		{"moved", withRack(at("ready"), rackA, ""), machine.Change{BootRackID: ptr(rackB)}, []routed{
			{"cleared", "52:54:00:00:00:01", rackA}, {"cleared", "52:54:00:00:00:02", rackA},
			{"set", "52:54:00:00:00:01", rackB}, {"set", "52:54:00:00:00:02", rackB}}},
		{"adopted", at("ready"), machine.Change{BootRackID: ptr(rackB)}, []routed{
			{"set", "52:54:00:00:00:01", rackB}, {"set", "52:54:00:00:00:02", rackB}}},
		{"moved while deploying stays with the deploy rack", withRack(at("deploying"), rackA, rackA), machine.Change{BootRackID: ptr(rackB)}, []routed{
			{"set", "52:54:00:00:00:01", rackA}, {"set", "52:54:00:00:00:02", rackA}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := machine.Decide(tt.m, tt.cmd, now)
			if err != nil {
				t.Fatal(err)
			}
			var got []routed
			for _, e := range evs {
				switch e.Type {
				case events.TypeBootDecisionSet:
					var d events.BootDecision
					_ = e.DecodeData(&d)
					got = append(got, routed{"set", d.MAC, d.RackID})
				case events.TypeBootDecisionCleared:
					var d events.BootDecisionCleared
					_ = e.DecodeData(&d)
					got = append(got, routed{"cleared", d.MAC, d.RackID})
				default:
					continue
				}
				if want := events.RackOfRegionEvent(e); want != got[len(got)-1].rack {
					t.Errorf("%s travels to rack %q, names %q", e.Type, want, got[len(got)-1].rack)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("decisions %v, want %v", got, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// The rack that has the ephemeral environment serves the commission boot,
// even when a failed deployment left the machine another rack's.
func TestCommissionBootsOnTheEnvironmentsRack(t *testing.T) {
	m := at("failed")
	other := "0190f0e0-0000-7000-8000-0000000000bb"
	m.DeployRackID = &other
	e := env
	e.RackID = "0190f0e0-0000-7000-8000-0000000000cc"
	evs, err := machine.Decide(m, machine.Commission{Environment: e}, now)
	if err != nil {
		t.Fatal(err)
	}
	for mac, d := range decisions(t, evs) {
		if d.RackID != e.RackID || d.Purpose != events.BootPurposeCommission {
			t.Errorf("%s: rack %s purpose %s, want rack %s purpose commission", mac, d.RackID, d.Purpose, e.RackID)
		}
	}
	// Without a rack of its own the environment leaves the machine's.
	evs, err = machine.Decide(m, machine.Commission{Environment: env}, now)
	if err != nil {
		t.Fatal(err)
	}
	for mac, d := range decisions(t, evs) {
		if d.RackID != other {
			t.Errorf("%s: rack %s, want the machine's %s", mac, d.RackID, other)
		}
	}
}

// TestReleaseWithErase: a release with erase boots every MAC into the
// ephemeral environment with the erase purpose, the mode on the command
// line and the erasing event as the operation; the agent's success makes
// the machine ready saying the disks were erased, its failure failed
// saying the erase failed; a bad mode is refused as invalid.
func TestReleaseWithErase(t *testing.T) {
	evs, err := machine.Decide(at(events.MachineDeployed), machine.Release{Erase: events.EraseFull, Environment: env}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 || evs[0].Type != events.TypeMachineErasing {
		t.Fatalf("emits %v", types(evs))
	}
	for _, ev := range evs[1:] {
		var b events.BootDecision
		if err := ev.DecodeData(&b); err != nil {
			t.Fatal(err)
		}
		want := []string{"rackplane.machine=" + id, "rackplane.purpose=erase", "rackplane.erase=full"}
		if b.Purpose != events.BootPurposeErase || b.DeploymentID != evs[0].ID || !slices.Equal(b.Params, want) ||
			b.Kernel != env.VersionID+"/vmlinuz" {
			t.Fatalf("boot decision %+v", b)
		}
	}
	for _, tc := range []struct {
		cmd      machine.Command
		typ, why string
	}{
		{machine.EraseReport{Success: true, Message: "quick erase of 2 disks"}, events.TypeMachineReleased, "the disks were erased: quick erase of 2 disks"},
		{machine.EraseReport{Message: "vda: I/O error"}, events.TypeMachineFailed, "erasing the disks failed: vda: I/O error"},
		{machine.EraseTimedOut{Timeout: 2 * time.Hour}, events.TypeMachineFailed, "erasing the disks failed: the agent did not report within the erase timeout of 2h0m0s"},
		{machine.PowerFailed{Reason: "BMC refused"}, events.TypeMachineFailed, "erasing the disks failed: BMC refused"},
	} {
		evs, err := machine.Decide(at(events.MachineErasing), tc.cmd, now)
		if err != nil {
			t.Fatal(err)
		}
		var ref events.MachineRef
		if err := evs[0].DecodeData(&ref); err != nil {
			t.Fatal(err)
		}
		if evs[0].Type != tc.typ || ref.Reason != tc.why {
			t.Errorf("%T: %s %q, want %s %q", tc.cmd, evs[0].Type, ref.Reason, tc.typ, tc.why)
		}
	}
	_, err = machine.Decide(at(events.MachineDeployed), machine.Release{Erase: "shred", Environment: env}, now)
	if rackplane.ErrorCode(err) != rackplane.EINVALID || !strings.Contains(rackplane.ErrorMessage(err), "erase") {
		t.Fatalf("erase shred: %v", err)
	}
}

// A disk image boots the ephemeral environment of its rack with purpose
// deploy, naming the image and the disk; the agent's report that it is
// written boots the disk, the deployment still in progress.
func TestDeployDiskImage(t *testing.T) {
	m := at(events.MachineReady)
	nics := []events.BootNIC{{MAC: "52:54:00:00:00:01", Name: "enp1s0", Boot: true, Link: events.LinkUp}, {MAC: "52:54:00:00:00:02", Name: "enp2s0", Link: events.LinkDown}}
	evs, err := machine.Decide(m, machine.Deploy{Image: diskImage, Environment: diskEnv, TargetDisk: "vda",
		Preseed: machine.PreseedPin{Name: "cloud", Version: 3}, KernelParams: []string{"quiet"}, NICs: nics}, now)
	if err != nil {
		t.Fatal(err)
	}
	var dep events.Deployment
	if err := evs[0].DecodeData(&dep); err != nil || dep.ImageVersionID != diskImage.VersionID || dep.PreseedName != "cloud" {
		t.Fatalf("deploying %+v, %v", dep, err)
	}
	ds := decisions(t, evs)
	if len(ds) != 2 {
		t.Fatalf("decisions %v", ds)
	}
	for mac, d := range ds {
		if d.Purpose != events.BootPurposeDeploy || d.DiskImage != diskImage.VersionID || d.TargetDisk != "vda" ||
			d.Kernel != env.VersionID+"/vmlinuz" || d.RackID != image.RackID || d.DeploymentID != evs[0].ID ||
			!slices.Contains(d.Params, "rackplane.purpose=deploy") || !slices.Contains(d.Params, "quiet") || d.PreseedURL != "" ||
			!slices.Equal(d.NICs, nics) {
			t.Errorf("%s: %+v", mac, d)
		}
	}
	// The environment must be on the image's rack.
	elsewhere := diskEnv
	elsewhere.RackID, elsewhere.RackName = "0190f0e0-0000-7000-8000-0000000000bb", "r2"
	if _, err := machine.Decide(m, machine.Deploy{Image: diskImage, Environment: elsewhere, TargetDisk: "vda"}, now); rackplane.ErrorCode(err) != rackplane.ECONFLICT {
		t.Errorf("environment on another rack: %v, want a conflict", err)
	}
	if _, err := machine.Decide(m, machine.Deploy{Image: diskImage, Environment: diskEnv}, now); rackplane.ErrorCode(err) != rackplane.EINVALID {
		t.Errorf("no target disk: %v, want invalid", err)
	}

	deploying := at(events.MachineDeploying)
	op := evs[0].ID
	deploying.DeploymentID, deploying.ImageVersionID = &op, diskImage.VersionID
	evs, err = machine.Decide(deploying, machine.DiskWritten{Success: true, NICs: nics}, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Type != events.TypeBootDecisionSet {
			t.Errorf("written emits %s: the machine stays deploying until it phones home", e.Type)
		}
	}
	for mac, d := range decisions(t, evs) {
		if d.Purpose != events.BootPurposeLocal || d.DeploymentID != op || d.DiskImage != diskImage.VersionID || !slices.Equal(d.NICs, nics) {
			t.Errorf("%s after written: %+v, want local naming the deployment, image and NICs", mac, d)
		}
	}
	evs, err = machine.Decide(deploying, machine.DiskWritten{Message: "checksum mismatch"}, now)
	if err != nil || len(evs) != 1 || evs[0].Type != events.TypeMachineFailed {
		t.Fatalf("write failed: %v, %v", types(evs), err)
	}
	var ref events.MachineRef
	if err := evs[0].DecodeData(&ref); err != nil || ref.Reason != "writing the disk image failed: checksum mismatch" {
		t.Errorf("failed %+v", ref)
	}
}

func TestTargetDisk(t *testing.T) {
	m := at(events.MachineReady)
	inv := &events.Inventory{Disks: []events.InventoryDisk{
		{Name: "sda", SizeBytes: 500 << 30, Serial: "S1", ByID: []string{"/dev/disk/by-id/ata-S1"}},
		{Name: "nvme0n1", SizeBytes: 2000 << 30, Serial: "N1", WWID: "eui.0001"},
		{Name: "sdb", SizeBytes: 4000 << 30, Removable: true},
	}}
	for _, tc := range []struct {
		name, want string
		inv        *events.Inventory
		out        string
		code       string
	}{
		{"the largest fixed", "", inv, "nvme0n1", ""},
		{"by name", "sda", inv, "sda", ""},
		{"by /dev name", "/dev/sda", inv, "sda", ""},
		{"by serial", "N1", inv, "nvme0n1", ""},
		{"by wwid", "eui.0001", inv, "nvme0n1", ""},
		{"by by-id path", "/dev/disk/by-id/ata-S1", inv, "sda", ""},
		{"by by-id name", "ata-S1", inv, "sda", ""},
		{"a removable named", "sdb", inv, "sdb", ""},
		{"not there", "vdz", inv, "sda (serial S1), nvme0n1 (serial N1), sdb", rackplane.EINVALID},
		{"never commissioned", "", nil, "commission it first", rackplane.ECONFLICT},
		{"no disks", "", &events.Inventory{}, "commission it first", rackplane.ECONFLICT},
	} {
		got, err := machine.TargetDisk(m, tc.inv, tc.want)
		if tc.code != "" {
			if rackplane.ErrorCode(err) != tc.code || !strings.Contains(rackplane.ErrorMessage(err), tc.out) {
				t.Errorf("%s: %q, %v; want %s saying %q", tc.name, got, err, tc.code, tc.out)
			}
			continue
		}
		if err != nil || got != tc.out {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.out)
		}
	}
}

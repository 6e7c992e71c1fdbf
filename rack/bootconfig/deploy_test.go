package bootconfig_test

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/bootconfig"
)

// A deploy decision runs the agent; the agent's written report turns it
// into local boot at once, still naming the deployment for the metadata
// service; the region's phone-home outcome (local without a deployment)
// ends that.
func TestMetadataDeploymentLifecycle(t *testing.T) {
	const machine, op = "0190f0e0-0000-7000-8000-00000000d001", "0190f0e0-0000-7000-8000-00000000d0d0"
	cache, err := bootconfig.NewCache(bootconfig.CacheConfig{RackID: rackID, DataDir: t.TempDir()}, nil, nil, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	set := func(d events.BootDecision) {
		t.Helper()
		e, err := events.New(events.RegionSource, events.TypeBootDecisionSet, "machine/"+machine, time.Now(), d)
		if err != nil {
			t.Fatal(err)
		}
		if err := cache.Apply(e, 0); err != nil {
			t.Fatal(err)
		}
	}
	deploy := events.BootDecision{MachineID: machine, Hostname: "node1", Purpose: events.BootPurposeDeploy,
		Kernel: "rackplane/amd64/ga/ephemeral/stable/1/vmlinuz", Initrd: "rackplane/amd64/ga/ephemeral/stable/1/initrd.img",
		ImageVer: "rackplane/amd64/ga/ephemeral/stable/1", DeploymentID: op, DiskImage: "ubuntu/amd64/generic/noble/disk/1", TargetDisk: "vda"}
	for _, mac := range []string{"52:54:00:00:00:01", "52:54:00:00:00:02"} {
		d := deploy
		d.MAC = mac
		set(d)
	}
	if d, ok := cache.Agent(machine); !ok || d.Purpose != events.BootPurposeDeploy {
		t.Fatalf("agent boot %+v, %v", d, ok)
	}
	if _, ok := cache.MetadataDeployment(machine); !ok {
		t.Fatal("no disk deployment while the agent writes")
	}
	if got := cache.Written(machine, "0190f0e0-0000-7000-8000-0000000000ff"); len(got) != 0 {
		t.Fatalf("another deployment's written report changed %v", got)
	}
	got := cache.Written(machine, op)
	slices.Sort(got)
	if !slices.Equal(got, []string{"52:54:00:00:00:01", "52:54:00:00:00:02"}) {
		t.Fatalf("written changed %v", got)
	}
	for _, mac := range got {
		d, _ := cache.Cached(mac)
		if d.Purpose != events.BootPurposeLocal || d.Kernel != "" || d.DeploymentID != op {
			t.Errorf("%s after written: %+v", mac, d)
		}
	}
	if _, ok := cache.Agent(machine); ok {
		t.Error("the agent's endpoints still serve the machine after written")
	}
	if d, ok := cache.MetadataDeployment(machine); !ok || d.DeploymentID != op {
		t.Fatal("the metadata service lost the deployment at written")
	}
	for _, d := range events.LocalBoot(machine, "node1", "amd64", got) {
		set(d)
	}
	// An installer's deployment (ubuntu-autoinstall reads its NoCloud
	// seed there) is served too, a commissioning's boot is not.
	other := "0190f0e0-0000-7000-8000-00000000d002"
	for purpose, want := range map[string]bool{events.BootPurposeInstall: true, events.BootPurposeCommission: false} {
		set(events.BootDecision{MAC: "52:54:00:00:00:09", MachineID: other, Purpose: purpose, Kernel: "k", Initrd: "i", DeploymentID: op})
		if _, ok := cache.MetadataDeployment(other); ok != want {
			t.Errorf("a %s boot served by the metadata service: %v, want %v", purpose, ok, want)
		}
	}
	if _, ok := cache.MetadataDeployment(machine); ok {
		t.Error("the deployment is still served after the local boot that ends it")
	}
}

func TestValidateDeployDecision(t *testing.T) {
	ok := events.BootDecision{MAC: "52:54:00:00:00:01", MachineID: "m", Purpose: events.BootPurposeDeploy, Kernel: "k", Initrd: "i",
		DeploymentID: "0190f0e0-0000-7000-8000-00000000d0d0", DiskImage: "u/amd64/g/noble/disk/1", TargetDisk: "vda"}
	if err := bootconfig.ValidateDecision(&ok); err != nil {
		t.Fatalf("a deploy decision: %v", err)
	}
	for name, f := range map[string]func(*events.BootDecision){
		"no disk image":        func(d *events.BootDecision) { d.DiskImage = "" },
		"no target disk":       func(d *events.BootDecision) { d.TargetDisk = "" },
		"no deployment":        func(d *events.BootDecision) { d.DeploymentID = "" },
		"a space in the disk":  func(d *events.BootDecision) { d.TargetDisk = "vda rackplane.x=y" },
		"a newline in the img": func(d *events.BootDecision) { d.DiskImage = "u\nx" },
	} {
		d := ok
		f(&d)
		if err := bootconfig.ValidateDecision(&d); err == nil {
			t.Errorf("%s: taken", name)
		}
	}
	if u := bootconfig.MetadataURL(ok, "http://10.0.0.1:5248/", func(m, d string) string { return "CRED" }); u != "http://10.0.0.1:5248/metadata/m/CRED/" {
		t.Errorf("metadata URL %q", u)
	}
	if !bootconfig.RunsAgent(events.BootPurposeDeploy) || !strings.Contains(bootconfig.AgentURL(ok, "http://r", func(m, d string) string { return "c" }), "/agent/m/c") {
		t.Error("a deploy boot runs no agent")
	}
}

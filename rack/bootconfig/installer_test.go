package bootconfig_test

import (
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/bootconfig"
)

// TestRenderInstallerFamilies: each installer family's command line, in
// every config kind, exactly: the family's parameters, then the
// machine's and the operator's (which come last, so they override), and
// the preseed URL in the family's form with the deployment's credential.
func TestRenderInstallerFamilies(t *testing.T) {
	cred := func(machineID, deployment string) string { return "cred-" + machineID + "-" + deployment }
	r, err := bootconfig.NewRenderer(bootconfig.RenderConfig{HTTPBootURL: "http://10.20.0.2:5248", AgentURL: "http://10.20.0.2:5248/", Credential: cred})
	if err != nil {
		t.Fatal(err)
	}
	base := events.BootDecision{MAC: "52:54:00:12:34:56", MachineID: "m-1", Hostname: "node1", Purpose: events.BootPurposeInstall,
		Kernel: "debian/v1/linux", Initrd: "debian/v1/initrd.gz", Params: []string{"rackplane.machine=m-1", "rackplane.hostname=node1", "priority=high"},
		PreseedURL: "http://10.20.0.2:5248/preseed/m-1", DeploymentID: "dep-1"}
	with := func(installer string, edit func(*events.BootDecision)) events.BootDecision {
		d := base
		d.Installer = installer
		if edit != nil {
			edit(&d)
		}
		return d
	}
	const (
		preseed  = "http://10.20.0.2:5248/preseed/m-1/cred-m-1-dep-1"
		metadata = "http://10.20.0.2:5248/metadata/m-1/cred-m-1-dep-1/"
		machine  = "rackplane.machine=m-1 rackplane.hostname=node1 priority=high"
		bootif   = " BOOTIF=01-52-54-00-12-34-56"
	)
	debian := "auto=true priority=critical locale=en_US.UTF-8 keymap=us hostname=node1 netcfg/get_hostname=node1 " +
		"netcfg/choose_interface=52:54:00:12:34:56 url=" + preseed
	custom := machine + " url=" + preseed
	tests := []struct {
		name string
		d    events.BootDecision
		// family is the family's parameters ("": it renders as custom),
		// before the machine's; GRUB and iPXE configs add BOOTIF to them.
		family string
	}{
		{"custom", with(events.InstallerCustom, nil), ""},
		{"none", with("", nil), ""},
		{"agent renders as custom", with(events.InstallerAgent, nil), ""},
		{"a family this rack does not know renders as custom", with("plan9-installer", nil), ""},
		{"debian-installer", with(events.InstallerDebian, nil), debian},
		{"debian-installer without a preseed", with(events.InstallerDebian, func(d *events.BootDecision) { d.PreseedURL = "" }),
			"auto=true priority=critical locale=en_US.UTF-8 keymap=us hostname=node1 netcfg/get_hostname=node1 netcfg/choose_interface=52:54:00:12:34:56"},
		{"debian-installer: a host name that is not one word stays off", with(events.InstallerDebian, func(d *events.BootDecision) { d.Hostname = "a b" }),
			"auto=true priority=critical locale=en_US.UTF-8 keymap=us netcfg/choose_interface=52:54:00:12:34:56 url=" + preseed},
		{"ubuntu-autoinstall", with(events.InstallerAutoinstall, nil), "autoinstall ds=nocloud-net;s=" + metadata + " ip=dhcp"},
		{"ubuntu-autoinstall without a deployment has no seed", with(events.InstallerAutoinstall, func(d *events.BootDecision) { d.DeploymentID = "" }),
			"autoinstall ip=dhcp"},
		{"anaconda", with(events.InstallerAnaconda, nil), "inst.ks=" + preseed + " ip=dhcp"},
		{"a family on an ephemeral boot is not an install", with(events.InstallerDebian, func(d *events.BootDecision) { d.Purpose = events.BootPurposeRescue }), ""},
	}
	for _, tt := range tests {
		for _, kind := range []bootconfig.Kind{bootconfig.KindPXELinux, bootconfig.KindGRUB, bootconfig.KindIPXE} {
			want := custom
			if tt.family != "" {
				want = tt.family
				if kind != bootconfig.KindPXELinux {
					want += bootif
				}
				want += " " + machine
			}
			if tt.d.DeploymentID == "" && tt.family == "" {
				want = machine + " url=" + tt.d.PreseedURL
			}
			out, err := r.Render(kind, tt.d)
			if err != nil {
				t.Fatal(err)
			}
			if got := cmdlineOf(t, kind, string(out)); got != want {
				t.Errorf("%s, %s:\n got %s\nwant %s\n%s", tt.name, kind, got, want, out)
			}
		}
	}
}

// cmdlineOf reads the kernel command line back from a config as its
// loader would: pxelinux's APPEND, iPXE's kernel line (without the
// initrd= iPXE needs), GRUB's linux line with its quotes removed.
func cmdlineOf(t *testing.T, kind bootconfig.Kind, cfg string) string {
	t.Helper()
	for _, l := range strings.Split(cfg, "\n") {
		l = strings.TrimSpace(l)
		switch kind {
		case bootconfig.KindPXELinux:
			if v, ok := strings.CutPrefix(l, "APPEND "); ok {
				return v
			}
		case bootconfig.KindIPXE:
			if v, ok := strings.CutPrefix(l, "kernel "); ok {
				words := strings.Fields(v)
				return strings.Join(words[1:len(words)-1], " ")
			}
		case bootconfig.KindGRUB:
			if v, ok := strings.CutPrefix(l, "linux "); ok {
				words := grubWords(t, v)
				return strings.Join(words[1:], " ")
			}
		}
	}
	t.Fatalf("no command line in the %s config:\n%s", kind, cfg)
	return ""
}

// grubWords splits a line of GRUB's script into its words as GRUB does
// for single-quoted words, the only form the rack writes ('\” is a
// quote inside one).
func grubWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	in, started := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case in && c == '\'':
			in = false
		case in:
			w.WriteByte(c)
		case c == '\'':
			in, started = true, true
		case c == '\\' && i+1 < len(line):
			i++
			w.WriteByte(line[i])
			started = true
		case c == ' ':
			if started {
				words = append(words, w.String())
				w.Reset()
				started = false
			}
		case c == ';':
			t.Fatalf("an unquoted ; in GRUB line %q", line)
		default:
			w.WriteByte(c)
			started = true
		}
	}
	if in {
		t.Fatalf("an open quote in GRUB line %q", line)
	}
	if started {
		words = append(words, w.String())
	}
	return words
}

// TestMetadataURL: the one definition of the metadata service's URL the
// rack's kernel command line and its metadata service share.
func TestMetadataURL(t *testing.T) {
	cred := func(m, d string) string { return m + "." + d }
	d := events.BootDecision{MachineID: "m-1", DeploymentID: "dep-1"}
	if got, want := bootconfig.MetadataURL(d, "http://r:5248/", cred), "http://r:5248/metadata/m-1/m-1.dep-1/"; got != want {
		t.Errorf("MetadataURL = %q, want %q", got, want)
	}
	for _, tt := range []struct {
		d    events.BootDecision
		base string
		cred func(string, string) string
	}{{d, "", cred}, {d, "http://r", nil}, {events.BootDecision{MachineID: "m-1"}, "http://r", cred}, {events.BootDecision{DeploymentID: "d"}, "http://r", cred}} {
		if got := bootconfig.MetadataURL(tt.d, tt.base, tt.cred); got != "" {
			t.Errorf("MetadataURL(%+v, %q) = %q, want none", tt.d, tt.base, got)
		}
	}
}

// TestDecisionSchemaInstaller: the installer families travel in
// boot_decision_set; anything else is refused on the wire.
func TestDecisionSchemaInstaller(t *testing.T) {
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		installer string
		ok        bool
	}{{events.InstallerDebian, true}, {events.InstallerAutoinstall, true}, {events.InstallerAnaconda, true}, {events.InstallerAgent, true},
		{events.InstallerCustom, true}, {"", true}, {"debian installer", false}, {"windows", false}} {
		d := events.BootDecision{MAC: "52:54:00:12:34:56", Purpose: events.BootPurposeInstall, Kernel: "k", Initrd: "i", Installer: tt.installer}
		e, err := events.New(events.RegionSource, events.TypeBootDecisionSet, "machine/m-1", time.Now(), d)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Validate(e); (err == nil) != tt.ok {
			t.Errorf("installer %q: %v, want ok=%v", tt.installer, err, tt.ok)
		}
	}
}

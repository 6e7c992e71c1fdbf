package bootconfig_test

import (
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/bootconfig"
)

func TestValidateDecisionRefusesInjection(t *testing.T) {
	base := events.BootDecision{MAC: "52:54:00:12:34:56", Purpose: events.BootPurposeInstall, Kernel: "k", Initrd: "i"}
	tests := []struct {
		name string
		edit func(*events.BootDecision)
		ok   bool
	}{
		{"valid", func(*events.BootDecision) {}, true},
		{"local without kernel", func(d *events.BootDecision) { d.Purpose, d.Kernel, d.Initrd = events.BootPurposeLocal, "", "" }, true},
		{"install without kernel", func(d *events.BootDecision) { d.Kernel = "" }, false},
		{"unknown purpose", func(d *events.BootDecision) { d.Purpose = "reboot-twice" }, false},
		{"bad mac", func(d *events.BootDecision) { d.MAC = "nope" }, false},
		{"newline in param", func(d *events.BootDecision) { d.Params = []string{"a\nLABEL evil"} }, false},
		{"space in kernel", func(d *events.BootDecision) { d.Kernel = "k evil" }, false},
		{"newline in preseed", func(d *events.BootDecision) { d.PreseedURL = "http://x\nboot" }, false},
		{"newline in hostname", func(d *events.BootDecision) { d.Hostname = "h\n" }, false},
	}
	for _, tt := range tests {
		d := base
		tt.edit(&d)
		if err := bootconfig.ValidateDecision(&d); (err == nil) != tt.ok {
			t.Errorf("%s: err %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestRender(t *testing.T) {
	d := events.BootDecision{MAC: "52:54:00:12:34:56", MachineID: "m-1", Purpose: events.BootPurposeInstall,
		Kernel: "images/debian/v1/linux", Initrd: "images/debian/v1/initrd", Params: []string{"console=ttyS0", "quiet"}, PreseedURL: "http://r/p"}
	local := events.BootDecision{MAC: d.MAC, Purpose: events.BootPurposeLocal}
	tests := []struct {
		cfg  bootconfig.RenderConfig
		kind bootconfig.Kind
		d    events.BootDecision
		want []string
	}{
		{bootconfig.RenderConfig{}, bootconfig.KindPXELinux, d, []string{"DEFAULT install", "KERNEL images/debian/v1/linux", "INITRD images/debian/v1/initrd", "APPEND console=ttyS0 quiet url=http://r/p", "IPAPPEND 2"}},
		{bootconfig.RenderConfig{}, bootconfig.KindPXELinux, local, []string{"DEFAULT local", "LOCALBOOT 0"}},
		{bootconfig.RenderConfig{PreseedParam: "ds"}, bootconfig.KindGRUB, d, []string{"linux '/images/debian/v1/linux' 'console=ttyS0' 'quiet' 'ds=http://r/p'\n", "initrd '/images/debian/v1/initrd'\n"}},
		{bootconfig.RenderConfig{}, bootconfig.KindGRUB, local, []string{"exit"}},
		// With an HTTP server: kernel and initrd over HTTP, TFTP if GRUB
		// has no http module (Secure Boot, Debian's signed image).
		{bootconfig.RenderConfig{HTTPBootURL: "http://10.20.0.2:5248/"}, bootconfig.KindGRUB, d, []string{
			"if insmod http; then",
			"linux '(http,10.20.0.2:5248)/images/debian/v1/linux' 'console=ttyS0' 'quiet' 'url=http://r/p'; then",
			"initrd '(http,10.20.0.2:5248)/images/debian/v1/initrd'; then",
			"if [ -z \"$rackplane_loaded\" ]; then\n    linux '/images/debian/v1/linux' 'console=ttyS0'",
			"    initrd '/images/debian/v1/initrd'\n"}},
		{bootconfig.RenderConfig{HTTPBootURL: "http://rack.example/boot"}, bootconfig.KindGRUB, d, []string{"linux '(http,rack.example)/boot/images/debian/v1/linux'"}},
		{bootconfig.RenderConfig{HTTPBootURL: "http://10.20.0.2:5248"}, bootconfig.KindGRUB, local, []string{"menuentry 'local' {\n  exit\n}"}},
		// A parameter cannot add GRUB commands: quoted, quotes escaped.
		{bootconfig.RenderConfig{}, bootconfig.KindGRUB, withParams(d, "a;reboot", "b='$x'"), []string{`'a;reboot' 'b='\''$x'\'''`}},
		{bootconfig.RenderConfig{}, bootconfig.KindGRUBChain, local, []string{"if [ -n \"$net_default_mac\" ]; then\n  configfile /grub/grub.cfg-${net_default_mac}\nfi\nexit\n"}},
		{bootconfig.RenderConfig{}, bootconfig.KindIPXE, d, []string{"#!ipxe\n", "kernel /images/debian/v1/linux console=ttyS0", " initrd=initrd\n", "initrd /images/debian/v1/initrd", "boot"}},
		{bootconfig.RenderConfig{HTTPBootURL: "http://10.0.2.2:5248/"}, bootconfig.KindIPXE, d, []string{"kernel http://10.0.2.2:5248/images/debian/v1/linux", "initrd http://10.0.2.2:5248/images/debian/v1/initrd"}},
		{bootconfig.RenderConfig{}, bootconfig.KindIPXE, local, []string{"exit"}},
		{bootconfig.RenderConfig{}, bootconfig.KindIPXEChain, local, []string{"chain /ipxe/${mac:hexhyp}.ipxe"}},
		{bootconfig.RenderConfig{}, bootconfig.KindGRUBChain, d, []string{"set timeout=0\n", "configfile /grub/grub.cfg-${net_default_mac}\n"}},
	}
	for _, tt := range tests {
		r, err := bootconfig.NewRenderer(tt.cfg)
		if err != nil {
			t.Fatal(err)
		}
		b, err := r.Render(tt.kind, tt.d)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tt.want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s %s lacks %q:\n%s", tt.kind, tt.d.Purpose, w, b)
			}
		}
	}
}

func withParams(d events.BootDecision, params ...string) events.BootDecision {
	d.Params = params
	return d
}

// TestRenderGRUBWithoutHTTP: GRUB cannot use an https URL (no TLS) or no
// URL; it loads over TFTP only.
func TestRenderGRUBWithoutHTTP(t *testing.T) {
	d := events.BootDecision{MAC: "52:54:00:12:34:56", Purpose: events.BootPurposeInstall, Kernel: "k", Initrd: "i"}
	for _, u := range []string{"", "https://10.0.0.1:5248", "http://u:p@10.0.0.1"} {
		r, err := bootconfig.NewRenderer(bootconfig.RenderConfig{HTTPBootURL: u})
		if err != nil {
			t.Fatal(err)
		}
		b, err := r.Render(bootconfig.KindGRUB, d)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "http") || !strings.Contains(string(b), "linux '/k'") {
			t.Errorf("HTTPBootURL %q:\n%s", u, b)
		}
	}
}

func TestNewRendererValidates(t *testing.T) {
	bad := []bootconfig.RenderConfig{
		{PreseedParam: "a b"},
		{HTTPBootURL: "http://x y"},
		{Enlist: &events.BootDecision{Purpose: events.BootPurposeEnlist}},
		{Enlist: &events.BootDecision{Purpose: events.BootPurposeInstall, Kernel: "k", Initrd: "i"}},
	}
	for _, cfg := range bad {
		if _, err := bootconfig.NewRenderer(cfg); err == nil {
			t.Errorf("NewRenderer(%+v) accepted", cfg)
		}
	}
}

// TestDecisionSchema checks that the region's boot decision events, as the
// rack expects them, validate against their schema files, and that the
// schema refuses what ValidateDecision refuses about the wire form.
func TestDecisionSchema(t *testing.T) {
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	good := events.BootDecision{MAC: "52:54:00:12:34:56", MachineID: "m-1", Hostname: "node1", Purpose: events.BootPurposeInstall, Arch: "amd64",
		Kernel: "images/debian/v1/linux", Initrd: "images/debian/v1/initrd", ImageVer: "debian/v1", Params: []string{"console=ttyS0", "a=b c"}, PreseedURL: "http://r/p"}
	tests := []struct {
		typ  string
		data any
		ok   bool
	}{
		{events.TypeBootDecisionSet, good, true},
		{events.TypeBootDecisionSet, events.BootDecision{MAC: "52:54:00:12:34:56", Purpose: events.BootPurposeLocal}, true},
		{events.TypeBootDecisionSet, events.BootDecision{MAC: "52-54-00-12-34-56", Purpose: events.BootPurposeLocal}, false},
		{events.TypeBootDecisionSet, events.BootDecision{MAC: "52:54:00:12:34:56", Purpose: "reboot-twice"}, false},
		{events.TypeBootDecisionSet, events.BootDecision{MAC: "52:54:00:12:34:56", Purpose: events.BootPurposeLocal, Params: []string{"x\ny"}}, false},
		{events.TypeBootDecisionSet, events.BootDecision{MAC: "52:54:00:12:34:56", Purpose: events.BootPurposeLocal, Kernel: "a b"}, false},
		{events.TypeBootDecisionCleared, events.BootDecisionCleared{MAC: "52:54:00:12:34:56", MachineID: "m-1", Reason: "deleted"}, true},
		{events.TypeBootDecisionCleared, events.BootDecisionCleared{MAC: "AA:54:00:12:34:56"}, false},
	}
	for i, tt := range tests {
		e, err := events.New(events.RegionSource, tt.typ, "machine/m-1", time.Now(), tt.data)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Validate(e); (err == nil) != tt.ok {
			t.Errorf("case %d (%s): validate: %v, want ok=%v", i, events.Name(tt.typ), err, tt.ok)
		}
	}
}

// TestRenderAgentURL: a commission or erase boot's command line carries the URL
// its agent reports under, with the credential of its operation; other
// purposes, and decisions without an operation, carry none.
func TestRenderAgentURL(t *testing.T) {
	cred := func(machineID, op string) string { return "cred-" + machineID + "-" + op }
	cfg := bootconfig.RenderConfig{AgentURL: "http://10.20.0.2:5248/", Credential: cred}
	commission := events.BootDecision{MAC: "52:54:00:12:34:56", MachineID: "m-1", Purpose: events.BootPurposeCommission,
		Kernel: "e/v1/linux", Initrd: "e/v1/initrd", Params: []string{"rackplane.machine=m-1"}, DeploymentID: "op-1"}
	rescue := commission
	rescue.Purpose = events.BootPurposeRescue
	erase := commission
	erase.Purpose = events.BootPurposeErase
	noOp := commission
	noOp.DeploymentID = ""
	r, err := bootconfig.NewRenderer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const want = "rackplane.agent=http://10.20.0.2:5248/agent/m-1/cred-m-1-op-1"
	for _, tt := range []struct {
		name string
		d    events.BootDecision
		has  bool
	}{{"commission", commission, true}, {"erase", erase, true}, {"rescue", rescue, false}, {"no operation", noOp, false}} {
		for _, kind := range []bootconfig.Kind{bootconfig.KindPXELinux, bootconfig.KindGRUB, bootconfig.KindIPXE} {
			out, err := r.Render(kind, tt.d)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(string(out), want); got != tt.has {
				t.Errorf("%s %s: carries the agent URL %v, want %v:\n%s", tt.name, kind, got, tt.has, out)
			}
			if !tt.has && strings.Contains(string(out), "rackplane.agent=") {
				t.Errorf("%s %s: an agent URL:\n%s", tt.name, kind, out)
			}
		}
	}
	if _, err := bootconfig.NewRenderer(bootconfig.RenderConfig{AgentURL: "http://x/ y"}); err == nil {
		t.Error("an AgentURL with a space was taken")
	}
}

// TestRenderUnknownWait: iPXE on a machine the region does not know is
// told to ask again after UnknownStep when it is to wait, and to boot
// locally otherwise; other loaders' configs boot locally either way.
func TestRenderUnknownWait(t *testing.T) {
	tests := []struct {
		name string
		kind bootconfig.Kind
		wait bool
		want []string // in the config, in order
		not  []string
	}{
		{"iPXE, waiting", bootconfig.KindIPXE, true,
			[]string{"not known to the region yet", "sleep 5", "chain /ipxe/${mac:hexhyp}.ipxe ||", "exit"}, nil},
		{"iPXE, not waiting", bootconfig.KindIPXE, false, []string{"exit"}, []string{"sleep", "chain"}},
		{"GRUB, waiting", bootconfig.KindGRUB, true, []string{"exit"}, []string{"sleep", "chain"}},
		{"pxelinux, waiting", bootconfig.KindPXELinux, true, []string{"LOCALBOOT"}, []string{"sleep", "chain"}},
	}
	r, err := bootconfig.NewRenderer(bootconfig.RenderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, b, err := r.RenderUnknown(tt.kind, "52:54:00:00:00:01", tt.wait)
			if err != nil {
				t.Fatal(err)
			}
			if d.Purpose != events.BootPurposeLocal || d.MachineID != "" {
				t.Fatalf("decision %+v, want an unknown machine's local boot", d)
			}
			rest := string(b)
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("config lacks %q (in order):\n%s", w, b)
				}
				rest = rest[i+len(w):]
			}
			for _, n := range tt.not {
				if strings.Contains(string(b), n) {
					t.Fatalf("config has %q:\n%s", n, b)
				}
			}
		})
	}
}

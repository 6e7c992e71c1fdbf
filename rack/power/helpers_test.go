package power

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/scriptrun/scriptruntest"
	"github.com/rackplane/rackplane/schema"
)

const testRack = "0190a3c2-3333-7000-8000-000000000001"

// collector is the Publisher of tests: it keeps every event, checking it
// against its schema as it arrives.
type collector struct {
	t  testing.TB
	v  *events.Validator
	mu sync.Mutex
	ev []events.Event
}

func (c *collector) Publish(e events.Event) {
	if err := c.v.Validate(e); err != nil {
		c.t.Errorf("event %s does not validate: %v\n%s", e.Type, err, e.Data)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ev = append(c.ev, e)
}

// completed returns the power_action_completed events so far.
func (c *collector) completed(t testing.TB) []events.PowerActionCompleted {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []events.PowerActionCompleted
	for _, e := range c.ev {
		var d events.PowerActionCompleted
		if e.Type != events.TypePowerActionCompleted {
			continue
		}
		if err := e.DecodeData(&d); err != nil {
			t.Fatal(err)
		}
		if e.Subject != events.MachineStreamName(d.MachineID) || e.Source != events.RackSource(testRack) {
			t.Errorf("event subject %q source %q for machine %s", e.Subject, e.Source, d.MachineID)
		}
		out = append(out, d)
	}
	return out
}

// raw returns every event as it goes on the wire.
func (c *collector) raw(t testing.TB) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b bytes.Buffer
	for _, e := range c.ev {
		enc, err := events.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(append(enc, '\n'))
	}
	return b.Bytes()
}

// testManager is a Manager with its events and its log (JSON, debug).
type testManager struct {
	*Manager
	pub *collector
	// log is read once the actions are done: slog's handler serialises
	// the writes, Do returns after them.
	log *bytes.Buffer
}

// newManager makes a manager of cfg over DefaultConfig's zero fields;
// the script drivers are testdata/drivers' unless cfg names others.
func newManager(t testing.TB, cfg Config) testManager {
	t.Helper()
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultConfig()
	if cfg.SearchPath == nil {
		abs, err := filepath.Abs("testdata/drivers")
		if err != nil {
			t.Fatal(err)
		}
		cfg.SearchPath = []string{abs}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = def.Concurrency
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = def.PollInterval
	}
	pub := &collector{t: t, v: v}
	log := &bytes.Buffer{}
	cfg.RackID, cfg.Events = testRack, pub
	cfg.Logger = slog.New(slog.NewJSONHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("new manager: %v", err)
	}
	return testManager{Manager: m, pub: pub, log: log}
}

// checkReply checks a reply against the reply schema.
func checkReply(t testing.TB, r Reply) {
	t.Helper()
	set, err := schema.Default()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(r)
	if err := set.ValidateJSON(events.PowerRPCSchema(events.PartReply), b); err != nil {
		t.Errorf("reply breaks its schema: %v\n%s", err, b)
	}
}

// needTool fails t, saying what to install, when a tool is missing. The
// tests of real BMC tools and VMs are not in the quick set (-short), as
// the other tests of the packages of .ci/packages.
func needTool(t testing.TB, tool, pkg string) string {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs %s (%s, in .ci/packages): skipped with -short", tool, pkg)
	}
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("this test runs %s: install the Debian package %s (%v)", tool, pkg, err)
	}
	return p
}

// bmcFile makes a filebmc BMC in dir holding state, and returns its
// address.
func bmcFile(t testing.TB, dir, name, state string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	scriptruntest.WriteFile(t, p, state+"\n", 0o644)
	return p
}

func readTrim(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// actionCase is one action of a driver's table test: what it is asked,
// the reply it must get, and what must hold after it.
type actionCase struct {
	name    string
	action  events.PowerAction
	device  string
	params  events.PowerParameters
	state   string
	outcome string
	errHas  string
	check   func(t *testing.T)
}

// runCases runs the cases in order on one machine through driver; no
// reply's error may show any of secrets; after is called after each case
// that succeeded.
func runCases(t *testing.T, m testManager, driver string, cases []actionCase, secrets []string, after func(t *testing.T, tc actionCase, r Reply)) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := m.Do(context.Background(), Request{MachineID: "m-" + driver, Driver: driver, Action: tc.action, BootDevice: tc.device, Parameters: tc.params})
			checkReply(t, r)
			if r.State != tc.state || r.Outcome != tc.outcome || r.OK != (tc.outcome == events.PowerOutcomeOK) {
				t.Fatalf("reply %+v, want state %s outcome %s", r, tc.state, tc.outcome)
			}
			if !strings.Contains(r.Error, tc.errHas) {
				t.Errorf("error %q lacks %q", r.Error, tc.errHas)
			}
			for _, s := range secrets {
				if strings.Contains(r.Error, s) {
					t.Errorf("error shows a password: %s", r.Error)
				}
			}
			if after != nil && r.OK {
				after(t, tc, r)
			}
			if tc.check != nil {
				tc.check(t)
			}
		})
	}
}

// startProcess starts a peer (a simulator, a VM) in a process group of
// its own in dir, killed with the group when the test ends or the test
// binary dies. exited is closed when it has exited; out has what it
// printed.
func startProcess(t *testing.T, dir string, argv ...string) (exited chan struct{}, out *strings.Builder) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	out = &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", argv[0], err)
	}
	exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	return exited, out
}

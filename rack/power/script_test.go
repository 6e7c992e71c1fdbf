package power

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/scriptrun"
	"github.com/rackplane/rackplane/internal/scriptrun/scriptruntest"
)

// TestScriptDriver runs every action through the testdata drivers, in
// order, on one BMC of each, and checks the reply, the event and what the
// scripts did.
func TestScriptDriver(t *testing.T) {
	m := newManager(t, Config{})
	dir := t.TempDir()
	file := bmcFile(t, dir, "file", "off")
	plain := bmcFile(t, dir, "plain", "off")
	locked := bmcFile(t, dir, "locked", "off")
	scriptruntest.WriteFile(t, locked+".password", "right-one\n", 0o600)
	odd := bmcFile(t, dir, "odd", "standby")
	req := func(driver, addr string, a events.PowerAction) Request {
		return Request{MachineID: "m-" + filepath.Base(addr), Driver: driver, Action: a,
			Parameters: events.PowerParameters{Address: addr, Username: "admin", Password: "right-one"}}
	}
	steps := []struct {
		name    string
		req     Request
		state   string
		outcome string
		errHas  []string
		check   func(t *testing.T)
	}{
		{name: "status off", req: req("filebmc", file, events.PowerStatus), state: "off", outcome: "ok"},
		{name: "on", req: req("filebmc", file, events.PowerOn), state: "on", outcome: "ok",
			check: func(t *testing.T) { want(t, readTrim(t, file), "on") }},
		{name: "status on", req: req("filebmc", file, events.PowerStatus), state: "on", outcome: "ok"},
		{name: "off", req: req("filebmc", file, events.PowerOff), state: "off", outcome: "ok",
			check: func(t *testing.T) { want(t, readTrim(t, file), "off") }},
		{name: "cycle by its script", req: req("filebmc", file, events.PowerCycle), state: "on", outcome: "ok",
			check: func(t *testing.T) { want(t, lastLine(t, file+".log"), "end cycle") }},
		{name: "set boot", req: func() Request {
			r := req("filebmc", file, events.PowerSetBoot)
			r.BootDevice = events.BootDevicePXE
			return r
		}(), state: "unknown", outcome: "ok", check: func(t *testing.T) { want(t, readTrim(t, file+".boot"), "pxe") }},
		{name: "soft off", req: req("filebmc", file, events.PowerSoftOff), state: "unknown", outcome: "ok",
			check: func(t *testing.T) { want(t, readTrim(t, file), "off") }},
		{name: "status after a blank line", req: req("plainbmc", plain, events.PowerStatus), state: "off", outcome: "ok"},
		{name: "cycle without its script is off then on", req: req("plainbmc", plain, events.PowerCycle), state: "on", outcome: "ok",
			check: func(t *testing.T) {
				want(t, strings.Join(lines(t, plain+".log"), ","), "cycle,cycle")
				want(t, readTrim(t, plain), "ON")
			}},
		{name: "status in capitals", req: req("plainbmc", plain, events.PowerStatus), state: "on", outcome: "ok"},
		{name: "no set-boot script", req: func() Request {
			r := req("plainbmc", plain, events.PowerSetBoot)
			r.BootDevice = events.BootDeviceDisk
			return r
		}(), state: "unknown", outcome: "unsupported", errHas: []string{"plainbmc does not offer set_boot"}},
		{name: "no soft-off script", req: req("plainbmc", plain, events.PowerSoftOff), state: "unknown", outcome: "unsupported"},
		{name: "status not on or off", req: req("plainbmc", odd, events.PowerStatus), state: "unknown", outcome: "failed",
			errHas: []string{`power-status: printed "standby", want on or off`}},
		{name: "wrong password", req: func() Request {
			r := req("filebmc", locked, events.PowerOn)
			r.Parameters.Password = "wrong-one"
			return r
		}(), state: "unknown", outcome: "auth_failed",
			errHas: []string{"power-on failed: exit status 3", "refused user admin with password " + scriptrun.Mask}},
		{name: "right password", req: req("filebmc", locked, events.PowerOn), state: "on", outcome: "ok"},
		{name: "broken driver", req: req("broken", file, events.PowerOn), state: "unknown", outcome: "unsupported",
			errHas: []string{"power driver broken is not usable", "power-status is missing", "power-off is not executable"}},
		{name: "unknown driver", req: req("nosuch", file, events.PowerOn), state: "unknown", outcome: "unsupported",
			errHas: []string{`no power driver "nosuch"`}},
		{name: "set_boot without device", req: req("filebmc", file, events.PowerSetBoot), state: "unknown", outcome: "invalid"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			before := len(m.pub.completed(t))
			r := m.Do(context.Background(), s.req)
			checkReply(t, r)
			if r.State != s.state || r.Outcome != s.outcome || r.OK != (s.outcome == "ok") || r.MachineID != s.req.MachineID {
				t.Errorf("reply %+v, want state %s outcome %s", r, s.state, s.outcome)
			}
			for _, w := range s.errHas {
				if !strings.Contains(r.Error, w) {
					t.Errorf("error lacks %q:\n%s", w, r.Error)
				}
			}
			if s.outcome == "ok" && r.Error != "" {
				t.Errorf("error on success: %s", r.Error)
			}
			evs := m.pub.completed(t)
			if len(evs) != before+1 {
				t.Fatalf("%d events, want one more than %d", len(evs), before)
			}
			ev := evs[len(evs)-1]
			if ev.MachineID != r.MachineID || ev.Driver != s.req.Driver || ev.Action != r.Action || ev.State != r.State ||
				ev.OK != r.OK || ev.Outcome != r.Outcome || ev.Error != r.Error || ev.DurationMS != r.DurationMS ||
				ev.BootDevice != s.req.BootDevice {
				t.Errorf("event %+v does not match reply %+v", ev, r)
			}
			if s.check != nil {
				s.check(t)
			}
		})
	}
}

// TestScriptEnvironment: a script gets exactly the POWER_ variables, a
// safe PATH and its run marker, and runs in its directory.
func TestScriptEnvironment(t *testing.T) {
	search, out := t.TempDir(), t.TempDir()
	dir := filepath.Join(search, "envbmc")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dump := "#!/bin/sh\nenv | grep -v '^PWD=' | grep -v '^SHLVL=' | sort > \"$POWER_ADDRESS/$POWER_ACTION.env\"\npwd > \"$POWER_ADDRESS/$POWER_ACTION.pwd\"\n"
	for _, s := range []string{"power-on", "power-off", "set-boot"} {
		scriptruntest.WriteFile(t, filepath.Join(dir, s), dump, 0o755)
	}
	scriptruntest.WriteFile(t, filepath.Join(dir, "power-status"), "#!/bin/sh\necho on\n", 0o755)
	m := newManager(t, Config{Settings: Settings{SearchPath: []string{search}}})
	p := events.PowerParameters{Address: out, Port: 623, Username: "admin", Password: "pa ss $(rm -rf /)",
		Extra: map[string]string{"outlet": "7", "pdu_host": "pdu-3.example"}}
	for _, tc := range []struct {
		action events.PowerAction
		device string
		extra  []string
	}{
		{events.PowerOn, "", nil},
		{events.PowerSetBoot, events.BootDevicePXE, []string{"POWER_BOOT_DEVICE=pxe"}},
	} {
		r := m.Do(context.Background(), Request{MachineID: "m-7", Driver: "envbmc", Action: tc.action, BootDevice: tc.device, Parameters: p})
		if !r.OK {
			t.Fatalf("%s: %+v", tc.action, r)
		}
		got := lines(t, filepath.Join(out, string(tc.action)+".env"))
		got = slices.DeleteFunc(got, func(l string) bool {
			v, ok := strings.CutPrefix(l, RunMarker+"=")
			if ok && len(v) != 16 {
				t.Errorf("marker %q", l)
			}
			return ok
		})
		w := append([]string{
			"PATH=" + scriptrun.SafePath, "POWER_ACTION=" + string(tc.action), "POWER_ADDRESS=" + out,
			"POWER_EXTRA_OUTLET=7", "POWER_EXTRA_PDU_HOST=pdu-3.example", "POWER_MACHINE_ID=m-7",
			"POWER_PASSWORD=pa ss $(rm -rf /)", "POWER_PORT=623", "POWER_USER=admin",
		}, tc.extra...)
		slices.Sort(w)
		if !slices.Equal(got, w) {
			t.Errorf("%s environment:\n%s\nwant:\n%s", tc.action, strings.Join(got, "\n"), strings.Join(w, "\n"))
		}
		want(t, readTrim(t, filepath.Join(out, string(tc.action)+".pwd")), dir)
	}
}

// TestHangingBMCHoldsUpNoOther: of 50 machines polled at once through 8
// slots, one BMC never answers. The other 49 all answer, before the
// hanging one's timeout; that one fails with timeout, in about the
// timeout, with what its script said; and nothing its script started
// is left.
func TestHangingBMCHoldsUpNoOther(t *testing.T) {
	const n, timeout = 50, 3 * time.Second
	m := newManager(t, Config{Settings: Settings{Concurrency: 8, Timeout: timeout}})
	dir := t.TempDir()
	type result struct {
		r   Reply
		end time.Time
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		state := "on"
		if i == 0 {
			state = "hang"
		}
		addr := bmcFile(t, dir, fmt.Sprintf("bmc%02d", i), state)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := m.Do(context.Background(), Request{MachineID: fmt.Sprintf("m%02d", i), Driver: "filebmc", Action: events.PowerStatus,
				Parameters: events.PowerParameters{Address: addr}})
			results[i] = result{r, time.Now()}
		}()
	}
	wg.Wait()
	hung := results[0]
	if hung.r.Outcome != events.PowerOutcomeTimeout || !strings.Contains(hung.r.Error, "did not finish within 3s") ||
		!strings.Contains(hung.r.Error, "is not answering") {
		t.Errorf("the hanging BMC: %+v", hung.r)
	}
	if took := hung.end.Sub(start); took < timeout || took > timeout+5*time.Second {
		t.Errorf("the hanging BMC took %s, timeout %s", took, timeout)
	}
	var last time.Time
	for i, res := range results[1:] {
		if !res.r.OK || res.r.State != events.PowerStateOn {
			t.Errorf("machine %d: %+v", i+1, res.r)
		}
		if res.end.After(last) {
			last = res.end
		}
	}
	if !last.Before(hung.end) {
		t.Errorf("the others finished %s after start, the hanging one %s: it held them up", last.Sub(start), hung.end.Sub(start))
	}
	t.Logf("49 machines answered in %s; the hanging one timed out after %s", last.Sub(start).Round(time.Millisecond), hung.end.Sub(start).Round(time.Millisecond))
	pid, err := strconv.Atoi(readTrim(t, filepath.Join(dir, "bmc00.child")))
	if err != nil {
		t.Fatal(err)
	}
	scriptruntest.Eventually(t, "the hanging script's child to be killed", func() bool { return scriptruntest.ProcessGone(pid) })
	if got := len(m.pub.completed(t)); got != n {
		t.Errorf("%d events, want %d", got, n)
	}
}

// TestOneActionAtATimePerMachine: actions on one machine run one after
// the other, in the order they came; on two machines, side by side.
func TestOneActionAtATimePerMachine(t *testing.T) {
	m := newManager(t, Config{Settings: Settings{Concurrency: 4}})
	dir := t.TempDir()
	a, b := bmcFile(t, dir, "a", "off"), bmcFile(t, dir, "b", "off")
	slow := events.PowerParameters{Extra: map[string]string{"delay": "0.3"}}
	var wg sync.WaitGroup
	start := time.Now()
	for i, addr := range []string{a, a, a, b} {
		p := slow
		p.Address = addr
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := m.Do(context.Background(), Request{MachineID: "m-" + filepath.Base(addr), Driver: "filebmc", Action: events.PowerOn, Parameters: p}); !r.OK {
				t.Errorf("%d: %+v", i, r)
			}
		}()
	}
	wg.Wait()
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("three actions of 0.3s on one machine took %s: they overlapped", took)
	}
	log := lines(t, a+".log")
	for i := 0; i+1 < len(log); i += 2 {
		if log[i] != "start on" || log[i+1] != "end on" {
			t.Fatalf("actions on one machine overlapped:\n%s", strings.Join(log, "\n"))
		}
	}
}

// TestBusy: with every slot taken by a hanging BMC, an action whose
// caller gives up first never runs and says busy.
func TestBusy(t *testing.T) {
	m := newManager(t, Config{Settings: Settings{Concurrency: 1, Timeout: 2 * time.Second}})
	dir := t.TempDir()
	hang, ok := bmcFile(t, dir, "hang", "hang"), bmcFile(t, dir, "ok", "off")
	go m.Do(context.Background(), Request{MachineID: "m-hang", Driver: "filebmc", Action: events.PowerStatus,
		Parameters: events.PowerParameters{Address: hang}})
	scriptruntest.Eventually(t, "the hanging script to start", func() bool { _, err := os.Stat(hang + ".child"); return err == nil })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	r := m.Do(ctx, Request{MachineID: "m-ok", Driver: "filebmc", Action: events.PowerOn, Parameters: events.PowerParameters{Address: ok}})
	if r.Outcome != events.PowerOutcomeBusy || !strings.Contains(r.Error, "all 1 power slots") {
		t.Errorf("reply %+v, want busy", r)
	}
	if readTrim(t, ok) != "off" {
		t.Error("the refused action ran")
	}
	m.running.Wait()
}

// TestDriversDescribed: the capability snapshot's list, and the search
// path's changes seen by Rescan.
func TestDriversDescribed(t *testing.T) {
	search := t.TempDir()
	if err := os.CopyFS(search, os.DirFS("testdata/drivers")); err != nil {
		t.Fatal(err)
	}
	changes := 0
	m := newManager(t, Config{Settings: Settings{SearchPath: []string{search, "/nonexistent/power"}}, IPMITool: "/nonexistent/ipmitool", OnChange: func([]events.PowerDriver) { changes++ }})
	got := map[string]events.PowerDriver{}
	var names []string
	for _, d := range m.Drivers() {
		got[d.Name] = d
		names = append(names, d.Name)
	}
	want(t, strings.Join(names, ","), "ipmi,qemu,webhook,broken,filebmc,plainbmc")
	if d := got["ipmi"]; d.Available || !strings.Contains(d.Detail, "/nonexistent/ipmitool") {
		t.Errorf("ipmi without its tool: %+v", d)
	}
	if d := got["qemu"]; !d.Available || offers(d, events.PowerSetBoot) || d.Kind != events.PowerDriverBuiltin {
		t.Errorf("qemu: %+v", d)
	}
	if d := got["filebmc"]; !d.Available || len(d.Actions) != len(events.PowerActions) || d.Kind != events.PowerDriverScript {
		t.Errorf("filebmc: %+v", d)
	}
	if d := got["plainbmc"]; !d.Available || !slices.Equal(d.Actions, []events.PowerAction{"on", "off", "cycle", "status"}) {
		t.Errorf("plainbmc: %+v", d)
	}
	if d := got["broken"]; d.Available || !strings.Contains(d.Detail, "power-off is not executable; power-status is missing") {
		t.Errorf("broken: %+v", d)
	}
	if m.Rescan() || changes != 0 {
		t.Error("a rescan of an unchanged search path reported a change")
	}
	// A built-in's name and a bad name are passed over; a new driver is
	// found, and one made usable is.
	for _, d := range []string{"ipmi", "Bad Name", "newbmc"} {
		if err := os.CopyFS(filepath.Join(search, d), os.DirFS("testdata/drivers/plainbmc")); err != nil {
			t.Fatal(err)
		}
	}
	scriptruntest.WriteFile(t, filepath.Join(search, "broken", "power-status"), "#!/bin/sh\necho on\n", 0o755)
	scriptruntest.WriteFile(t, filepath.Join(search, "broken", "power-off"), "#!/bin/sh\n", 0o755)
	if !m.Rescan() || changes != 1 {
		t.Fatalf("rescan after changes: changes %d", changes)
	}
	names = nil
	for _, d := range m.Drivers() {
		names = append(names, d.Name)
		if d.Name == "broken" && !d.Available {
			t.Errorf("broken, repaired: %+v", d)
		}
	}
	want(t, strings.Join(names, ","), "ipmi,qemu,webhook,broken,filebmc,newbmc,plainbmc")
	if !strings.Contains(m.log.String(), "is a built-in driver's name") || !strings.Contains(m.log.String(), "is not a driver name") {
		t.Errorf("log does not say what was passed over:\n%s", m.log.String())
	}
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.RackID, good.Events = testRack, &collector{}
	if err := good.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"rack id", func(c *Config) { c.RackID = "rack-1" }, "RackID"},
		{"relative search path", func(c *Config) { c.SearchPath = []string{"power"} }, `"power" is not an absolute path`},
		{"timeout", func(c *Config) { c.Timeout = time.Millisecond }, "-power-timeout 1ms"},
		{"concurrency", func(c *Config) { c.Concurrency = 0 }, "-power-concurrency 0"},
		{"poll", func(c *Config) { c.PollInterval = 0 }, "poll interval"},
		{"ipmitool", func(c *Config) { c.IPMITool = "ipmitool" }, "ipmitool"},
		{"events", func(c *Config) { c.Events = nil }, "Events"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.change(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
	// Every problem at once.
	bad := Config{}
	if err := bad.Validate(); err == nil || strings.Count(err.Error(), "\n") < 4 {
		t.Errorf("Validate of the zero config: %v", err)
	}
}

func want(t *testing.T, got, w string) {
	t.Helper()
	if got != w {
		t.Errorf("got %q, want %q", got, w)
	}
}

func lines(t testing.TB, path string) []string {
	t.Helper()
	s := readTrim(t, path)
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func lastLine(t testing.TB, path string) string {
	l := lines(t, path)
	if len(l) == 0 {
		return ""
	}
	return l[len(l)-1]
}

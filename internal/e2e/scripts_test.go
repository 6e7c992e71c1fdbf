package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/region/postgres"
)

// TestCommissioningScriptFails commissions a QEMU VM under SeaBIOS with
// two operators' commissioning scripts: the first passes, the second
// prints a marker and exits 1. The agent runs both, in name order, after
// the inventory; the machine ends failed, its reason naming the failing
// script and the end of its output, and the API shows what each script
// did.
func TestCommissioningScriptFails(t *testing.T) {
	endToEnd(t)
	// Its VMs and servers are its own (namespaces, ports, databases):
	// it runs beside the other VM tests, which keeps CI within its time.
	t.Parallel()
	began := time.Now()
	site := newPXESiteWith(t, true, "ipxe/boot.ipxe")
	a := site.a

	for _, sc := range []map[string]any{
		{"name": "10-hello", "content": "#!/bin/sh\necho \"hello from $RACKPLANE_SCRIPT_NAME\"\n", "description": "says hello"},
		{"name": "20-fail", "content": "#!/bin/sh\necho 'disk check failed: RP-SCRIPT-MARK'\nexit 1\n", "timeout_seconds": 60},
	} {
		if code := a.call("POST", "/api/v1/commissioning-scripts", nil, sc, nil); code != 201 {
			t.Fatalf("add script %s: %d", sc["name"], code)
		}
	}
	if code := a.call("POST", "/api/v1/commissioning-scripts", nil, map[string]any{"name": "10-hello", "content": "true"}, nil); code != 409 {
		t.Fatalf("a second 10-hello: %d, want 409", code)
	}

	importEphemeral(t, a, site.rackID)

	const mac = "52:54:00:7c:01:01"
	var m machineRef
	if code := a.call("POST", "/api/v1/machines", nil,
		map[string]any{"hostname": "scr1", "macs": []string{mac}, "boot_rack_id": site.rackID}, &m); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	var com struct{ Status, Error string }
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/commission", nil, nil, &com); code != 200 || com.Status != "commissioning" {
		t.Fatalf("commission: %d %+v", code, com)
	}

	dir := t.TempDir()
	args := append([]string{"-accel", "tcg", "-smp", "1", "-m", "512", "-nographic", "-no-reboot", "-monitor", "none",
		"-netdev", "user,id=n0,bootfile=tftp://10.0.2.2:" + site.tftpPort + "/" + site.bootFile,
		"-device", "e1000,netdev=n0,mac=" + mac, "-boot", "n"},
		diskArgs(t, dir, []vmDisk{{"RP-SCR-1", 64 << 20}})...)
	log := runVM(t, site.qemu, dir, args, "ran its scripts")

	var got struct {
		Status       string `json:"status"`
		StatusReason string `json:"status_reason"`
	}
	eventually(t, 30*time.Second, "the machine is failed", func() error {
		a.call("GET", "/api/v1/machines/"+m.ID, nil, nil, &got)
		if got.Status != "failed" {
			return fmt.Errorf("status %s (%s)", got.Status, got.StatusReason)
		}
		return nil
	})
	t.Logf("status %s: %s", got.Status, got.StatusReason)
	if !strings.Contains(got.StatusReason, "20-fail") || !strings.Contains(got.StatusReason, "RP-SCRIPT-MARK") {
		t.Errorf("status_reason %q, want the failing script 20-fail and its output's RP-SCRIPT-MARK\nserial:\n%s", got.StatusReason, tail(string(log), 40))
	}

	var results postgres.ScriptResults
	if code := a.call("GET", "/api/v1/machines/"+m.ID+"/commissioning", nil, nil, &results); code != 200 {
		t.Fatalf("commissioning results: %d", code)
	}
	b, _ := json.Marshal(results)
	t.Logf("commissioning results: %s", b)
	want := []struct {
		name   string
		code   int
		output string
	}{{"10-hello", 0, "hello from 10-hello\n"}, {"20-fail", 1, "disk check failed: RP-SCRIPT-MARK\n"}}
	if len(results.Results) != len(want) {
		t.Fatalf("%d results, want %d: %s", len(results.Results), len(want), b)
	}
	for i, w := range want {
		r := results.Results[i]
		if r.Name != w.name || r.ExitCode != w.code || r.Output != w.output || r.Truncated {
			t.Errorf("result %d: %+v, want %s exit %d output %q", i, r, w.name, w.code, w.output)
		}
	}
	t.Logf("the test took %s", time.Since(began).Round(time.Second))
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/region/regiontest"
)

// TestMachinePower drives a machine's power through the CLI, against
// rackplane dev whose rack has the region tests' shell driver shellbmc.
func TestMachinePower(t *testing.T) {
	if testing.Short() {
		t.Skip("starts rackplane dev")
	}
	search, err := filepath.Abs("../../region/testdata/power")
	if err != nil {
		t.Fatal(err)
	}
	d := startDev(t, "-power-search-path", search, "-power-timeout", "5s")
	regiontest.Eventually(t, 30*time.Second, "the built-in rack online", d.rackOnline("dev-rack", true))
	var racks struct {
		Racks []struct{ ID, Name string }
	}
	if code, err := d.get("/api/v1/racks", &racks); code != 200 || err != nil || len(racks.Racks) != 1 {
		t.Fatalf("racks: %d %v %+v", code, err, racks)
	}
	dir := t.TempDir()
	bmc, pwFile := filepath.Join(dir, "bmc"), filepath.Join(dir, "pw")
	const secret = "cli-Secret-77"
	for name, content := range map[string]string{bmc: "off\n", bmc + ".password": secret, pwFile: secret + "\n"} {
		if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := d.rackplane([]string{"machine", "create"}, "-hostname", "pw1", "-mac", "52:54:00:ee:01:01"); err != nil {
		t.Fatalf("machine create: %v\n%s", err, out)
	}
	regiontest.Eventually(t, 10*time.Second, "shellbmc reported", func() error {
		var ds struct {
			PowerDrivers []struct {
				Name      string
				RackID    string `json:"rack_id"`
				Available bool
			} `json:"power_drivers"`
		}
		if _, err := d.get("/api/v1/power-drivers", &ds); err != nil {
			return err
		}
		for _, x := range ds.PowerDrivers {
			if x.Name == "shellbmc" && x.Available && x.RackID == racks.Racks[0].ID {
				return nil
			}
		}
		return fmt.Errorf("power drivers %+v", ds)
	})
	if out, err := d.rackplane([]string{"machine", "power", "set"}, "-driver", "shellbmc", "-address", bmc, "-username", "admin",
		"-password-file", pwFile, "-extra", "note=u12", "-rack", racks.Racks[0].ID, "pw1"); err != nil {
		t.Fatalf("power set: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		cmd  []string
		says []string
	}{
		{[]string{"show", "pw1"}, []string{"driver:    shellbmc", "password:  set, fingerprint ", "extra:     note=u12", "power:     unknown (checked never)"}},
		{[]string{"on", "pw1"}, []string{"pw1\ton\tok"}},
		{[]string{"status", "pw1"}, []string{"on"}},
		{[]string{"off", "pw1"}, []string{"pw1\toff\tok"}},
		{[]string{"cycle", "pw1"}, []string{"pw1\ton\tok"}},
	} {
		out, err := d.rackplane(append([]string{"machine", "power"}, tc.cmd[0]), tc.cmd[1:]...)
		if err != nil {
			t.Fatalf("machine power %s: %v\n%s", tc.cmd, err, out)
		}
		for _, s := range tc.says {
			if !strings.Contains(out, s) {
				t.Errorf("machine power %s says:\n%s\nwant %q in it", tc.cmd, out, s)
			}
		}
		if strings.Contains(out, secret) {
			t.Errorf("machine power %s shows the password:\n%s", tc.cmd, out)
		}
	}
	if b, _ := os.ReadFile(bmc); strings.TrimSpace(string(b)) != "on" {
		t.Errorf("the BMC is %q after cycle", b)
	}
	// A refusal is the region's error, and the command fails.
	if out, err := d.rackplane([]string{"machine", "power", "on"}, "nosuch"); err == nil || !strings.Contains(out+err.Error(), `no machine with the host name "nosuch"`) {
		t.Errorf("power on of no machine: %v\n%s", err, out)
	}
}

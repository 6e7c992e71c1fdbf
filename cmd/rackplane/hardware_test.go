package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/region/regiontest"
)

// TestMachineTagsAndFiltersCLI: tags set and shown through the CLI, the
// list filtered by them, a bad filter value named, and a machine never
// commissioned said to be so; against rackplane dev.
func TestMachineTagsAndFiltersCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts rackplane dev")
	}
	d := startDev(t)
	regiontest.Eventually(t, 30*time.Second, "the built-in rack online", d.rackOnline("dev-rack", true))
	for _, h := range []string{"tg1", "tg2"} {
		if out, err := d.rackplane([]string{"machine", "create"}, "-hostname", h, "-mac", "52:54:00:ee:02:0"+h[2:]); err != nil {
			t.Fatalf("machine create %s: %v\n%s", h, err, out)
		}
	}
	if out, err := d.rackplane([]string{"machine", "tags"}, "tg1", "rack4", "gpu"); err != nil || out != "gpu\nrack4\n" {
		t.Fatalf("machine tags set: %v\n%q", err, out)
	}
	if out, err := d.rackplane([]string{"machine", "tags"}, "tg1"); err != nil || out != "gpu\nrack4\n" {
		t.Fatalf("machine tags show: %v\n%q", err, out)
	}
	if out, err := d.rackplane([]string{"machine", "tags"}, "tg2", "Bad Tag"); err == nil || !strings.Contains(err.Error(), `"Bad Tag"`) {
		t.Fatalf("bad tag: %v\n%s", err, out)
	}
	out, err := d.rackplane([]string{"machines"}, "-tag", "gpu", "-tag", "rack4")
	if err != nil || !strings.Contains(out, "tg1") || strings.Contains(out, "tg2") || !strings.Contains(out, "gpu,rack4") {
		t.Fatalf("machines -tag: %v\n%s", err, out)
	}
	if out, err := d.rackplane([]string{"machines"}, "-min-memory", "lots"); err == nil || !strings.Contains(err.Error(), `min_memory "lots"`) {
		t.Fatalf("machines -min-memory lots: %v\n%s", err, out)
	}
	if out, err := d.rackplane([]string{"machines"}, "-min-cores", "1"); err != nil || strings.Contains(out, "tg1") {
		t.Fatalf("machines -min-cores 1 lists a machine never commissioned: %v\n%s", err, out)
	}
	if out, err := d.rackplane([]string{"machine", "tags"}, "-clear", "tg1"); err != nil || out != "" {
		t.Fatalf("machine tags -clear: %v\n%q", err, out)
	}
	if out, err := d.rackplane([]string{"machine", "hardware"}, "tg1"); err == nil || !strings.Contains(err.Error(), "never commissioned") {
		t.Fatalf("machine hardware of a machine never commissioned: %v\n%s", err, out)
	}
}

// TestShowHardware: the hardware table shows the summary, each disk and
// each NIC.
func TestShowHardware(t *testing.T) {
	raw := `{"machine_id":"m","rack_id":"r1","collected_at":"2026-11-30T12:00:00Z","reported_at":"2026-11-30T12:00:01Z",
		"summary":{"arch":"amd64","cpu_model":"Xeon","sockets":2,"cores":64,"threads":128,"memory_bytes":274877906944,"firmware":"uefi","secure_boot":true},
		"inventory":{"disks":[{"name":"sda","size_bytes":480103981056,"model":"SAMSUNG","serial":"S1","rotational":false},
			{"name":"sdb","size_bytes":4000787030016,"rotational":true}],
		"nics":[{"name":"eno1","mac":"52:54:00:12:34:56","driver":"ixgbe","link":"up","speed_mbps":10000,"boot":true}],
		"dmi":{"vendor":"Dell Inc.","product":"PowerEdge R650"}}}`
	var h hardware
	if err := json.Unmarshal([]byte(raw), &h); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := showHardware(&out, h); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Xeon: 2 socket(s), 64 cores, 128 threads", "256.0 GiB", "uefi (Secure Boot)", "Dell Inc. PowerEdge R650",
		"sda   447.1 GiB  SAMSUNG  S1      ssd", "sdb   3.6 TiB    -        -       hdd", "eno1  52:54:00:12:34:56  ixgbe   up    10000 Mb/s  yes"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

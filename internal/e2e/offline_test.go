package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestInstallFinishesWhileRegionIsAway deploys a VM's machine, then stops
// regiond (and, in one variant, NATS too) before the VM boots. The VM
// still gets its preseed, from the copy the rack cached when the
// deployment started, and its success report is taken by the rack (202)
// and kept. Once the region is back the rack delivers what it kept: the
// machine is deployed, and its event stream tells the deployment in order.
func TestInstallFinishesWhileRegionIsAway(t *testing.T) {
	vmTest(t)
	t.Run("region stopped", func(t *testing.T) { installWhileAway(t, false, "52:54:00:7a:00:21") })
	t.Run("region and NATS stopped", func(t *testing.T) { installWhileAway(t, true, "52:54:00:7a:00:22") })
}

func installWhileAway(t *testing.T, natsDown bool, mac string) {
	site := newPXESite(t, true, "ipxe/boot.ipxe")
	a := site.a
	tmpl := "#cloud-config\nhostname: {{.Machine.Hostname}}\n# preseed {{.Preseed.Name}} version {{.Preseed.Version}} on {{.Machine.MAC}}\n# report: {{.URLs.Status}}\n"
	m := a.deployNew("offline1", mac, "offline", tmpl)

	// The rack fetched the preseed as the deployment started, before any
	// installer asked for it.
	eventually(t, 30*time.Second, "the rack cached the machine's preseed", func() error {
		if n := rackMetric(t, site.rackHTTP, "rackplane_preseed_cache_entries"); n != 1 {
			return fmt.Errorf("%g preseeds cached", n)
		}
		return nil
	})
	if err := site.region.StopWith(syscall.SIGTERM); err != nil {
		t.Fatalf("regiond: %v", err)
	}
	if natsDown {
		site.ns.Stop()
	}

	serial := site.boot(t, mac)
	got := preseedOf(t, serial)
	if want := "hostname: offline1\n# preseed offline version 1 on " + mac; !strings.Contains(got, want) {
		t.Fatalf("the VM got preseed\n%s\nwant it to contain\n%s", got, want)
	}
	if !strings.Contains(got, "# report: http://10.0.2.2:") {
		t.Fatalf("the cached preseed has no status URL:\n%s", got)
	}
	reply := "REPORT: report of machine " + m.ID + " accepted: the region is away"
	if !strings.Contains(serial, reply) {
		t.Fatalf("the VM's report was not accepted by the rack\nserial:\n%s", tail(serial, 40))
	}
	t.Logf("with the region away the VM got its preseed and its report was accepted:\n%s\n%s", got, grepLines(serial, "REPORT:"))
	// The preseed fetch and the report wait on the rack's disk.
	if n := rackMetric(t, site.rackHTTP, "rackplane_queued_region_calls_pending"); n != 2 {
		t.Fatalf("%g calls queued on the rack, want 2 (the preseed fetch and the report)", n)
	}

	if natsDown {
		site.ns.Restart()
	}
	site.region = start(t, "regiond", site.regionArgs...)
	eventually(t, 30*time.Second, "regiond serving again", func() error {
		resp, err := http.Get(a.base + "/api/v1/machines/" + m.ID)
		if err == nil {
			resp.Body.Close()
		}
		return err
	})
	eventually(t, 60*time.Second, "the machine deployed once the region is back", func() error {
		var after struct{ Status string }
		if code := a.call("GET", "/api/v1/machines/"+m.ID, nil, nil, &after); code != 200 || after.Status != "deployed" {
			return fmt.Errorf("machine is %q (%d)", after.Status, code)
		}
		return nil
	})
	eventually(t, 30*time.Second, "the rack's queue empty", func() error {
		if n := rackMetric(t, site.rackHTTP, "rackplane_queued_region_calls_pending"); n != 0 {
			return fmt.Errorf("%g calls pending", n)
		}
		return nil
	})
	if n := rackMetric(t, site.rackHTTP, "rackplane_queued_region_calls_delivered_total"); n != 2 {
		t.Fatalf("%g queued calls delivered, want 2", n)
	}
	if n := rackMetric(t, site.rackHTTP, "rackplane_queued_region_calls_dropped_total"); n != 0 {
		t.Fatalf("%g queued calls dropped", n)
	}

	var evs struct {
		Events []struct{ Type string }
	}
	if code := a.call("GET", "/api/v1/events?limit=1000&stream=machine/"+m.ID, nil, nil, &evs); code != 200 {
		t.Fatalf("GET events: %d", code)
	}
	var types []string
	for _, e := range evs.Events {
		types = append(types, strings.TrimSuffix(strings.TrimPrefix(e.Type, "rackplane.region."), ".v1"))
	}
	t.Logf("machine stream: %v", types)
	want := []string{"machine_deploying", "preseed_served", "machine_deployed"}
	if !inOrder(types, want) {
		t.Fatalf("machine stream %v does not have %v in that order", types, want)
	}
	if n := count(types, "preseed_served"); n != 1 {
		t.Fatalf("%d preseed_served in %v, want 1 (the rack's own fetch records none)", n, types)
	}
	// With the machine deployed the rack boots it from disk and keeps no
	// preseed for it.
	eventually(t, 30*time.Second, "the deployed machine's preseed dropped from the rack", func() error {
		if n := rackMetric(t, site.rackHTTP, "rackplane_preseed_cache_entries"); n != 0 {
			return fmt.Errorf("%g preseeds cached", n)
		}
		return nil
	})
}

// inOrder reports whether want appears in got as a subsequence.
func inOrder(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

func count(xs []string, x string) int {
	n := 0
	for _, v := range xs {
		if v == x {
			n++
		}
	}
	return n
}

// rackMetric sums the samples of metric name on the rack's /metrics.
func rackMetric(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if rest, ok := strings.CutPrefix(l, name); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "{")) {
			f := strings.Fields(l)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", l, err)
			}
			sum += v
		}
	}
	return sum
}

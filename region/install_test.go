package region_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack"
	"github.com/rackplane/rackplane/region"
	"github.com/rackplane/rackplane/region/postgres"
)

// statusURLRE finds {{.URLs.Status}} in a rendered preseed.
var statusURLRE = regexp.MustCompile(`http://\S+/status/\S+`)

// post sends an installer's report the way curl --data or busybox wget
// --post-data do, or as JSON.
func post(t *testing.T, target, contentType, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(target, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const form = "application/x-www-form-urlencoded"

// deployedSite is a region, a rack with ubuntu/noble, and a preseed whose
// installer reports to {{.URLs.Status}}.
func deployedSite(t testing.TB, set func(*region.Config)) (*harness, string) {
	t.Helper()
	h := startRegionWith(t, set)
	r := startNobleRack(t, h)
	tmpl := "#cloud-config\n# from {{.URLs.Preseed}}\nhostname: {{.Machine.Hostname}}\nruncmd:\n  - curl -fsS --data result=success {{.URLs.Status}}\n"
	if code := h.do("POST", "/api/v1/preseeds", map[string]any{"name": "default", "content": tmpl}, nil); code != 201 {
		t.Fatalf("create preseed: %d", code)
	}
	return h, r.HTTPAddr()
}

// startNobleRack starts rack-a with an ubuntu/noble amd64 image and waits
// until the region's OS registry lists it.
func startNobleRack(t testing.TB, h *harness) *rack.Rack {
	t.Helper()
	r, _ := startRack(t, h, filepath.Join(t.TempDir(), "rack-a"), 200*time.Millisecond)
	importInto(t, r, imageSource(t, "ubuntu/noble/amd64/generic"))
	h.waitForRegistry("ubuntu/noble/amd64/generic:rack-a")
	return r
}

// waitForRegistry waits until the OS registry's summary is want.
func (h *harness) waitForRegistry(want string) {
	h.t.Helper()
	h.eventually(10*time.Second, "the OS registry to list "+want, func() error {
		var l osList
		h.getJSON("/api/v1/os", &l)
		if got := summary(l); got != want {
			return fmt.Errorf("%s", got)
		}
		return nil
	})
}

func (h *harness) newMachine(hostname, mac string) machineOut {
	h.t.Helper()
	var m machineOut
	if code := h.do("POST", "/api/v1/machines", map[string]any{"hostname": hostname, "macs": []string{mac}}, &m); code != 201 {
		h.t.Fatalf("create machine %s: %d", hostname, code)
	}
	return m
}

func (h *harness) deploy(m machineOut) {
	h.t.Helper()
	code, body, _ := h.raw("POST", h.api+"/api/v1/machines/"+m.ID+"/deploy", nil, `{"os": "ubuntu", "release": "noble"}`)
	if code != 200 {
		h.t.Fatalf("deploy %s: %d %s", m.Hostname, code, body)
	}
}

// preseedPath waits for the rack's boot config of the machine's first MAC
// to install it, and returns the path of the preseed URL on its kernel
// command line: /preseed/<machine>/<the deployment's credential>. A path
// in earlier (an earlier deployment's) is waited past.
func (h *harness) preseedPath(rackHTTP string, m machineOut, earlier ...string) string {
	h.t.Helper()
	re := regexp.MustCompile(` url=http://[^/\s]+(/preseed/` + regexp.QuoteMeta(m.ID) + `/[A-Za-z0-9_-]{43})\s`)
	var p string
	h.eventually(10*time.Second, "the rack's boot config of "+m.Hostname+" to carry its preseed URL", func() error {
		_, cfg, _ := h.raw("GET", "http://"+rackHTTP+"/pxelinux.cfg/01-"+strings.ReplaceAll(m.MACs[0], ":", "-"), nil, "")
		sm := re.FindStringSubmatch(cfg)
		if sm == nil || slices.Contains(earlier, sm[1]) {
			return fmt.Errorf("config %q", cfg)
		}
		p = sm[1]
		return nil
	})
	return p
}

// statusURL fetches the machine's preseed from the rack as its installer
// would, at the URL on its kernel command line, and returns the report URL
// rendered into it.
func (h *harness) statusURL(rackHTTP string, m machineOut) string {
	h.t.Helper()
	p := h.preseedPath(rackHTTP, m)
	code, body, _ := h.raw("GET", "http://"+rackHTTP+p, nil, "")
	// {{.URLs.Preseed}} is the URL the installer fetched, credential and all.
	if !regexp.MustCompile(`# from http://\S+` + regexp.QuoteMeta(p) + "\n").MatchString(body) {
		h.t.Fatalf("preseed of %s fetched at %s renders {{.URLs.Preseed}} otherwise:\n%s", m.Hostname, p, body)
	}
	u := statusURLRE.FindString(body)
	if code != 200 || u == "" {
		h.t.Fatalf("preseed of %s: %d %q", m.Hostname, code, body)
	}
	return u
}

func (h *harness) status(m machineOut) string {
	h.t.Helper()
	var out machineOut
	h.getJSON("/api/v1/machines/"+m.ID, &out)
	return out.Status
}

func (h *harness) reasons(typ string, m machineOut) []string {
	h.t.Helper()
	var page struct {
		Events []struct{ Data events.MachineRef }
	}
	h.getJSON("/api/v1/events?limit=1000&stream=machine/"+m.ID+"&type="+typ, &page)
	var out []string
	for _, e := range page.Events {
		out = append(out, e.Data.Reason)
	}
	return out
}

func TestInstallerReportsItsOutcome(t *testing.T) {
	h, rackHTTP := deployedSite(t, func(*region.Config) {})
	node1 := h.newMachine("node1", "52:54:00:bb:00:01")
	node2 := h.newMachine("node2", "52:54:00:bb:00:02")
	h.deploy(node1)
	h.deploy(node2)
	p1 := h.preseedPath(rackHTTP, node1)
	u1, u2 := h.statusURL(rackHTTP, node1), h.statusURL(rackHTTP, node2)
	if !strings.Contains(u1, "/status/"+node1.ID+"/") || u1 == u2 {
		t.Fatalf("report URLs %s and %s", u1, u2)
	}
	// The installer reaches the rack at its boot URL; the test reaches the
	// same server on its listening address.
	parsed, err := url.Parse(u1)
	if err != nil {
		t.Fatal(err)
	}
	token1 := parsed.Path[strings.LastIndex(parsed.Path, "/")+1:]
	at := func(machineID, token string) string {
		return "http://" + rackHTTP + "/status/" + machineID + "/" + token
	}

	bad := []struct {
		name, target, contentType, body string
		want                            int
	}{
		{"wrong token", at(node1.ID, token1[:len(token1)-2]+"xx"), form, "result=success", 403},
		{"another machine's token", at(node2.ID, token1), form, "result=success", 403},
		{"unknown machine", at(uuid.NewString(), token1), form, "result=success", 404},
		{"not a machine id", at("node1", token1), form, "result=success", 404},
		{"no result", at(node1.ID, token1), form, "message=hello", 400},
		{"unknown result", at(node1.ID, token1), form, "result=maybe", 400},
		{"broken JSON", at(node1.ID, token1), "application/json", `{"result": `, 400},
		{"oversized body", at(node1.ID, token1), form, "result=success&message=" + strings.Repeat("x", 20<<10), 400},
	}
	for _, c := range bad {
		if code, body := post(t, c.target, c.contentType, c.body); code != c.want {
			t.Errorf("%s: %d %q, want %d", c.name, code, body, c.want)
		}
	}
	if s1, s2 := h.status(node1), h.status(node2); s1 != "deploying" || s2 != "deploying" {
		t.Fatalf("after bad reports: node1 %s, node2 %s; want both still deploying", s1, s2)
	}

	// Success: deployed, and the rack's config for its MAC boots the disk.
	if code, body := post(t, at(node1.ID, token1), form, "result=success&message=installed+in+4m"); code != 200 || !strings.Contains(body, "deployed") {
		t.Fatalf("success report: %d %q", code, body)
	}
	if s := h.status(node1); s != "deployed" {
		t.Fatalf("after its installer's success node1 is %s", s)
	}
	h.eventually(5*time.Second, "the rack boots node1 from its disk", func() error {
		_, cfg, _ := h.raw("GET", "http://"+rackHTTP+"/pxelinux.cfg/01-52-54-00-bb-00-01", nil, "")
		if !strings.Contains(cfg, "LOCALBOOT") || strings.Contains(cfg, "/preseed/") {
			return fmt.Errorf("config %q", cfg)
		}
		return nil
	})
	// The deployment is over: its preseed, with the status token and
	// whatever secrets it holds, goes to nobody, credential or not.
	if code, body, _ := h.raw("GET", "http://"+rackHTTP+p1, nil, ""); code != 403 || strings.Contains(body, "/status/") {
		t.Fatalf("preseed of deployed node1 with its credential: %d %q, want 403", code, body)
	}
	// An installer that retries gets the same answer; nothing is logged twice.
	if code, _ := post(t, at(node1.ID, token1), form, "result=success"); code != 200 {
		t.Fatalf("repeated success: %d", code)
	}
	if r := h.reasons(events.TypeMachineDeployed, node1); len(r) != 1 || r[0] != "the installer reported success: installed in 4m" {
		t.Fatalf("machine_deployed events: %q", r)
	}
	if code, _ := post(t, at(node1.ID, token1), form, "result=failure"); code != 409 {
		t.Fatalf("failure after success: %d", code)
	}
	// A deployed machine is in service: deploying it again would wipe it,
	// so that takes a release first.
	var refusal apiError
	if code := h.do("POST", "/api/v1/machines/"+node1.ID+"/deploy", map[string]any{"os": "ubuntu", "release": "noble"}, &refusal); code != 409 ||
		!strings.Contains(refusal.Error.Message, "release it first") {
		t.Fatalf("deploy of a deployed machine: %d %+v", code, refusal)
	}

	// Failure, reported as JSON: failed, with the installer's message.
	token2 := u2[strings.LastIndex(u2, "/")+1:]
	if code, body := post(t, at(node2.ID, token2), "application/json", `{"result": "failure", "message": "no disk found"}`); code != 200 || !strings.Contains(body, "failed") {
		t.Fatalf("failure report: %d %q", code, body)
	}
	if s := h.status(node2); s != "failed" {
		t.Fatalf("after its installer's failure node2 is %s", s)
	}
	if r := h.reasons(events.TypeMachineFailed, node2); len(r) != 1 || r[0] != "the installer reported failure: no disk found" {
		t.Fatalf("machine_failed events: %q", r)
	}

	// A token is good for one deployment: after a release and redeploy the
	// old one is refused and the preseed renders a new one.
	if code := h.do("POST", "/api/v1/machines/"+node1.ID+"/release", nil, nil); code != 200 {
		t.Fatalf("release: %d", code)
	}
	h.deploy(node1)
	if code, _ := post(t, at(node1.ID, token1), form, "result=success"); code != 403 {
		t.Fatalf("a report with the last deployment's token: %d", code)
	}
	if u := h.statusURL(rackHTTP, node1); u == u1 {
		t.Fatalf("the redeployment renders the old report URL %s", u)
	}

	// The deployment columns are projected from the log like the rest.
	before := h.dump("machines")
	if _, err := postgres.New(h.pool, testLogger()).RebuildProjections(context.Background()); err != nil {
		t.Fatal(err)
	}
	if after := h.dump("machines"); after != before {
		t.Fatalf("machines differ after a rebuild:\nbefore %s\nafter  %s", before, after)
	}
}

// A deployment whose installer never reports fails after -deploy-timeout;
// one that reported in time is left alone.
func TestDeploymentTimeout(t *testing.T) {
	const timeout = 3 * time.Second
	h, rackHTTP := deployedSite(t, func(c *region.Config) { c.DeployTimeout = timeout })
	reported := h.newMachine("reported", "52:54:00:cc:00:01")
	silent := h.newMachine("silent", "52:54:00:cc:00:02")
	h.deploy(reported)
	if code, _ := post(t, h.statusURL(rackHTTP, reported), form, "result=success"); code != 200 {
		t.Fatalf("success report: %d", code)
	}
	h.deploy(silent)
	start := time.Now()
	h.eventually(timeout+10*time.Second, "the silent deployment fails", func() error {
		if s := h.status(silent); s != "failed" {
			return fmt.Errorf("silent is %s", s)
		}
		return nil
	})
	if waited := time.Since(start); waited < timeout-time.Second {
		t.Fatalf("failed after %s, before the timeout of %s", waited, timeout)
	}
	want := "the installer did not report within the deployment timeout of 3s"
	if r := h.reasons(events.TypeMachineFailed, silent); len(r) != 1 || r[0] != want {
		t.Fatalf("machine_failed events: %q", r)
	}
	if s := h.status(reported); s != "deployed" {
		t.Fatalf("the machine that reported in time is %s", s)
	}
	// The watch counts a timeout after the machine has failed.
	h.eventually(5*time.Second, "the timed-out deployment counted", func() error {
		if _, metrics, _ := h.raw("GET", h.api+"/metrics", nil, ""); !strings.Contains(metrics, "rackplane_region_deployments_timed_out_total 1") {
			return fmt.Errorf("metrics lack it")
		}
		return nil
	})
}

// TestBootTrafficLeavesTheMachineAlone: a deploying machine PXE-boots and
// fetches its preseed while an operator holds its ETag. The rack's boot
// events and the preseed fetch land on the machine's stream, but they
// observe the machine rather than change it, so the ETag stays, an
// If-Match taken before the boot still applies, and a release does not
// lose a race against the boot traffic.
func TestBootTrafficLeavesTheMachineAlone(t *testing.T) {
	h, rackHTTP := deployedSite(t, func(*region.Config) {})
	const mac = "52:54:00:dd:00:01"
	m := h.newMachine("booting", mac)
	h.deploy(m)
	var before machineOut
	h.getJSON("/api/v1/machines/"+m.ID, &before)

	// Boot as iPXE would, once the rack has the deployment's boot
	// decision (it follows the region's events), then fetch the preseed
	// as the installer would.
	h.eventually(10*time.Second, "the rack serves the install script", func() error {
		code, script, _ := h.raw("GET", "http://"+rackHTTP+"/ipxe/"+strings.ReplaceAll(mac, ":", "-")+".ipxe", nil, "")
		if code != 200 || !strings.Contains(script, "kernel") {
			return fmt.Errorf("iPXE script of the deploying machine: %d %q", code, script)
		}
		return nil
	})
	h.statusURL(rackHTTP, m)
	h.eventually(10*time.Second, "the boot and the preseed fetch in the machine's stream", func() error {
		var page struct{ Events []struct{ Type string } }
		h.getJSON("/api/v1/events?limit=100&stream=machine/"+m.ID, &page)
		seen := map[string]bool{}
		for _, e := range page.Events {
			seen[e.Type] = true
		}
		if !seen[events.TypeBootHandoff] || !seen[events.TypePreseedServed] {
			return fmt.Errorf("stream has %v", seen)
		}
		return nil
	})

	var after machineOut
	h.getJSON("/api/v1/machines/"+m.ID, &after)
	if after.Version != before.Version {
		t.Fatalf("boot traffic moved the machine's version from %d to %d", before.Version, after.Version)
	}
	code, body, _ := h.raw("PATCH", h.api+"/api/v1/machines/"+m.ID, map[string]string{"If-Match": fmt.Sprintf(`"%d"`, before.Version)},
		`{"hostname": "booted"}`)
	if code != 200 || !strings.Contains(body, `"booted"`) {
		t.Fatalf("update with the ETag read before the boot: %d %s", code, body)
	}
	// The version still guards real changes: the old ETag is stale now.
	code, _, _ = h.raw("PATCH", h.api+"/api/v1/machines/"+m.ID, map[string]string{"If-Match": fmt.Sprintf(`"%d"`, before.Version)},
		`{"hostname": "again"}`)
	if code != 412 {
		t.Fatalf("update with a stale ETag: %d, want 412", code)
	}

	// Releases race boot traffic without losing: the rack reports every
	// request of a booting machine while the operator releases it.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if resp, err := http.Get("http://" + rackHTTP + "/ipxe/" + strings.ReplaceAll(mac, ":", "-") + ".ipxe"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	for i := 0; i < 5; i++ {
		if code := h.do("POST", "/api/v1/machines/"+m.ID+"/release", nil, nil); code != 200 {
			t.Fatalf("release %d during boot traffic: %d", i, code)
		}
		h.deploy(m)
	}
	close(stop)
	<-done
}

package rack_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/schema"
)

// fakeRegion answers the preseed and install_status rpcs over NATS, checks
// the rack's requests against their schemas, and records them in order.
type fakeRegion struct {
	srv   *rpc.Server
	mu    sync.Mutex
	calls []string
	// deploymentOver makes it refuse preseeds other than prefetches as
	// the region does once the deployment has ended.
	deploymentOver atomic.Bool
}

func startRegion(t *testing.T, ns *natsserver.Test, calls *fakeRegion) {
	t.Helper()
	set, err := schema.Default()
	if err != nil {
		t.Fatal(err)
	}
	nc := ns.Connect()
	srv := rpc.NewServer(nc, "region", slog.New(slog.DiscardHandler), 4, 5*time.Second)
	calls.srv = srv
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventbus.ServeFollow(srv, js); err != nil {
		t.Fatal(err)
	}
	handle := func(method string, answer func(req map[string]any) (any, error)) {
		if err := srv.Handle(events.RegionRPCWildcard(method), events.RegionQueue, func(_ context.Context, data []byte) (any, error) {
			if err := set.ValidateJSON("rpc.region."+method+".request", data); err != nil {
				t.Errorf("the rack's %s request breaks its schema: %v", method, err)
			}
			var req map[string]any
			_ = json.Unmarshal(data, &req)
			what := method
			if req["prefetch"] == true {
				what += " prefetch"
			}
			if s, _ := req["result"].(string); s != "" {
				what += " " + s
			}
			calls.mu.Lock()
			calls.calls = append(calls.calls, what)
			calls.mu.Unlock()
			return answer(req)
		}); err != nil {
			t.Fatal(err)
		}
	}
	handle(events.MethodPreseed, func(req map[string]any) (any, error) {
		if calls.deploymentOver.Load() && req["prefetch"] != true {
			return nil, rackplane.Errorf(rackplane.ENOTFOUND, "machine %v has no deployment in progress", req["machine_id"])
		}
		sum := sha256.Sum256([]byte("tok"))
		return events.PreseedReply{Name: "p", Version: 1, Content: "root-password secret\n", StatusTokenSHA256: hex.EncodeToString(sum[:])}, nil
	})
	// No commissioning scripts: an agent commissioning from the rack
	// runs none.
	handle(events.MethodCommissioningScripts, func(map[string]any) (any, error) {
		return events.CommissioningScriptsReply{Scripts: []events.CommissioningScript{}}, nil
	})
	handle(events.MethodInstallStatus, func(req map[string]any) (any, error) {
		if req["token"] != "tok" {
			return nil, rackplane.Errorf(rackplane.EFORBIDDEN, "not this deployment's token")
		}
		return map[string]any{"machine_id": req["machine_id"], "status": "deployed", "changed": true}, nil
	})
}

// publishDecision publishes d as the region's boot decision of its
// machine, as the region does when an operation starts.
func publishDecision(t *testing.T, js jetstream.JetStream, d events.BootDecision) {
	t.Helper()
	e, err := events.New(events.RegionSource, events.TypeBootDecisionSet, events.MachineStreamName(d.MachineID), time.Now(), d)
	if err != nil {
		t.Fatal(err)
	}
	m, err := eventbus.Message(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

func (f *fakeRegion) seen() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.calls, ", ")
}

// TestInstallWhileRegionAway: the rack fetches a machine's preseed when its
// install decision arrives; with the region gone it serves that copy and
// takes the installer's report with 202, and makes both calls, in order,
// once the region is back.
func TestInstallWhileRegionAway(t *testing.T) {
	ns := natsserver.StartTest(t)
	nc := ns.Connect()
	js := ensureStreams(t, nc)
	region := &fakeRegion{}
	startRegion(t, ns, region)
	r, stop := infoRack(t, ns, t.TempDir())
	defer stop()

	const machineID = "0190f0e0-0000-7000-8000-0000000000aa"
	const deploymentID = "0190f0e0-0000-7000-8000-0000000000da"
	publishDecision(t, js, events.BootDecision{MAC: "52:54:00:00:00:aa", MachineID: machineID, Purpose: events.BootPurposeInstall,
		Kernel: "v/linux", Initrd: "v/initrd", PreseedURL: "http://rack/preseed/" + machineID, RackID: r.ID(),
		DeploymentID: deploymentID})
	waitUntil(t, "the rack prefetched the preseed", func() bool { return region.seen() == "preseed prefetch" })
	base := "http://" + r.HTTPAddr()

	// The installer's preseed URL is the one on its kernel command line,
	// with the deployment's credential as its last element.
	preseedPath := preseedPathOf(t, base, "52-54-00-00-00-aa", machineID)
	// Without it, or with another, the preseed is refused before the
	// region is asked, and counted.
	for _, tt := range []struct {
		name, path, reason string
		want               int
	}{
		{"no credential", "/preseed/" + machineID, "no_credential", http.StatusForbidden},
		{"a wrong credential", "/preseed/" + machineID + "/" + strings.Repeat("A", 43), "wrong_credential", http.StatusForbidden},
		{"the credential of another machine's path", "/preseed/0190f0e0-0000-7000-8000-0000000000bb/" + path.Base(preseedPath), "not_deploying", http.StatusForbidden},
		// More path after the credential: refused without reaching the
		// boot file server, whose events would record the credential.
		{"more path after the credential", preseedPath + "/extra", "bad_path", http.StatusNotFound},
		{"more path after a status token", "/status/" + machineID + "/tok/extra", "bad_path", http.StatusNotFound},
	} {
		resp, err := http.Get(base + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want || strings.Contains(string(body), "secret") {
			t.Fatalf("preseed with %s: %s %q, want %d", tt.name, resp.Status, body, tt.want)
		}
		endpoint, _, _ := strings.Cut(strings.TrimPrefix(tt.path, "/"), "/")
		if n := scrape(t, base, `rackplane_machine_requests_refused_total{endpoint="`+endpoint+`",reason="`+tt.reason+`"}`); n < 1 {
			t.Fatalf("preseed with %s: refused_total{reason=%q} = %v", tt.name, tt.reason, n)
		}
	}
	if got := region.seen(); got != "preseed prefetch" {
		t.Fatalf("refused fetches reached the region: %s", got)
	}

	// A report with a wrong token, the region there: refused at once,
	// not queued.
	resp, err := http.Post(base+"/status/"+machineID+"/wrong", "application/x-www-form-urlencoded", strings.NewReader("result=success"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a report with a wrong token: %s", resp.Status)
	}

	region.srv.Close()
	// Fetched again and again (an installer retrying, or anyone on the
	// boot network): the region is told of one fetch.
	for range 3 {
		resp, err = http.Get(base + preseedPath)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "root-password secret\n" || resp.Header.Get("X-Rackplane-Preseed-Source") != "cache" {
			t.Fatalf("preseed with the region away: %s %q from %q", resp.Status, body, resp.Header.Get("X-Rackplane-Preseed-Source"))
		}
	}
	// With the region away the rack checks the token itself, and keeps
	// only reports of machines deploying from it.
	for _, tt := range []struct {
		name, path string
		want       int
	}{
		{"wrong token", "/status/" + machineID + "/wrong", http.StatusForbidden},
		{"the token's hash as token", "/status/" + machineID + "/" + hex.EncodeToString(func() []byte { s := sha256.Sum256([]byte("tok")); return s[:] }()), http.StatusForbidden},
		{"a machine not deploying here", "/status/0190f0e0-0000-7000-8000-0000000000bb/tok", http.StatusServiceUnavailable},
	} {
		resp, err := http.Post(base+tt.path, "application/x-www-form-urlencoded", strings.NewReader("result=success"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Fatalf("%s with the region away: %s, want %d", tt.name, resp.Status, tt.want)
		}
	}
	resp, err = http.Post(base+"/status/"+machineID+"/tok", "application/x-www-form-urlencoded", strings.NewReader("result=success"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || !strings.Contains(string(body), "will deliver it when the region is back") {
		t.Fatalf("report with the region away: %s %q", resp.Status, body)
	}

	back := &fakeRegion{}
	startRegion(t, ns, back)
	defer back.srv.Close()
	waitUntil(t, "the queued calls made", func() bool { return back.seen() == "preseed, install_status success" })
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 1500; i++ {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within 30s", what)
}

// preseedPathOf reads the preseed URL off the kernel command line of the
// iPXE config the rack serves for a MAC (hyphenated), and returns its path.
func preseedPathOf(t *testing.T, base, mac, machineID string) string {
	t.Helper()
	resp, err := http.Get(base + "/ipxe/" + mac + ".ipxe")
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(` url=http://rack(/preseed/` + regexp.QuoteMeta(machineID) + `/[A-Za-z0-9_-]{43})\s`).FindSubmatch(cfg)
	if resp.StatusCode != 200 || m == nil {
		t.Fatalf("iPXE config of %s: %s\n%s\nwant a preseed URL with a credential", mac, resp.Status, cfg)
	}
	return string(m[1])
}

// scrape reads one sample off the rack's /metrics, as Prometheus would;
// an absent series is 0.
func scrape(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(text), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

// TestPreseedRefusedByTheRegionAnsweredAlike: when the deployment ended
// before the rack heard of it (the rack still holds its install decision,
// the region refuses the preseed), the installer's URL gets the same 403
// as every other refusal, not the region's own answer: what a request
// learns must not depend on which of the two knew first.
func TestPreseedRefusedByTheRegionAnsweredAlike(t *testing.T) {
	ns := natsserver.StartTest(t)
	nc := ns.Connect()
	js := ensureStreams(t, nc)
	region := &fakeRegion{}
	startRegion(t, ns, region)
	defer region.srv.Close()
	r, stop := infoRack(t, ns, t.TempDir())
	defer stop()

	const machineID = "0190f0e0-0000-7000-8000-0000000000ac"
	publishDecision(t, js, events.BootDecision{MAC: "52:54:00:00:00:ac", MachineID: machineID, Purpose: events.BootPurposeInstall,
		Kernel: "v/linux", Initrd: "v/initrd", PreseedURL: "http://rack/preseed/" + machineID, RackID: r.ID(),
		DeploymentID: "0190f0e0-0000-7000-8000-0000000000dc"})
	waitUntil(t, "the rack prefetched the preseed", func() bool { return region.seen() == "preseed prefetch" })
	base := "http://" + r.HTTPAddr()
	preseedPath := preseedPathOf(t, base, "52-54-00-00-00-ac", machineID)

	get := func(p string) (int, string) {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	_, rackRefusal := get("/preseed/" + machineID) // no credential: the rack's own refusal
	region.deploymentOver.Store(true)
	code, body := get(preseedPath)
	if code != http.StatusForbidden || body != rackRefusal || strings.Contains(body, "deployment in progress") {
		t.Fatalf("preseed the region refuses: %d %q, want 403 %q", code, body, rackRefusal)
	}
	if got := region.seen(); got != "preseed prefetch, preseed" {
		t.Fatalf("region asked: %s", got)
	}
	if n := scrape(t, base, `rackplane_machine_requests_refused_total{endpoint="preseed",reason="region_refused"}`); n != 1 {
		t.Fatalf(`refused_total{reason="region_refused"} = %v, want 1`, n)
	}
}

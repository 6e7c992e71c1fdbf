package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/region/ingest"
)

// TestHostileRackAndClient runs `rackplane dev` as it starts with no flag,
// a second good rack and a hostile one joined with dev's join token, and
// a client that never authenticates. The hostile rack (its own rackd,
// shipping a preseed of the attacker's, and a second connection with its
// credentials) and the client try every act the security issue found
// possible. Each is refused and the refusal shows in a metric or the
// rejected-events list, while both good racks take their machines through
// a whole deployment: boot config, preseed, installer's report.
func TestHostileRackAndClient(t *testing.T) {
	endToEnd(t)
	ctx := context.Background()
	dataDir := filepath.Join(t.TempDir(), "dev")
	natsAddr, httpAddr, devRackHTTP := freeAddr(t), freeAddr(t), freeAddr(t)
	dev := start(t, "rackplane", "dev", "-data-dir", dataDir, "-database-url", pgtest.NewDatabase(t),
		"-nats-addr", natsAddr, "-http-addr", httpAddr, "-rack-http-addr", devRackHTTP, "-tftp-addr", freeUDPAddr(t))
	natsURL, joinFile := "nats://"+natsAddr, filepath.Join(dataDir, "join-token")
	a := api{t: t, base: "http://" + httpAddr}
	eventually(t, 60*time.Second, "rackplane dev up with its rack", func() error {
		b, err := os.ReadFile(filepath.Join(dataDir, "token"))
		if err != nil {
			return err
		}
		a.token = strings.TrimSpace(string(b))
		rs, err := racks(ctx, a.base, a.token)
		if err != nil || len(rs) != 1 || !rs[0].Online {
			return fmt.Errorf("racks %+v %v\n%s", rs, err, tail(dev.Output(), 20))
		}
		return nil
	})

	// The operator's preseed, made before the hostile rack ships one of
	// the same name.
	const operatorPreseed = "# the operator's site preseed of {{.Machine.Hostname}}\n# report: {{.URLs.Status}}\n"
	if code := a.call("POST", "/api/v1/preseeds", nil, map[string]any{"name": "site", "content": operatorPreseed}, nil); code != 201 {
		t.Fatalf("create preseed: %d", code)
	}

	rackBHTTP := freeAddr(t)
	start(t, "rackd", "-nats-url", natsURL, "-join-token-file", joinFile, "-data-dir", filepath.Join(t.TempDir(), "b"),
		"-name", "good-b", "-http-addr", rackBHTTP, "-tftp-addr", freeUDPAddr(t), "-boot-url", "http://"+rackBHTTP,
		"-import-system-bootloaders=false", "-heartbeat-interval", "1s")
	evilDir, evilPreseeds := filepath.Join(t.TempDir(), "evil"), t.TempDir()
	if err := os.WriteFile(filepath.Join(evilPreseeds, "site.preseed"), []byte("# the attacker's site preseed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	evilHTTP := freeAddr(t)
	start(t, "rackd", "-nats-url", natsURL, "-join-token-file", joinFile, "-data-dir", evilDir, "-name", "evil",
		"-http-addr", evilHTTP, "-tftp-addr", freeUDPAddr(t), "-preseed-dir", evilPreseeds,
		"-import-system-bootloaders=false", "-heartbeat-interval", "1s")
	ids := map[string]string{}
	eventually(t, 30*time.Second, "dev-rack, good-b and evil online", func() error {
		rs, err := racks(ctx, a.base, a.token)
		if err != nil {
			return err
		}
		for _, name := range []string{"dev-rack", "good-b", "evil"} {
			r, ok := rackByName(rs, name)
			if !ok || !r.Online {
				return fmt.Errorf("racks %+v", rs)
			}
			ids[name] = r.ID
		}
		return nil
	})
	devRack, rackB, evil := ids["dev-rack"], ids["good-b"], ids["evil"]

	// Both good racks can boot debian/bookworm.
	for _, id := range []string{devRack, rackB} {
		if code := a.call("POST", "/api/v1/racks/"+id+"/images/imports", nil, map[string]string{"dir": bookwormSource(t, []byte("kernel"), []byte("initrd"))}, nil); code != 202 {
			t.Fatalf("import into %s: %d", id, code)
		}
	}
	eventually(t, 60*time.Second, "bookworm on both good racks", func() error {
		var l struct {
			OSes []struct {
				Release string
				Racks   []struct{ ID string }
			}
		}
		a.call("GET", "/api/v1/os", nil, nil, &l)
		var on []string
		for _, o := range l.OSes {
			for _, r := range o.Racks {
				on = append(on, r.ID)
			}
		}
		if !slices.Contains(on, devRack) || !slices.Contains(on, rackB) {
			return fmt.Errorf("os registry %+v", l)
		}
		return nil
	})
	// The hostile rack shipped its "site" (a version the region keeps),
	// and the operator's stays current.
	eventually(t, 30*time.Second, "the hostile rack's shipped preseed stored", func() error {
		var vs struct {
			Versions []struct{ Origin string }
		}
		a.call("GET", "/api/v1/preseeds/site/versions", nil, nil, &vs)
		for _, v := range vs.Versions {
			if v.Origin == "rack:"+evil {
				return nil
			}
		}
		return fmt.Errorf("versions %+v", vs)
	})
	var site struct {
		Preseed struct {
			CurrentVersion int64 `json:"current_version"`
		}
		Version struct{ Origin string }
	}
	if a.call("GET", "/api/v1/preseeds/site", nil, nil, &site); site.Preseed.CurrentVersion != 1 || site.Version.Origin == "rack:"+evil {
		t.Fatalf("current version of site: %+v, want the operator's 1", site)
	}

	// A machine on each good rack, deploying with the operator's preseed.
	type deployment struct {
		rackHTTP, id, hostname, mac string
	}
	deploys := []deployment{{devRackHTTP, "", "on-dev", "52:54:00:ac:00:01"}, {rackBHTTP, "", "on-b", "52:54:00:ac:00:02"}}
	for i, rackID := range []string{devRack, rackB} {
		d := &deploys[i]
		var m struct{ ID, Status string }
		if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": d.hostname, "macs": []string{d.mac}, "boot_rack_id": rackID}, &m); code != 201 {
			t.Fatalf("create %s: %d", d.hostname, code)
		}
		d.id = m.ID
		if code := a.call("POST", "/api/v1/machines/"+m.ID+"/deploy", nil, map[string]any{"os": "debian", "release": "bookworm", "preseed": "site"}, &m); code != 200 || m.Status != "deploying" {
			t.Fatalf("deploy %s: %d %+v", d.hostname, code, m)
		}
	}
	onB := deploys[1]
	credB := lastElem(preseedPathOnRack(t, onB.rackHTTP, onB.mac, onB.id))

	refusedBefore := samples(t, a.base)

	// The client without credentials: NATS refuses it whoever it claims
	// to be.
	freshKey := func() nats.Option {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		return nats.Nkey(pub, kp.Sign)
	}
	for _, c := range []struct {
		name string
		opts []nats.Option
	}{
		{"anonymous", nil},
		{"as good-b with a key of its own", []nats.Option{nats.UserInfo(rackB, ""), freshKey()}},
		{"as a new rack with a made-up join token", []nats.Option{nats.UserInfo(uuid.NewString(), ""), freshKey(), nats.Token("rpj_" + strings.Repeat("x", 40))}},
		{"as the region with a password", []nats.Option{nats.UserInfo("region", "region")}},
	} {
		nc, err := nats.Connect(natsURL, append(c.opts, nats.Timeout(10*time.Second))...)
		if err == nil {
			nc.Close()
			t.Errorf("a client %s connected to NATS", c.name)
		}
	}

	// The hostile rack's own credentials, in a client of the attacker's.
	var mu sync.Mutex
	var violations []string
	seedOpt, err := nats.NkeyOptionFromSeed(filepath.Join(evilDir, "nats.nk"))
	if err != nil {
		t.Fatal(err)
	}
	enc, err := nats.Connect(natsURL, seedOpt, nats.UserInfo(evil, ""), nats.CustomInboxPrefix(events.RackInboxPrefix(evil)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			violations = append(violations, err.Error())
			mu.Unlock()
		}))
	if err != nil {
		t.Fatalf("the hostile rack's credentials: %v", err)
	}
	defer enc.Close()

	// Acts NATS itself refuses: publishing as the region or as another
	// rack, touching consumers and streams, listening on another rack's
	// subjects.
	forgedDecision, _ := events.New(events.RegionSource, events.TypeBootDecisionSet, events.MachineStreamName(onB.id), time.Now(),
		events.BootDecision{MAC: onB.mac, MachineID: onB.id, Purpose: events.BootPurposeInstall, Kernel: "evil/linux", Initrd: "evil/initrd",
			Params: []string{"evil=1"}, RackID: rackB})
	forgedRegistered, _ := events.New(events.RackSource(rackB), events.TypeRackRegistered, events.RackStreamName(rackB), time.Now(),
		events.RackRegistered{Name: "pwned", Version: "1", BootURL: "http://attacker", StartedAt: time.Now().UTC()})
	decisionJSON, _ := events.Encode(forgedDecision)
	registeredJSON, _ := events.Encode(forgedRegistered)
	denied := map[string][]byte{
		events.RegionRackEventSubject(rackB, events.TypeBootDecisionSet):           decisionJSON,
		events.RegionEventSubject(events.TypeBootDecisionSet):                      decisionJSON,
		events.RackEventSubject(rackB, events.TypeRackRegistered):                  registeredJSON,
		"$JS.API.CONSUMER.DELETE." + events.RackStream + "." + ingest.ConsumerName: nil,
		"$JS.API.CONSUMER.DURABLE.CREATE." + events.RegionStream + ".evil":         []byte(`{"stream_name":"` + events.RegionStream + `","config":{"durable_name":"evil"}}`),
		"$JS.API.CONSUMER.CREATE." + events.RegionStream:                           []byte(`{"stream_name":"` + events.RegionStream + `","config":{}}`),
		"$JS.API.STREAM.DELETE." + events.RegionStream:                             nil,
		events.RegionRPCSubject(rackB, events.MethodPreseed):                       []byte(`{"rack_id":"` + rackB + `","machine_id":"` + onB.id + `"}`),
	}
	for subj, data := range denied {
		if err := enc.Publish(subj, data); err != nil {
			t.Fatal(err)
		}
	}
	for _, subj := range []string{events.RackRPCSubject(rackB, ">"), "rackplane.region.rack." + rackB + ".event.>", ">"} {
		if _, err := enc.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "NATS refusing every act of the hostile rack's client", func() error {
		mu.Lock()
		defer mu.Unlock()
		all := strings.Join(violations, "\n")
		for subj := range denied {
			if !strings.Contains(all, `Permissions Violation for Publish to "`+subj+`"`) {
				return fmt.Errorf("no refusal of a publish to %s in:\n%s", subj, all)
			}
		}
		for _, subj := range []string{events.RackRPCSubject(rackB, ">"), ">"} {
			if !strings.Contains(all, `Permissions Violation for Subscription to "`+subj+`"`) {
				return fmt.Errorf("no refusal of a subscription to %s in:\n%s", subj, all)
			}
		}
		return nil
	})

	// Acts the region refuses: asking about another rack's machine on its
	// own rpc subject, or naming another rack in the body.
	for _, c := range []struct {
		method string
		req    map[string]any
	}{
		{events.MethodPreseed, map[string]any{"rack_id": evil, "machine_id": onB.id, "deployment_id": uuid.NewString()}},
		{events.MethodPreseed, map[string]any{"rack_id": rackB, "machine_id": onB.id}},
		{events.MethodInstallStatus, map[string]any{"rack_id": evil, "machine_id": onB.id, "token": "guess", "result": "failure"}},
		{events.MethodBootDecision, map[string]any{"rack_id": evil, "mac": onB.mac}},
	} {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := rpc.Call(cctx, enc, events.RegionRPCSubject(evil, c.method), c.req, nil)
		cancel()
		if rackplane.ErrorCode(err) != rackplane.EFORBIDDEN {
			t.Errorf("the hostile rack's %s %v: %v, want forbidden", c.method, c.req, err)
		}
	}
	// An event on its own subject that claims to be good-b's.
	if err := enc.Publish(events.RackEventSubject(evil, events.TypeRackRegistered), registeredJSON); err != nil {
		t.Fatal(err)
	}

	// The unauthenticated client on the boot network, at good-b's and
	// dev-rack's HTTP servers.
	get := func(base, p string) int {
		resp, err := http.Get("http://" + base + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		name, rack, path string
		want             int
	}{
		{"no credential", rackBHTTP, "/preseed/" + onB.id, 403},
		{"a guessed credential", rackBHTTP, "/preseed/" + onB.id + "/" + strings.Repeat("A", 43), 403},
		{"good-b's credential at another rack", devRackHTTP, "/preseed/" + onB.id + "/" + credB, 403},
		{"good-b's credential at the hostile rack", evilHTTP, "/preseed/" + onB.id + "/" + credB, 403},
		{"on-b's credential for on-dev, both deploying", devRackHTTP, "/preseed/" + deploys[0].id + "/" + credB, 403},
		{"on-b's credential with more path", rackBHTTP, "/preseed/" + onB.id + "/" + credB + "/x", 404},
	} {
		if got := get(c.rack, c.path); got != c.want {
			t.Errorf("preseed with %s: %d, want %d", c.name, got, c.want)
		}
	}
	if code, _ := postForm(t, "http://"+rackBHTTP+"/status/"+onB.id+"/guess", "result=success"); code != 403 {
		t.Errorf("a report with a guessed token: %d, want 403", code)
	}

	// Every refusal is counted where an operator looks.
	eventually(t, 15*time.Second, "the refusals counted", func() error {
		now := samples(t, a.base)
		for _, s := range []string{
			`rackplane_region_nats_auth_refused_total{reason="no_nkey"}`,
			`rackplane_region_nats_auth_refused_total{reason="key_mismatch"}`,
			`rackplane_region_nats_auth_refused_total{reason="bad_join_token"}`,
			`rackplane_rack_rpc_refused_total{method="preseed",reason="not_the_machines_rack"}`,
			`rackplane_rack_rpc_refused_total{method="preseed",reason="rack_id_not_the_callers"}`,
			`rackplane_rack_rpc_refused_total{method="install_status",reason="not_the_machines_rack"}`,
			`rackplane_rack_rpc_refused_total{method="install_status",reason="wrong_token"}`,
			`rackplane_rack_rpc_refused_total{method="boot_decision",reason="not_the_machines_rack"}`,
			`rackplane_region_events_rejected_total{reason="wrong_subject"}`,
		} {
			if now[s] <= refusedBefore[s] {
				return fmt.Errorf("%s still %v", s, now[s])
			}
		}
		rackSamples := samples(t, "http://"+rackBHTTP)
		for _, s := range []string{
			`rackplane_machine_requests_refused_total{endpoint="preseed",reason="no_credential"}`,
			`rackplane_machine_requests_refused_total{endpoint="preseed",reason="wrong_credential"}`,
		} {
			if rackSamples[s] < 1 {
				return fmt.Errorf("good-b's %s is %v", s, rackSamples[s])
			}
		}
		devSamples := samples(t, "http://"+devRackHTTP)
		for _, reason := range []string{"not_deploying", "wrong_credential"} {
			if s := devSamples[`rackplane_machine_requests_refused_total{endpoint="preseed",reason="`+reason+`"}`]; s < 1 {
				return fmt.Errorf("dev-rack's %s refusals %v", reason, s)
			}
		}
		return nil
	})
	var rejected struct {
		Rejected []struct {
			NATSSubject string `json:"nats_subject"`
			Source      string
			Reason      string
		} `json:"rejected_events"`
	}
	a.call("GET", "/api/v1/rejected-events", nil, nil, &rejected)
	found := false
	for _, r := range rejected.Rejected {
		found = found || (r.NATSSubject == events.RackEventSubject(evil, events.TypeRackRegistered) &&
			r.Source == events.RackSource(rackB) && r.Reason == events.ReasonWrongSubject)
	}
	if !found {
		t.Errorf("the forged rack_registered is not in the rejected events: %+v", rejected.Rejected)
	}

	// Nothing changed: good-b keeps its name and boot URL, its machine's
	// config is the region's, and the region still ingests.
	rs, err := racks(ctx, a.base, a.token)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := rackByName(rs, "good-b"); r.ID != rackB || !r.Online || r.BootURL != "http://"+rackBHTTP {
		t.Errorf("good-b after the attack: %+v", r)
	}
	if _, ok := rackByName(rs, "pwned"); ok {
		t.Error("a rack is named pwned")
	}
	if m := samples(t, a.base); m["rackplane_region_ingest_consumer_restarts_total"] != 0 {
		t.Errorf("the ingest consumer was made again %v times: it was deleted", m["rackplane_region_ingest_consumer_restarts_total"])
	}

	// Both good racks take their machines through the deployment: the
	// installer's preseed is the operator's, its report ends it, and the
	// preseed is served to nobody after.
	for _, d := range deploys {
		p := preseedPathOnRack(t, d.rackHTTP, d.mac, d.id)
		if strings.Contains(p, "evil") {
			t.Fatalf("%s boots %s", d.hostname, p)
		}
		resp, err := http.Get("http://" + d.rackHTTP + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		report := regexp.MustCompile(`# report: (\S+)`).FindSubmatch(body)
		if resp.StatusCode != 200 || !strings.Contains(string(body), "the operator's site preseed of "+d.hostname) || report == nil {
			t.Fatalf("%s's preseed: %d %q", d.hostname, resp.StatusCode, body)
		}
		u, err := url.Parse(string(report[1]))
		if err != nil {
			t.Fatal(err)
		}
		if code, out := postForm(t, "http://"+d.rackHTTP+u.Path, "result=success"); code != 200 || !strings.Contains(out, "deployed") {
			t.Fatalf("%s's report: %d %q", d.hostname, code, out)
		}
		var m struct{ Status string }
		if a.call("GET", "/api/v1/machines/"+d.id, nil, nil, &m); m.Status != "deployed" {
			t.Fatalf("%s is %s after its installer's report", d.hostname, m.Status)
		}
		if code := get(d.rackHTTP, p); code != 403 {
			t.Errorf("%s's preseed after the deployment: %d, want 403", d.hostname, code)
		}
	}
}

// preseedPathOnRack reads the preseed URL's path off the kernel command
// line of the iPXE script a rack serves for mac, waiting for it to be one
// of machineID's deployment.
func preseedPathOnRack(t *testing.T, rackHTTP, mac, machineID string) string {
	t.Helper()
	re := regexp.MustCompile(` url=http://[^/\s]+(/preseed/` + regexp.QuoteMeta(machineID) + `/[A-Za-z0-9_-]{43})\s`)
	var p string
	eventually(t, 15*time.Second, "the install config of "+mac, func() error {
		resp, err := http.Get("http://" + rackHTTP + "/ipxe/" + strings.ReplaceAll(mac, ":", "-") + ".ipxe")
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := re.FindSubmatch(b)
		if m == nil {
			return fmt.Errorf("%s: %q", resp.Status, b)
		}
		p = string(m[1])
		return nil
	})
	return p
}

// lastElem is the last element of a URL path.
func lastElem(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

func postForm(t *testing.T, target, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(target, "application/x-www-form-urlencoded", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// samples reads every sample of a /metrics page, labels and all, as its
// lines name them.
func samples(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

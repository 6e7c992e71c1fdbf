package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/pgtest"
)

func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, name), args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("%s %v: %v\n%s", name, args, err, ee.Stderr)
		}
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(out)
}

// userURL is the server's URL with a user and password in it.
func userURL(ns *natsserver.Test, user, password string) string {
	u, _ := url.Parse(ns.URL)
	u.User = url.UserPassword(user, password)
	return u.String()
}

// permissionedNATS starts a NATS server whose users are "region" (password
// region-pw, no restrictions) and rackUsers, entries as `rackplane
// nats-permissions` prints them. withUser puts a user and password into its
// URL.
func permissionedNATS(t *testing.T, rackUsers ...string) (ns *natsserver.Test, withUser func(user, password string) string) {
	t.Helper()
	conf := fmt.Sprintf("authorization {\n  users = [\n    { user: \"region\", password: \"region-pw\" }\n%s  ]\n}\n",
		strings.Join(rackUsers, ""))
	confFile := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ns = natsserver.StartTestConfig(t, confFile)
	return ns, func(user, password string) string { return userURL(ns, user, password) }
}

// TestRacksConfinedByNATSPermissions runs a region and two racks on a NATS
// server whose users are exactly what `rackplane nats-permissions` prints:
// rack-a with a password, rack-b with an nkey. The racks do all their work
// (join, report, answer live queries and rpc, import an image, get the
// region's boot decisions, proxy a preseed) without one permission
// violation, while a client holding rack-a's credentials can neither
// publish as rack-b, read rack-b's rpc, forge region events nor read other
// racks' events from JetStream.
func TestRacksConfinedByNATSPermissions(t *testing.T) {
	endToEnd(t)
	ctx := context.Background()
	dirA, dirB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	idA := strings.TrimSpace(output(t, "rackd", "-print-id", "-data-dir", dirA))
	idB := strings.TrimSpace(output(t, "rackd", "-print-id", "-data-dir", dirB))
	if idA == idB || len(idA) != 36 {
		t.Fatalf("rack ids %q %q", idA, idB)
	}
	if again := strings.TrimSpace(output(t, "rackd", "-print-id", "-data-dir", dirA)); again != idA {
		t.Fatalf("-print-id gave %s, then %s", idA, again)
	}

	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	pubB, _ := kp.PublicKey()
	seedFile := filepath.Join(t.TempDir(), "rack-b.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	ns, withUser := permissionedNATS(t,
		output(t, "rackplane", "nats-permissions", "-user", "rack-a", "-password", "rack-a-pw", idA),
		output(t, "rackplane", "nats-permissions", "-nkey", pubB, idB))

	dbURL := pgtest.NewDatabase(t)
	regionAddr := freeAddr(t)
	region := start(t, "regiond", "-no-nats-callout", "-nats-url", withUser("region", "region-pw"), "-database-url", dbURL, "-http-addr", regionAddr)
	a := api{t: t, base: "http://" + regionAddr, token: token(t, dbURL)}
	rackHTTP := freeAddr(t)
	rackA := start(t, "rackd", "-nats-url", withUser("rack-a", "rack-a-pw"), "-data-dir", dirA, "-name", "rack-a",
		"-http-addr", rackHTTP, "-tftp-addr", freeUDPAddr(t), "-boot-url", "http://"+rackHTTP,
		"-import-system-bootloaders=false", "-heartbeat-interval", "1s")
	rackB := start(t, "rackd", "-nats-url", ns.URL, "-nats-nkey", seedFile, "-data-dir", dirB, "-name", "rack-b",
		"-http-addr", freeAddr(t), "-tftp-addr", freeUDPAddr(t), "-import-system-bootloaders=false", "-heartbeat-interval", "1s")
	eventually(t, 15*time.Second, "both racks online under their ids", func() error {
		rs, err := racks(ctx, a.base, a.token)
		if err != nil {
			return err
		}
		ra, okA := rackByName(rs, "rack-a")
		rb, okB := rackByName(rs, "rack-b")
		if !okA || !okB || !ra.Online || !rb.Online || ra.ID != idA || rb.ID != idB {
			return fmt.Errorf("racks %+v", rs)
		}
		return nil
	})

	// rpc to one rack and JetStream acks: an image import into rack-a.
	src := bookwormSource(t, []byte("kernel of rack-a"), []byte("initrd of rack-a"))
	if code := a.call("POST", "/api/v1/racks/"+idA+"/images/imports", nil, map[string]string{"dir": src}, nil); code != 202 {
		t.Fatalf("import into rack-a: %d", code)
	}
	// Scatter-gather: both racks answer a live query; and rack-a's new
	// snapshot came through its event stream into the registry.
	eventually(t, 15*time.Second, "rack-a's image in the live answer of both racks and in the registry", func() error {
		var l struct {
			OSes []struct {
				OS, Release string
				Racks       []struct{ ID string }
			}
			NotAnswered []any `json:"not_answered"`
		}
		if code := a.call("GET", "/api/v1/os?live=true", nil, nil, &l); code != 200 {
			return fmt.Errorf("live query: %d", code)
		}
		if len(l.NotAnswered) != 0 || len(l.OSes) != 1 || len(l.OSes[0].Racks) != 1 || l.OSes[0].Racks[0].ID != idA {
			return fmt.Errorf("live answer %+v", l)
		}
		l.OSes = nil
		a.call("GET", "/api/v1/os", nil, nil, &l)
		if len(l.OSes) != 1 || len(l.OSes[0].Racks) != 1 || l.OSes[0].Racks[0].ID != idA {
			return fmt.Errorf("registry %+v", l)
		}
		return nil
	})

	// Region events reach the rack: a deployment's boot decision renders
	// into rack-a's iPXE script, and the installer's preseed comes through
	// rack-a's rpc to the region.
	const mac = "52:54:00:ee:00:01"
	var m struct{ ID string }
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "confined", "macs": []string{mac}}, &m); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	if code := a.call("POST", "/api/v1/preseeds", nil, map[string]any{"name": "p", "content": "preseed of {{.Machine.Hostname}}\n"}, nil); code != 201 {
		t.Fatalf("create preseed: %d", code)
	}
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/deploy", nil, map[string]any{"os": "debian", "release": "bookworm"}, nil); code != 200 {
		t.Fatalf("deploy: %d", code)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + rackHTTP + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var preseedPath string
	eventually(t, 15*time.Second, "rack-a boots the machine into the installer", func() error {
		code, body := get("/ipxe/" + strings.ReplaceAll(mac, ":", "-") + ".ipxe")
		sm := regexp.MustCompile(` url=http://[^/\s]+(/preseed/` + m.ID + `/\S+)`).FindStringSubmatch(body)
		if code != 200 || sm == nil {
			return fmt.Errorf("iPXE script: %d %q", code, body)
		}
		preseedPath = sm[1]
		return nil
	})
	if code, body := get(preseedPath); code != 200 || body != "preseed of confined\n" {
		t.Fatalf("preseed through rack-a: %d %q", code, body)
	}

	// A client with rack-a's credentials, as a compromised rack would be.
	var mu sync.Mutex
	var violations []string
	nc, err := nats.Connect(withUser("rack-a", "rack-a-pw"), nats.CustomInboxPrefix(events.RackInboxPrefix(idA)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			violations = append(violations, err.Error())
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// It still reaches its own rack: the refusals below are permissions,
	// not a broken connection.
	if _, err := nc.Request(events.RackRPCSubject(idA, "info"), []byte(`{}`), 5*time.Second); err != nil {
		t.Fatalf("rack-a's own info rpc: %v", err)
	}
	forged, err := events.New(events.RackSource(idB), events.TypeRackRegistered, events.RackStreamName(idB), time.Now(),
		map[string]any{"name": "forged"})
	if err != nil {
		t.Fatal(err)
	}
	forgedJSON, _ := json.Marshal(forged)
	attempts := []struct {
		what, subject string
		do            func() error
	}{
		{"publish as rack-b", events.RackEventSubject(idB, events.TypeRackRegistered), func() error {
			return nc.Publish(events.RackEventSubject(idB, events.TypeRackRegistered), forgedJSON)
		}},
		{"forge a region event", events.RegionEventSubject(events.TypeMachineReleased), func() error {
			return nc.Publish(events.RegionEventSubject(events.TypeMachineReleased), []byte(`{}`))
		}},
		{"listen to rack-b's rpc", events.RackRPCSubject(idB, "info"), func() error {
			_, err := nc.Subscribe(events.RackRPCSubject(idB, ">"), func(*nats.Msg) {})
			return err
		}},
		{"read every client's replies", "_INBOX.>", func() error {
			_, err := nc.Subscribe("_INBOX.>", func(*nats.Msg) {})
			return err
		}},
		{"ask the region as rack-b", events.RegionRPCSubject(idB, events.MethodPreseed), func() error {
			return nc.PublishRequest(events.RegionRPCSubject(idB, events.MethodPreseed), events.RackInboxPrefix(idA)+".x",
				[]byte(`{"rack_id":"`+idB+`","machine_id":"`+m.ID+`"}`))
		}},
		{"read rack-b's boot decisions", events.RegionRackEventSubject(idB, events.TypeBootDecisionSet), func() error {
			_, err := nc.Subscribe(events.RegionRackEventSubject(idB, events.TypeBootDecisionSet), func(*nats.Msg) {})
			return err
		}},
		{"create a consumer of its own", "$JS.API.CONSUMER.CREATE." + events.RegionStream, func() error {
			return nc.PublishRequest("$JS.API.CONSUMER.CREATE."+events.RegionStream+".mine", events.RackInboxPrefix(idA)+".y", []byte(`{}`))
		}},
		{"delete the region's consumer", "$JS.API.CONSUMER.DELETE." + events.RegionStream, func() error {
			return nc.PublishRequest("$JS.API.CONSUMER.DELETE."+events.RegionStream+"."+events.RackConsumerName(idA, events.FollowBoot), events.RackInboxPrefix(idA)+".z", nil)
		}},
		{"read rack-b's consumer", "$JS.API.CONSUMER.MSG.NEXT." + events.RegionStream + "." + events.RackConsumerName(idB, events.FollowBoot), func() error {
			return nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+events.RegionStream+"."+events.RackConsumerName(idB, events.FollowBoot), events.RackInboxPrefix(idA)+".w", []byte(`{"batch":1}`))
		}},
	}
	for _, at := range attempts {
		if err := at.do(); err != nil {
			t.Fatalf("%s: %v", at.what, err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a permissions violation for every attempt", func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, at := range attempts {
			found := false
			for _, v := range violations {
				if strings.Contains(strings.ToLower(v), "permissions violation") && strings.Contains(v, `"`+strings.TrimSuffix(at.subject, "info")) {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("no violation for %q (%s) among %q", at.what, at.subject, violations)
			}
		}
		return nil
	})
	// Asking as itself about a machine of another rack gets nothing: the
	// machine deploys from rack-a, so as rack-b's credentials would, and
	// a body naming the right rack does not help.
	var reply struct {
		Error *struct{ Code string }
	}
	if msg, err := nc.Request(events.RegionRPCSubject(idA, events.MethodSubnets), []byte(`{"rack_id":"`+idB+`"}`), 5*time.Second); err != nil {
		t.Fatalf("rack-a asking for rack-b's subnets: %v", err)
	} else if json.Unmarshal(msg.Data, &reply); reply.Error == nil || reply.Error.Code != "forbidden" {
		t.Fatalf("rack-a asking for rack-b's subnets: %s", msg.Data)
	}
	// Nor can it ask rack-b anything, or read the rack events stream.
	if _, err := nc.Request(events.RackRPCSubject(idB, "info"), []byte(`{}`), time.Second); err == nil {
		t.Fatal("rack-a's credentials got an answer from rack-b's rpc")
	}
	js, _ := jetstream.New(nc)
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = js.OrderedConsumer(cctx, events.RackStream, jetstream.OrderedConsumerConfig{})
	cancel()
	if err == nil {
		t.Fatal("rack-a's credentials made a consumer of every rack's events")
	}
	var evs struct{ Events []struct{ ID string } }
	a.call("GET", "/api/v1/events?limit=1000&stream="+events.RackStreamName(idB), nil, nil, &evs)
	for _, e := range evs.Events {
		if e.ID == forged.ID {
			t.Fatal("the event forged for rack-b is in the region's log")
		}
	}

	// And the real processes did their work without one refusal.
	for _, p := range []*proc{region, rackA, rackB} {
		if out := p.Output(); strings.Contains(strings.ToLower(out), "permissions violation") || strings.Contains(out, "Authorization Violation") {
			t.Fatalf("%s hit a NATS refusal:\n%s", p.name, tail(out, 30))
		}
	}
}

// TestRackWaitsForItsNATSCredentials starts a rack whose NATS user does not
// exist yet: it says why it cannot connect, once, and keeps trying, so when
// the operator adds the user and reloads the server it joins by itself.
func TestRackWaitsForItsNATSCredentials(t *testing.T) {
	endToEnd(t)
	dir := filepath.Join(t.TempDir(), "rack")
	id := strings.TrimSpace(output(t, "rackd", "-print-id", "-data-dir", dir))
	confFile := filepath.Join(t.TempDir(), "nats.conf")
	users := "    { user: \"region\", password: \"region-pw\" }\n"
	write := func(users string) {
		if err := os.WriteFile(confFile, []byte("authorization {\n  users = [\n"+users+"  ]\n}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(users)
	ns := natsserver.StartTestConfig(t, confFile)
	withUser := func(user, password string) string { return userURL(ns, user, password) }
	dbURL := pgtest.NewDatabase(t)
	regionAddr := freeAddr(t)
	start(t, "regiond", "-no-nats-callout", "-nats-url", withUser("region", "region-pw"), "-database-url", dbURL, "-http-addr", regionAddr)
	a := api{t: t, base: "http://" + regionAddr, token: token(t, dbURL)}
	rack := start(t, "rackd", "-nats-url", withUser("late", "late-pw"), "-data-dir", dir, "-name", "late",
		"-http-addr", freeAddr(t), "-tftp-addr", freeUDPAddr(t), "-import-system-bootloaders=false", "-heartbeat-interval", "1s")
	eventually(t, 10*time.Second, "the rack saying why it cannot connect", func() error {
		if !strings.Contains(rack.Output(), "Authorization Violation") {
			return errors.New("no authorization error in its log")
		}
		return nil
	})
	// Let it be refused several more times (it retries every 250 ms or
	// so): a client that gave up after two refusals would stay out.
	time.Sleep(1500 * time.Millisecond)
	if _, err := nats.Connect(ns.URL, nats.UserInfo("late", "late-pw")); err == nil {
		t.Fatal("the server let in a user it does not have")
	}
	write(users + output(t, "rackplane", "nats-permissions", "-user", "late", "-password", "late-pw", id))
	ns.Reload()
	eventually(t, 15*time.Second, "the rack online once its user exists", func() error {
		rs, err := racks(context.Background(), a.base, a.token)
		if r, ok := rackByName(rs, "late"); err != nil || !ok || !r.Online || r.ID != id {
			return fmt.Errorf("racks %+v %v", rs, err)
		}
		return nil
	})
	if n := strings.Count(rack.Output(), "Authorization Violation"); n != 1 {
		t.Fatalf("the refused user took %d log lines, want 1:\n%s", n, tail(rack.Output(), 30))
	}
}

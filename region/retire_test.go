package region_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// retireOut is DELETE /api/v1/racks/{id}'s answer, or its error.
type retireOut struct {
	RackID           string    `json:"rack_id"`
	Name             string    `json:"name"`
	RetiredAt        time.Time `json:"retired_at"`
	RetiredBy        string    `json:"retired_by"`
	AlreadyRetired   bool      `json:"already_retired"`
	ConsumersDeleted int       `json:"consumers_deleted"`
	Warning          string    `json:"warning"`
	Credential       *struct {
		NKey      string     `json:"nkey"`
		RevokedAt *time.Time `json:"revoked_at"`
	} `json:"credential"`
	Error struct{ Code, Message string }
}

type rackList struct {
	Racks []rackplane.Rack `json:"racks"`
}

func (h *harness) rackNames(query string) []string {
	h.t.Helper()
	var l rackList
	if code := h.getJSON("/api/v1/racks"+query, &l); code != 200 {
		h.t.Fatalf("GET /api/v1/racks%s: %d", query, code)
	}
	var names []string
	for _, r := range l.Racks {
		state := "offline"
		if r.Online {
			state = "online"
		}
		names = append(names, r.Name+":"+state)
	}
	return names
}

// TestRetireRack: an operator retires a rack through the API. It is
// refused, with the reason, while the rack is online and while machines
// or subnets depend on it (each named); once it is offline and unused it
// is retired: gone from the list (and from the liveness monitor, the OS
// registry and its consumers of the region stream), its credential
// refused, an event and an audit entry saying who did it. Online racks
// are listed first, so the first rack of the list is one that answers.
func TestRetireRack(t *testing.T) {
	h := startRegion(t)
	ctx := context.Background()
	db := postgres.New(h.pool, testLogger())
	const interval = 200 * time.Millisecond
	dirA := filepath.Join(t.TempDir(), "rack-a")
	rackA, stopA := startRack(t, h, dirA, interval)
	rackB, _ := startRack(t, h, filepath.Join(t.TempDir(), "rack-b"), interval)
	a, b := rackA.ID(), rackB.ID()
	h.eventually(10*time.Second, "both racks online", func() error {
		if got := strings.Join(h.rackNames(""), " "); got != "rack-a:online rack-b:online" {
			return fmt.Errorf("racks %s", got)
		}
		return nil
	})
	// The callout would have bound rack-a to its key when it joined; this
	// region runs without one, so the binding is made here.
	kp, _ := nkeys.CreateUser()
	nkey, _ := kp.PublicKey()
	if _, err := db.AdmitRack(ctx, a, nkey, freshJoinToken(t, db), time.Now()); err != nil {
		t.Fatal(err)
	}

	retire := func(id string) (int, retireOut) {
		var out retireOut
		code := h.do("DELETE", "/api/v1/racks/"+id, nil, &out)
		return code, out
	}
	if code, out := retire(a); code != 409 || out.Error.Code != rackplane.ECONFLICT ||
		!strings.Contains(out.Error.Message, "rack-a ("+a+")") || !strings.Contains(out.Error.Message, "stop its rackd first") {
		t.Fatalf("retire an online rack: %d %+v", code, out)
	}

	// What depends on rack-a: a machine that boots from it, one powered
	// through it, a subnet it serves.
	var n1, n2 machineOut
	if code := h.do("POST", "/api/v1/machines", map[string]any{"hostname": "n1", "macs": []string{"52:54:00:aa:00:01"}, "boot_rack_id": a}, &n1); code != 201 {
		t.Fatalf("create n1: %d", code)
	}
	if code := h.do("POST", "/api/v1/machines", map[string]any{"hostname": "n2", "macs": []string{"52:54:00:aa:00:02"}, "boot_rack_id": b}, &n2); code != 201 {
		t.Fatalf("create n2: %d", code)
	}
	if code := h.do("PUT", "/api/v1/machines/"+n2.ID+"/power", map[string]any{"driver": "ipmi", "address": "10.9.0.2", "rack_id": a}, nil); code != 200 {
		t.Fatalf("n2's power parameters: %d", code)
	}
	var subnet struct{ ID string }
	if code := h.do("POST", "/api/v1/subnets", map[string]any{"rack_id": a, "cidr": "10.50.0.0/24", "interface": "rpnone0",
		"ranges": []map[string]string{{"start": "10.50.0.100", "end": "10.50.0.199"}}}, &subnet); code != 201 {
		t.Fatalf("create subnet: %d", code)
	}

	stopA()
	h.eventually(10*time.Second, "rack-a offline, listed after the online rack-b", func() error {
		if got := strings.Join(h.rackNames(""), " "); got != "rack-b:online rack-a:offline" {
			return fmt.Errorf("racks %s", got)
		}
		return nil
	})
	for _, step := range []struct {
		name      string
		says, not []string
		undo      func()
	}{
		{"machines and a subnet", []string{"2 machines depend on it: n1 (boots from it), n2 (powered through it)", "1 subnet is served by it: 10.50.0.0/24"}, nil,
			func() {
				if code := h.do("PATCH", "/api/v1/machines/"+n1.ID, map[string]any{"boot_rack_id": b}, nil); code != 200 {
					t.Fatalf("move n1: %d", code)
				}
			}},
		{"n2 and the subnet", []string{"1 machine depends on it: n2 (powered through it)", "10.50.0.0/24"}, []string{"n1"},
			func() {
				if code := h.do("DELETE", "/api/v1/subnets/"+subnet.ID, nil, nil); code != 200 && code != 204 {
					t.Fatalf("delete the subnet: %d", code)
				}
			}},
		{"n2", []string{"n2 (powered through it)"}, []string{"10.50.0.0/24"},
			func() {
				if code := h.do("DELETE", "/api/v1/machines/"+n2.ID+"/power", nil, nil); code != 200 && code != 204 {
					t.Fatalf("clear n2's power parameters: %d", code)
				}
			}},
	} {
		code, out := retire(a)
		if code != 409 || !strings.Contains(out.Error.Message, "rack-a ("+a+") is still in use") {
			t.Fatalf("%s: retire: %d %+v", step.name, code, out)
		}
		for _, s := range step.says {
			if !strings.Contains(out.Error.Message, s) {
				t.Errorf("%s: the refusal %q does not say %q", step.name, out.Error.Message, s)
			}
		}
		for _, s := range step.not {
			if strings.Contains(out.Error.Message, s) {
				t.Errorf("%s: the refusal %q still names %q", step.name, out.Error.Message, s)
			}
		}
		step.undo()
	}

	consumers := func() []string {
		var names []string
		for _, p := range events.FollowPurposes {
			name := events.RackConsumerName(a, p)
			if _, err := h.js.Consumer(ctx, events.RegionStream, name); err == nil {
				names = append(names, name)
			} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
				t.Fatal(err)
			}
		}
		return names
	}
	followed := consumers()
	if len(followed) == 0 {
		t.Fatal("rack-a made no consumer of the region stream")
	}

	code, out := retire(a)
	if code != 200 || out.RackID != a || out.Name != "rack-a" || out.RetiredBy != "tester" || out.AlreadyRetired ||
		out.Credential == nil || out.Credential.NKey != nkey || out.Credential.RevokedAt == nil ||
		out.ConsumersDeleted != len(followed) || !strings.Contains(out.Warning, "-no-nats-callout") {
		t.Fatalf("retire: %d %+v (consumers before: %v)", code, out, followed)
	}
	if left := consumers(); len(left) > 0 {
		t.Errorf("consumers left: %v", left)
	}
	if got := h.rackNames(""); strings.Join(got, " ") != "rack-b:online" {
		t.Errorf("racks after the retirement: %v", got)
	}
	if got := h.rackNames("?retired=true"); strings.Join(got, " ") != "rack-a:offline" {
		t.Errorf("retired racks: %v", got)
	}
	if got, code := h.rack(a); code != 200 || got.RetiredAt == nil || got.RetiredBy != "tester" {
		t.Errorf("GET the retired rack: %d %+v", code, got)
	}
	var refused *postgres.RackRefused
	if _, err := db.AdmitRack(ctx, a, nkey, "", time.Now()); !errors.As(err, &refused) || refused.Reason != postgres.RefusedRevoked {
		t.Errorf("the retired rack's credential: %v, want refused as revoked", err)
	}
	var page struct{ Events []events.Event }
	h.getJSON("/api/v1/events?"+url.Values{"stream": {events.RackStreamName(a)}, "limit": {"1000"}}.Encode(), &page)
	var types []string
	for _, e := range page.Events {
		if e.Type == events.TypeRackRevoked || e.Type == events.TypeRackRetired {
			types = append(types, e.Type+" by "+e.Actor)
			if err := regiontest.Validator(t).Validate(e); err != nil {
				t.Errorf("%s does not validate: %v", e.Type, err)
			}
		}
	}
	if strings.Join(types, ", ") != events.TypeRackRevoked+" by tester, "+events.TypeRackRetired+" by tester" {
		t.Errorf("the rack's stream: %v", types)
	}
	var audit struct {
		Entries []struct{ Actor, Action, Outcome string }
	}
	h.getJSON("/api/v1/audit?"+url.Values{"target": {events.RackStreamName(a)}, "action": {"DELETE /api/v1/racks/{id}"}}.Encode(), &audit)
	var outcomes []string
	for _, e := range audit.Entries {
		outcomes = append(outcomes, e.Actor+":"+e.Outcome)
	}
	if strings.Join(outcomes, " ") != "tester:failure tester:failure tester:failure tester:failure tester:success" {
		t.Errorf("audit of the retirement: %v", outcomes)
	}

	for _, c := range []struct {
		name, id string
		code     int
	}{
		{"again", a, 200}, {"an unknown rack", uuid.NewString(), 404}, {"not a UUID", "rack-a", 400},
	} {
		code, out := retire(c.id)
		if code != c.code || c.code == 200 && !out.AlreadyRetired {
			t.Errorf("retire %s: %d %+v, want %d", c.name, code, out, c.code)
		}
	}
	if code := h.do("PATCH", "/api/v1/machines/"+n1.ID, map[string]any{"boot_rack_id": a}, nil); code != 400 {
		t.Errorf("move a machine to the retired rack: %d, want 400", code)
	}

	// On this open NATS server nothing keeps the retired rack off: it
	// comes back and registers, and stays retired (not listed, not
	// online), through a rebuild of the projections too.
	_, _ = startRack(t, h, dirA, interval)
	registrations := func() int {
		n := 0
		for _, e := range regiontest.StreamEvents(t, db, events.RackStreamName(a)) {
			if e.Type == events.TypeRackRegistered {
				n++
			}
		}
		return n
	}
	before := registrations()
	h.eventually(10*time.Second, "the retired rack's registration logged", func() error {
		if n := registrations(); n <= before {
			return fmt.Errorf("%d registrations", n)
		}
		return nil
	})
	time.Sleep(5 * interval) // time for the liveness monitor to think it back online
	if _, err := db.RebuildProjections(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.rackNames(""); strings.Join(got, " ") != "rack-b:online" {
		t.Errorf("racks once the retired rack came back: %v", got)
	}
	if got, _ := h.rack(a); got.Online || got.RetiredAt == nil {
		t.Errorf("the retired rack came back as %+v", got)
	}
}

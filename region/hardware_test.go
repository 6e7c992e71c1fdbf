package region_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
)

// inventoryOf is a commissioned machine's inventory: cores and threads,
// memory in GiB (installed), disks of the sizes given in GiB (sda, sdb,
// ...) and one NIC with mac.
func inventoryOf(arch string, cores int, memGiB int64, mac string, diskGiB ...int64) events.Inventory {
	inv := events.Inventory{
		CollectedAt: time.Now().UTC().Truncate(time.Millisecond), AgentVersion: "0.1.0", Architecture: arch,
		CPU:      events.InventoryCPU{Model: "Test CPU", Sockets: 1, Cores: cores, Threads: 2 * cores, Flags: []string{"lm"}},
		Memory:   events.InventoryMemory{TotalBytes: memGiB<<30 - 64<<20, InstalledBytes: memGiB << 30, InstalledSource: events.MemorySMBIOS},
		Disks:    []events.InventoryDisk{},
		NICs:     []events.InventoryNIC{{Name: "eno1", MAC: mac, Driver: "e1000", Link: events.LinkUp, Boot: true}},
		Firmware: events.InventoryFirmware{Type: events.FirmwareUEFI},
	}
	for i, g := range diskGiB {
		inv.Disks = append(inv.Disks, events.InventoryDisk{Name: fmt.Sprintf("sd%c", 'a'+i), SizeBytes: g << 30,
			Serial: fmt.Sprintf("SN%s%d", strings.ReplaceAll(mac, ":", ""), i)})
	}
	return inv
}

// report publishes an inventory_reported event as rack rackID would, on
// its own subject, and returns it.
func (h *harness) report(rackID, machineID string, inv events.Inventory) events.Event {
	h.t.Helper()
	ev, err := events.New(events.RackSource(rackID), events.TypeInventoryReported, events.MachineStreamName(machineID), time.Now(),
		events.InventoryReported{MachineID: machineID, OperationID: "op-" + machineID[:8], Inventory: inv})
	if err != nil {
		h.t.Fatal(err)
	}
	h.publishRaw(rackID, ev)
	return ev
}

func (h *harness) publishRaw(rackID string, ev events.Event) {
	h.t.Helper()
	raw, err := events.Encode(ev)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.js.Publish(context.Background(), events.RackEventSubject(rackID, ev.Type), raw); err != nil {
		h.t.Fatal(err)
	}
}

// logged waits until the event is in the log, so that what it changed
// is in the projections.
func (h *harness) logged(id string) {
	h.t.Helper()
	h.eventually(10*time.Second, "event "+id+" in the log", func() error {
		var n int
		if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE id = $1`, id).Scan(&n); err != nil || n != 1 {
			return fmt.Errorf("%d (%v)", n, err)
		}
		return nil
	})
}

type hardwareOut struct {
	MachineID   string                   `json:"machine_id"`
	RackID      string                   `json:"rack_id"`
	OperationID string                   `json:"operation_id"`
	ReportedAt  time.Time                `json:"reported_at"`
	Summary     postgres.HardwareFigures `json:"summary"`
	Inventory   events.Inventory         `json:"inventory"`
}

type historyOut struct {
	Reports []struct {
		EventID string                   `json:"event_id"`
		First   bool                     `json:"first"`
		Stale   bool                     `json:"stale"`
		Summary postgres.HardwareFigures `json:"summary"`
		Diff    map[string]any           `json:"diff"`
	} `json:"reports"`
}

// TestMachineHardware: racks' inventory reports become machines'
// hardware, its history with what changed, the machines' summary and
// filters; a malformed inventory is refused whole and a report for a
// machine the region does not have changes nothing; a machine's deletion
// takes its hardware; a rebuild gives the same tables.
func TestMachineHardware(t *testing.T) {
	h := startRegion(t)
	rackA, rackB := uuid.NewString(), uuid.NewString()
	big := h.newMachine("big", "52:54:00:aa:01:01")
	small := h.newMachine("small", "52:54:00:aa:01:02")
	arm := h.newMachine("arm", "52:54:00:aa:01:03")
	bare := h.newMachine("bare", "52:54:00:aa:01:04")

	// Never commissioned: a clear 404, and no summary.
	var e apiError
	if code := h.getJSON("/api/v1/machines/"+bare.ID+"/hardware", &e); code != 404 || !strings.Contains(e.Error.Message, "never commissioned") {
		t.Fatalf("hardware of a machine never commissioned: %d %+v", code, e)
	}
	if code := h.getJSON("/api/v1/machines/"+uuid.NewString()+"/hardware", &e); code != 404 || !strings.Contains(e.Error.Message, "no machine") {
		t.Fatalf("hardware of no machine: %d %+v", code, e)
	}

	first := inventoryOf("amd64", 32, 256, "52:54:00:aa:01:01", 960, 960, 4000)
	h.report(rackA, big.ID, first)
	h.report(rackA, small.ID, inventoryOf("amd64", 4, 8, "52:54:00:aa:01:02", 240))
	last := h.report(rackB, arm.ID, inventoryOf("arm64", 64, 128, "52:54:00:aa:01:03", 1920, 1920))
	h.logged(last.ID)

	var hw hardwareOut
	if code := h.getJSON("/api/v1/machines/"+big.ID+"/hardware", &hw); code != 200 {
		t.Fatalf("hardware: %d", code)
	}
	want := postgres.HardwareFigures{Arch: "amd64", CPUModel: "Test CPU", Sockets: 1, Cores: 32, Threads: 64, MemoryBytes: 256 << 30,
		MemoryTotalBytes: 256<<30 - 64<<20, Disks: 3, DiskBytes: 5920 << 30, LargestDiskBytes: 4000 << 30, NICs: 1, Firmware: "uefi"}
	if hw.Summary != want || hw.RackID != rackA || hw.OperationID != "op-"+big.ID[:8] || len(hw.Inventory.Disks) != 3 ||
		!hw.Inventory.CollectedAt.Equal(first.CollectedAt) {
		t.Fatalf("hardware: %+v\nwant summary %+v", hw, want)
	}
	var m rackplane.Machine
	h.getJSON("/api/v1/machines/"+big.ID, &m)
	if m.Hardware == nil || *m.Hardware != (rackplane.HardwareSummary{Cores: 32, Threads: 64, MemoryBytes: 256 << 30, Disks: 3,
		DiskBytes: 5920 << 30, Firmware: "uefi"}) || m.Tags == nil || len(m.Tags) != 0 {
		t.Fatalf("machine: hardware %+v tags %#v", m.Hardware, m.Tags)
	}
	// A report is no change of the machine: its version stays.
	if m.Version != big.Version {
		t.Errorf("version %d after a report, was %d", m.Version, big.Version)
	}
	var bareOut rackplane.Machine
	h.getJSON("/api/v1/machines/"+bare.ID, &bareOut)
	if bareOut.Hardware != nil {
		t.Errorf("machine never commissioned has hardware %+v", m.Hardware)
	}

	// A second report: one disk gone, memory halved, from another rack.
	second := inventoryOf("amd64", 32, 128, "52:54:00:aa:01:01", 960, 960, 4000)
	second.Disks = slices.Delete(second.Disks, 1, 2)
	ev := h.report(rackB, big.ID, second)
	h.logged(ev.ID)
	var hist historyOut
	if code := h.getJSON("/api/v1/machines/"+big.ID+"/hardware/history", &hist); code != 200 || len(hist.Reports) != 2 {
		t.Fatalf("history: %d %+v", code, hist)
	}
	newest, oldest := hist.Reports[0], hist.Reports[1]
	if newest.EventID != ev.ID || newest.First || newest.Stale || !oldest.First || len(oldest.Diff) != 0 {
		t.Fatalf("history order or flags: %+v", hist.Reports)
	}
	diff, _ := json.Marshal(newest.Diff)
	wantDiff := fmt.Sprintf(`{"disks_removed":[{"name":"sdb","serial":"SN525400aa01011","size_bytes":%d}],"memory":{"from_bytes":%d,"to_bytes":%d}}`,
		int64(960)<<30, int64(256)<<30, int64(128)<<30)
	if string(diff) != wantDiff {
		t.Fatalf("diff:\n%s\nwant\n%s", diff, wantDiff)
	}
	h.getJSON("/api/v1/machines/"+big.ID+"/hardware", &hw)
	if hw.RackID != rackB || hw.Summary.Disks != 2 || hw.Summary.MemoryBytes != 128<<30 {
		t.Fatalf("hardware after the second report: %+v", hw.Summary)
	}

	// A report collected before the current one is recorded, not applied.
	old := inventoryOf("amd64", 16, 64, "52:54:00:aa:01:01", 100)
	old.CollectedAt = first.CollectedAt.Add(-time.Hour)
	ev = h.report(rackA, big.ID, old)
	h.logged(ev.ID)
	hist = historyOut{}
	h.getJSON("/api/v1/machines/"+big.ID+"/hardware/history", &hist)
	if len(hist.Reports) != 3 || !hist.Reports[0].Stale || len(hist.Reports[0].Diff) != 0 {
		t.Fatalf("stale report: %+v", hist.Reports)
	}
	if hw = (hardwareOut{}); h.getJSON("/api/v1/machines/"+big.ID+"/hardware", &hw) != 200 || hw.Summary.Cores != 32 {
		t.Fatalf("a stale report replaced the inventory: %+v", hw.Summary)
	}

	// Malformed: passes the schema, breaks Inventory.Check (two disks
	// named sda). Refused whole, recorded and counted; nothing applied.
	bad := inventoryOf("amd64", 2, 4, "52:54:00:aa:01:02", 10, 20)
	bad.Disks[1].Name = "sda"
	badEv, _ := events.New(events.RackSource(rackA), events.TypeInventoryReported, events.MachineStreamName(small.ID), time.Now(),
		events.InventoryReported{MachineID: small.ID, Inventory: bad})
	h.publishRaw(rackA, badEv)
	// And one that breaks the schema (threads missing).
	raw, _ := events.Encode(badEv)
	broken := strings.Replace(string(raw), `"threads":4,`, ``, 1)
	broken = strings.Replace(broken, badEv.ID, uuid.NewString(), 1)
	if broken == string(raw) {
		t.Fatal("could not break the event")
	}
	if _, err := h.js.Publish(context.Background(), events.RackEventSubject(rackA, events.TypeInventoryReported), []byte(broken)); err != nil {
		t.Fatal(err)
	}
	// A report for a machine the region does not have: logged, no rows.
	stranger := h.report(rackA, uuid.NewString(), inventoryOf("amd64", 2, 4, "52:54:00:aa:01:09", 10))
	h.logged(stranger.ID)
	h.eventually(10*time.Second, "malformed inventories refused", func() error {
		var rej rejectedList
		h.getJSON("/api/v1/rejected-events", &rej)
		n := 0
		for _, r := range rej.Rejected {
			if r.Reason == events.ReasonSchema && strings.Contains(r.NATSSubject, "inventory_reported") {
				n++
			}
		}
		if n != 2 {
			return fmt.Errorf("%d refused: %+v", n, rej.Rejected)
		}
		return nil
	})
	if hw = (hardwareOut{}); h.getJSON("/api/v1/machines/"+small.ID+"/hardware", &hw) != 200 || hw.Summary.Cores != 4 || hw.Summary.Disks != 1 {
		t.Fatalf("a refused inventory changed the hardware: %+v", hw.Summary)
	}
	if n := h.metric(`rackplane_region_events_rejected_total{reason="schema"}`); n != 2 {
		t.Errorf("schema rejections counted: %v, want 2", n)
	}
	var rows int
	h.pool.QueryRow(context.Background(), `SELECT count(*) FROM machine_hardware_history`).Scan(&rows)
	if rows != 5 {
		t.Errorf("history rows %d, want 5 (big 3, small 1, arm 1)", rows)
	}

	// Tags, then filters.
	h.setTags(big.ID, 200, "gpu", "rack4")
	h.setTags(arm.ID, 200, "gpu")
	for _, tt := range []struct {
		query string
		want  string // hostnames; or what the error says, " | " between parts
		code  int
	}{
		{"", "arm big small bare", 200},
		{"arch=amd64", "big small bare", 200},
		{"arch=arm64", "arm", 200},
		{"min_cores=32", "arm big", 200},
		{"min_cores=33", "arm", 200},
		{"min_memory=128GiB", "arm big", 200},
		{"min_memory=137438953473", "", 200}, // one byte over 128 GiB
		{"min_memory=8G", "arm big small", 200},
		{"min_disks=2", "arm big", 200},
		{"min_disk_size=3TB", "big", 200},
		{"min_disk_size=1.5TiB", "arm big", 200},
		{"tag=gpu", "arm big", 200},
		{"tag=gpu&tag=rack4", "big", 200},
		{"tag=gpu&min_cores=64", "arm", 200},
		{"tag=nothing", "", 200},
		{"status=ready&min_disks=1&arch=amd64", "big small", 200},
		{"status=bogus", `status "bogus"`, 400},
		{"min_cores=-1", "min_cores", 400},
		{"min_memory=8XB&min_disks=many", `min_memory "8XB": unit "XB" | min_disks "many"`, 400},
		{"tag=GPU&tag=ok&tag=a%20b", `tag "GPU", "a b"`, 400},
		{"min_core=4", `"min_core": no such parameter`, 400},
		{"arch=amd64&arch=arm64", "arch: given 2 times", 400},
		{"min_disk_size=9PiB", "over 8 PiB", 400},
	} {
		t.Run(tt.query, func(t *testing.T) {
			code, body, _ := h.raw("GET", h.api+"/api/v1/machines?"+tt.query, nil, "")
			if code != tt.code {
				t.Fatalf("%d %s", code, body)
			}
			if code != 200 {
				var e apiError
				json.Unmarshal([]byte(body), &e)
				for _, w := range strings.Split(tt.want, " | ") {
					if !strings.Contains(e.Error.Message, w) {
						t.Errorf("error %q, want it to say %s", e.Error.Message, w)
					}
				}
				return
			}
			var page struct{ Machines []rackplane.Machine }
			json.Unmarshal([]byte(body), &page)
			var got []string
			for _, m := range page.Machines {
				got = append(got, m.Hostname)
			}
			slices.Sort(got)
			w := strings.Fields(tt.want)
			slices.Sort(w)
			if !slices.Equal(got, w) {
				t.Fatalf("got %v, want %v", got, w)
			}
		})
	}
	// Keyset paging with a filter: one machine a page, in hostname order.
	var pages []string
	after := ""
	for i := 0; i < 5; i++ {
		var page struct {
			Machines []rackplane.Machine
			Next     string
		}
		h.getJSON("/api/v1/machines?tag=gpu&limit=1&after="+url.QueryEscape(after), &page)
		for _, m := range page.Machines {
			pages = append(pages, m.Hostname)
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if strings.Join(pages, " ") != "arm big" {
		t.Errorf("paged with a filter: %v", pages)
	}

	// A rebuild gives the same tables.
	tables := []string{"machines", "machine_hardware", "machine_hardware_history"}
	before := map[string]string{}
	for _, tb := range tables {
		before[tb] = h.dump(tb)
	}
	if _, err := postgres.New(h.pool, testLogger()).RebuildProjections(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if after := h.dump(tb); after != before[tb] {
			t.Errorf("%s differs after a rebuild:\nbefore %s\nafter  %s", tb, before[tb], after)
		}
	}

	// Deleting a machine deletes its hardware and history.
	if code, body, _ := h.raw("DELETE", h.api+"/api/v1/machines/"+big.ID, nil, ""); code != 204 {
		t.Fatalf("delete: %d %s", code, body)
	}
	h.pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM machine_hardware WHERE machine_id = $1) +
		(SELECT count(*) FROM machine_hardware_history WHERE machine_id = $1)`, big.ID).Scan(&rows)
	if rows != 0 {
		t.Errorf("%d hardware rows left of a deleted machine", rows)
	}
}

// setTags PUTs tags and checks the status; it returns the body, or the
// error's message when it is one.
func (h *harness) setTags(id string, code int, tags ...string) string {
	h.t.Helper()
	if tags == nil {
		tags = []string{}
	}
	b, _ := json.Marshal(map[string]any{"tags": tags})
	got, body, _ := h.raw("PUT", h.api+"/api/v1/machines/"+id+"/tags", nil, string(b))
	if got != code {
		h.t.Fatalf("PUT tags %v: %d %s", tags, got, body)
	}
	var e apiError
	if json.Unmarshal([]byte(body), &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	return body
}

// TestMachineTags: tags replace, sorted and once each; bad names are a
// 400 naming each; a tag change moves the version and honours If-Match;
// the same tags again change nothing.
func TestMachineTags(t *testing.T) {
	h := startRegion(t)
	m := h.newMachine("tagged", "52:54:00:aa:02:01")
	var got rackplane.Machine
	json.Unmarshal([]byte(h.setTags(m.ID, 200, "rack4", "gpu", "gpu")), &got)
	if strings.Join(got.Tags, ",") != "gpu,rack4" || got.Version <= m.Version {
		t.Fatalf("tags %v version %d (was %d)", got.Tags, got.Version, m.Version)
	}
	v := got.Version
	json.Unmarshal([]byte(h.setTags(m.ID, 200, "rack4", "gpu")), &got)
	if got.Version != v {
		t.Errorf("the same tags again moved the version %d → %d", v, got.Version)
	}
	body := h.setTags(m.ID, 400, "ok", "GPU", "-dash", "x y", strings.Repeat("a", 64))
	for _, want := range []string{`"GPU"`, `"-dash"`, `"x y"`, `"` + strings.Repeat("a", 64) + `"`} {
		if !strings.Contains(body, want) {
			t.Errorf("400 does not name %s: %s", want, body)
		}
	}
	if strings.Contains(body, `"ok"`) {
		t.Errorf("400 names a good tag: %s", body)
	}
	many := make([]string, 33)
	for i := range many {
		many[i] = fmt.Sprintf("t%d", i)
	}
	if body := h.setTags(m.ID, 400, many...); !strings.Contains(body, "33 tags, at most 32") {
		t.Errorf("33 tags: %s", body)
	}
	if code, body, _ := h.raw("PUT", h.api+"/api/v1/machines/"+m.ID+"/tags", nil, `{}`); code != 400 || !strings.Contains(body, "tags is required") {
		t.Errorf("no tags field: %d %s", code, body)
	}
	// If-Match: a stale version is refused; the current one goes.
	stale := map[string]string{"If-Match": fmt.Sprintf(`"%d"`, m.Version)}
	if code, body, _ := h.raw("PUT", h.api+"/api/v1/machines/"+m.ID+"/tags", stale, `{"tags": ["x"]}`); code != http.StatusPreconditionFailed {
		t.Fatalf("stale If-Match: %d %s", code, body)
	}
	current := map[string]string{"If-Match": fmt.Sprintf(`"%d"`, v)}
	code, body, hdr := h.raw("PUT", h.api+"/api/v1/machines/"+m.ID+"/tags", current, `{"tags": []}`)
	if code != 200 || hdr.Get("ETag") == fmt.Sprintf(`"%d"`, v) {
		t.Fatalf("clearing tags: %d %s %s", code, body, hdr.Get("ETag"))
	}
	json.Unmarshal([]byte(body), &got)
	if got.Tags == nil || len(got.Tags) != 0 {
		t.Errorf("cleared tags: %#v", got.Tags)
	}
	// Every change is in the log as machine_tags_set.
	var n int
	h.pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = $1 AND stream = $2`,
		events.TypeMachineTagsSet, events.MachineStreamName(m.ID)).Scan(&n)
	if n != 2 {
		t.Errorf("%d tag events, want 2", n)
	}
	resp, err := h.client.Get(h.api + "/api/v1/machines/" + m.ID + "/hardware/history")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.Contains(string(b), "never commissioned") {
		t.Errorf("history of a machine never commissioned: %d %s", resp.StatusCode, b)
	}
}

package region_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
)

type machineOut struct {
	ID, Hostname, Status, OS, Release string
	MACs                              []string
	PreseedName                       string `json:"preseed_name"`
	PreseedVersion                    int64  `json:"preseed_version"`
	ImageVersionID                    string `json:"image_version_id"`
	Version                           int64
}

func (h *harness) raw(method, url string, header map[string]string, body string) (int, string, http.Header) {
	h.t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// dump returns a table's rows as JSON, in a stable order.
func (h *harness) dump(table string) string {
	h.t.Helper()
	var s string
	err := h.pool.QueryRow(context.Background(),
		`SELECT coalesce(json_agg(t ORDER BY t::text)::text, '') FROM `+table+` t`).Scan(&s)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func TestMachinesDeployAndPreseeds(t *testing.T) {
	h := startRegion(t)
	r := startNobleRack(t, h)

	var m machineOut
	if code := h.do("POST", "/api/v1/machines", map[string]any{"hostname": "node1", "macs": []string{"52:54:00:AA:00:01"}, "arch": "amd64"}, &m); code != 201 || m.Status != "ready" || m.MACs[0] != "52:54:00:aa:00:01" {
		t.Fatalf("create machine: %d %+v", code, m)
	}
	var e apiError
	if code := h.do("POST", "/api/v1/machines", map[string]any{"hostname": "node2", "macs": []string{"52:54:00:aa:00:01"}}, &e); code != 409 {
		t.Fatalf("a second machine with the same MAC: %d %+v", code, e)
	}
	if code := h.do("POST", "/api/v1/machines", map[string]any{"hostname": "Bad Name", "macs": []string{"x"}}, &e); code != 400 {
		t.Fatalf("bad machine: %d %+v", code, e)
	}

	// Updates take If-Match with the version read; a stale one is 412.
	if code, _, _ := h.raw("PATCH", h.api+"/api/v1/machines/"+m.ID, map[string]string{"If-Match": `"999"`}, `{"hostname": "renamed"}`); code != 412 {
		t.Fatalf("stale update: %d", code)
	}
	code, body, _ := h.raw("PATCH", h.api+"/api/v1/machines/"+m.ID, map[string]string{"If-Match": fmt.Sprintf(`"%d"`, m.Version)},
		`{"hostname": "node1", "macs": ["52:54:00:aa:00:01", "52:54:00:aa:00:02"]}`)
	if code != 200 || !strings.Contains(body, "52:54:00:aa:00:02") {
		t.Fatalf("update: %d %s", code, body)
	}
	var page struct {
		Machines []machineOut
		Next     string
	}
	h.getJSON("/api/v1/machines?mac=52:54:00:aa:00:02", &page)
	if len(page.Machines) != 1 || page.Machines[0].ID != m.ID {
		t.Fatalf("find by the new MAC: %+v", page)
	}
	h.getJSON("/api/v1/machines/"+m.ID, &m)

	// An OS no reachable rack can boot: 409 naming what is missing.
	code = h.do("POST", "/api/v1/machines/"+m.ID+"/deploy", map[string]any{"os": "ubuntu", "release": "jammy"}, &e)
	if code != 409 || !strings.Contains(e.Error.Message, "ubuntu/jammy/amd64") || !strings.Contains(e.Error.Message, "no rack has an image") {
		t.Fatalf("deploy of an OS nobody has: %d %+v", code, e)
	}
	if code := h.do("POST", "/api/v1/machines/"+m.ID+"/deploy", map[string]any{"release": "noble"}, &e); code != 400 {
		t.Fatalf("deploy without an OS: %d", code)
	}

	// A preseed with a template that cannot render is refused at save time.
	if code := h.do("POST", "/api/v1/preseeds", map[string]any{"name": "default", "content": "{{.Machine.Nope}}"}, &e); code != 400 || !strings.Contains(e.Error.Message, "Nope") {
		t.Fatalf("bad template: %d %+v", code, e)
	}
	v1 := "#cloud-config\nhostname: {{.Machine.Hostname}}\n# v1 for {{.OS.Name}}/{{.OS.Release}}\n"
	if code := h.do("POST", "/api/v1/preseeds", map[string]any{"name": "default", "content": v1}, nil); code != 201 {
		t.Fatalf("create preseed: %d", code)
	}

	// Two clients edit version 1 at once: one wins, the other gets 412.
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _, _ = h.raw("PUT", h.api+"/api/v1/preseeds/default", map[string]string{"If-Match": `"1"`},
				fmt.Sprintf(`{"content": "#cloud-config\nhostname: {{.Machine.Hostname}}\n# edit %d\n"}`, i))
		}()
	}
	wg.Wait()
	if !(codes[0] == 200 && codes[1] == 412 || codes[0] == 412 && codes[1] == 200) {
		t.Fatalf("concurrent edits: %v, want one 200 and one 412", codes)
	}
	if code, _, _ := h.raw("PUT", h.api+"/api/v1/preseeds/default", nil, `{"content": "x"}`); code != 412 {
		t.Fatalf("edit without If-Match: %d", code)
	}
	var versions struct {
		Versions []struct {
			Version int64
			Author  string
		}
	}
	h.getJSON("/api/v1/preseeds/default/versions", &versions)
	if len(versions.Versions) != 2 || versions.Versions[1].Author != "tester" {
		t.Fatalf("versions after the race: %+v", versions)
	}

	// Deploy: pins image version and preseed version 2.
	if code := h.do("POST", "/api/v1/machines/"+m.ID+"/deploy", map[string]any{"os": "ubuntu", "release": "noble", "kernel_params": []string{"console=ttyS0"}}, &m); code != 200 ||
		m.Status != "deploying" || m.PreseedName != "default" || m.PreseedVersion != 2 || m.ImageVersionID != "ubuntu/amd64/generic/noble/stable/20261101" {
		t.Fatalf("deploy: %d %+v", code, m)
	}
	// The rack renders the install config for this machine's MAC.
	var cfg string
	h.eventually(5*time.Second, "rack renders the machine's config", func() error {
		resp, err := http.Get("http://" + r.HTTPAddr() + "/pxelinux.cfg/01-52-54-00-aa-00-01")
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cfg = string(b)
		if !strings.Contains(cfg, "/preseed/"+m.ID) || !strings.Contains(cfg, m.ImageVersionID+"/linux") {
			return fmt.Errorf("config %q", cfg)
		}
		return nil
	})

	// The installer fetches its preseed from the rack: the pinned version.
	first := h.preseedPath(r.HTTPAddr(), m)
	code, body, hdr := h.raw("GET", "http://"+r.HTTPAddr()+first, nil, "")
	if code != 200 || !strings.Contains(body, "hostname: node1") || hdr.Get("X-Rackplane-Preseed") != "default@2" {
		t.Fatalf("preseed: %d %q %v", code, body, hdr)
	}
	h.getJSON("/api/v1/machines/"+m.ID, &m)
	if m.Status != "deploying" {
		t.Fatalf("after the preseed fetch the machine is %s; it stays deploying until the installer reports", m.Status)
	}

	// Edit again; the deployed machine keeps version 2, a redeploy gets 3.
	if code, _, _ := h.raw("PUT", h.api+"/api/v1/preseeds/default", map[string]string{"If-Match": `"2"`}, `{"content": "#cloud-config\nhostname: {{.Machine.Hostname}}\n# v3\n"}`); code != 200 {
		t.Fatalf("edit to v3: %d", code)
	}
	if code, body, _ := h.raw("GET", "http://"+r.HTTPAddr()+first, nil, ""); code != 200 || strings.Contains(body, "v3") {
		t.Fatalf("a deploying machine got a newer preseed than it pinned: %d %q", code, body)
	}
	h.do("POST", "/api/v1/machines/"+m.ID+"/release", nil, &m)
	if m.Status != "ready" {
		t.Fatalf("release: %+v", m)
	}
	h.do("POST", "/api/v1/machines/"+m.ID+"/deploy", map[string]any{"os": "ubuntu", "release": "noble"}, &m)
	// The new deployment has a credential of its own; the first one's
	// opens nothing now.
	second := h.preseedPath(r.HTTPAddr(), m, first)
	if code, body, _ := h.raw("GET", "http://"+r.HTTPAddr()+first, nil, ""); code == 200 {
		t.Fatalf("the first deployment's credential still gets a preseed: %q", body)
	}
	if _, body, hdr := h.raw("GET", "http://"+r.HTTPAddr()+second, nil, ""); !strings.Contains(body, "# v3") || hdr.Get("X-Rackplane-Preseed") != "default@3" {
		t.Fatalf("redeploy got %q (%s)", body, hdr.Get("X-Rackplane-Preseed"))
	}
	_, diff, _ := h.raw("GET", h.api+"/api/v1/preseeds/default/diff?from=2&to=3", nil, "")
	if !strings.Contains(diff, "+# v3") || !strings.Contains(diff, "(tester)") {
		t.Fatalf("diff: %s", diff)
	}

	// Which version was served to which machine is in the log.
	var evs struct {
		Events []struct {
			Type string
			Data map[string]any
		}
	}
	h.getJSON("/api/v1/events?type="+events.TypePreseedServed, &evs)
	if len(evs.Events) != 3 || evs.Events[0].Data["version"] != 2.0 || evs.Events[2].Data["version"] != 3.0 {
		t.Fatalf("preseed_served events: %+v", evs.Events)
	}

	// Every mutation is in the audit log with its actor.
	var audit struct {
		Entries []struct{ Actor, Action, Target, Outcome string }
	}
	h.getJSON("/api/v1/audit?target=machine/"+m.ID, &audit)
	var actions []string
	for _, a := range audit.Entries {
		if a.Actor != "tester" {
			t.Errorf("audit entry without the actor: %+v", a)
		}
		actions = append(actions, a.Action+" "+a.Outcome)
	}
	// A machine without volumes can be deleted; its MACs are forgotten.
	var other machineOut
	h.do("POST", "/api/v1/machines", map[string]any{"hostname": "node9", "macs": []string{"52:54:00:aa:00:09"}}, &other)
	if code := h.do("DELETE", "/api/v1/machines/"+other.ID, nil, nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if code := h.getJSON("/api/v1/machines/"+other.ID, &e); code != 404 {
		t.Fatalf("deleted machine: %d", code)
	}
	if code := h.do("POST", "/api/v1/machines", map[string]any{"hostname": "node9", "macs": []string{"52:54:00:aa:00:09"}}, &other); code != 201 {
		t.Fatalf("the deleted machine's MAC and hostname are not free again: %d", code)
	}

	// Everything above is reproduced exactly by rebuilding the projections
	// from the log alone.
	tables := []string{"racks", "rack_capabilities", "rack_images", "machines", "machine_macs", "boot_decisions", "preseeds", "preseed_versions"}
	before := map[string]string{}
	for _, tb := range tables {
		before[tb] = h.dump(tb)
	}
	db := postgres.New(h.pool, testLogger())
	if _, err := db.RebuildProjections(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if after := h.dump(tb); after != before[tb] {
			t.Errorf("%s differs after a rebuild:\nbefore %s\nafter  %s", tb, before[tb], after)
		}
	}

	want := "POST /api/v1/machines success|PATCH /api/v1/machines/{id} failure|PATCH /api/v1/machines/{id} success|POST /api/v1/machines/{id}/deploy failure|POST /api/v1/machines/{id}/deploy failure|POST /api/v1/machines/{id}/deploy success|POST /api/v1/machines/{id}/release success|POST /api/v1/machines/{id}/deploy success"
	if strings.Join(actions, "|") != want {
		t.Fatalf("audit of the machine:\n%s\nwant\n%s", strings.Join(actions, "|"), want)
	}
}

package region_test

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestAPIMessagesSayWhatToFix: every way a new user got a request wrong
// is answered with a message that names what to change, in the client's
// terms (JSON field names and kinds of values, never Go's types), and a
// filter the region cannot use is a 400 naming what it takes rather than
// a list that looks filtered.
func TestAPIMessagesSayWhatToFix(t *testing.T) {
	h := startRegion(t)
	r, _ := startRack(t, h, filepath.Join(t.TempDir(), "rack"), 200*time.Millisecond)
	h.waitRackKnown(r.ID())
	rack := r.ID()
	tests := []struct {
		name, method, path, body string
		status                   int
		want                     []string
	}{
		{"a number for a string", "POST", "/api/v1/machines", `{"hostname": 5, "macs": ["52:54:00:00:20:01"]}`, 400,
			[]string{"hostname: want a string, got a number"}},
		{"a list item of the wrong kind", "POST", "/api/v1/machines", `{"hostname": "n1", "macs": [5]}`, 400,
			[]string{"macs: want a list whose items are each a string, got a number among them"}},
		{"an unknown field", "POST", "/api/v1/machines", `{"hostname": "n1", "mac": "52:54:00:00:20:01"}`, 400,
			[]string{`unknown field "mac"`, "the fields are hostname, macs, arch, boot_rack_id, boot_file"}},
		{"a syntax error", "POST", "/api/v1/machines", "{\"hostname\": \"n1\",\n \"macs\": [52:54]}", 400,
			[]string{"not valid JSON at line 2, column 13 (byte 31)"}},
		{"an empty body", "POST", "/api/v1/machines", ``, 400,
			[]string{`the request needs a JSON body: {"hostname": "…", "macs": ["…"]`, "(required: hostname, macs)"}},
		{"macs missing", "POST", "/api/v1/machines", `{"hostname": "n5"}`, 400,
			[]string{`macs (a list of MAC addresses such as ["52:54:00:12:34:56"]) required`}},
		{"an empty body to deploy", "POST", "/api/v1/machines/" + uuid.NewString() + "/deploy", ``, 400,
			[]string{"the request needs a JSON body", "(required: os, release)"}},
		{"an empty body to a preseed", "POST", "/api/v1/preseeds", ``, 400, []string{"(required: name, content)"}},
		{"an empty body to a subnet", "POST", "/api/v1/subnets", ``, 400, []string{"(required: rack_id, cidr)"}},
		{"an unknown machine status", "GET", "/api/v1/machines?status=bogus", "", 400,
			[]string{`status "bogus": want one of new, commissioning, ready`}},
		{"an unknown machine filter", "GET", "/api/v1/machines?colour=red", "", 400, []string{`"colour": no such parameter`}},
		{"an unknown event type", "GET", "/api/v1/events?type=bogus", "", 400,
			[]string{`type "bogus": no such event type; the types: `, "rackplane.rack.heartbeat.v1"}},
		{"an unknown events filter", "GET", "/api/v1/events?kind=x", "", 400,
			[]string{`"kind": no such query parameter (GET /api/v1/events takes after, limit, wait, stream, type, last)`}},
		{"an unknown audit action", "GET", "/api/v1/audit?action=bogus", "", 400,
			[]string{`action "bogus": no such action; an action is the route of a change: `, "POST /api/v1/machines"}},
		{"an unknown audit filter", "GET", "/api/v1/audit?who=x", "", 400, []string{`"who": no such query parameter`, "takes actor, action"}},
		{"a filter of a route without filters", "GET", "/api/v1/racks/" + rack + "?name=dev-rack", "", 400,
			[]string{`"name": no such query parameter (GET /api/v1/racks/{id} takes no query parameters)`}},
		{"a filter of the racks", "GET", "/api/v1/racks?name=dev-rack", "", 400,
			[]string{`"name": no such query parameter (GET /api/v1/racks takes retired)`}},
		{"two unknown filters", "GET", "/api/v1/subnets?rack=x&cidr=y", "", 400,
			[]string{`"cidr", "rack": no such query parameters (GET /api/v1/subnets takes rack_id)`}},
		{"a relative image directory", "POST", "/api/v1/racks/" + rack + "/images/imports", `{"dir": "some/dir"}`, 400,
			[]string{`dir "some/dir": want an absolute path of a directory on the rack, such as /srv/images`}},
		{"a relative simplestreams directory", "POST", "/api/v1/racks/" + rack + "/images/imports", `{"simplestreams": {"dir": "mirror"}}`, 400,
			[]string{`simplestreams.dir "mirror": want an absolute path`}},
		{"a parameter a change does not take", "POST", "/api/v1/machines?dry_run=true", `{"hostname": "n9", "macs": ["52:54:00:00:20:09"]}`, 400,
			[]string{`"dry_run": no such query parameter (POST /api/v1/machines takes no query parameters)`}},
		{"a known audit action", "GET", "/api/v1/audit?action=" + strings.ReplaceAll("POST /api/v1/machines", " ", "%20"), "", 200, nil},
		{"a known event type", "GET", "/api/v1/events?type=rackplane.rack.heartbeat.v1", "", 200, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tt.body != "" {
				hdr["Content-Type"] = "application/json"
			}
			code, body, _ := h.raw(tt.method, h.api+tt.path, hdr, tt.body)
			if code != tt.status {
				t.Fatalf("%d %s, want %d", code, body, tt.status)
			}
			if tt.status == http.StatusOK {
				return
			}
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code != "invalid" {
				t.Fatalf("not an invalid error: %s", body)
			}
			for _, w := range tt.want {
				if !strings.Contains(e.Error.Message, w) {
					t.Errorf("%q missing from %q", w, e.Error.Message)
				}
			}
			for _, goName := range []string{"Go struct", "machineRequest", "of type", "json: ", "jsonschema"} {
				if strings.Contains(e.Error.Message, goName) {
					t.Errorf("%q shows Go's or the schema's %q", e.Error.Message, goName)
				}
			}
		})
	}
	// A change refused for its query is in the audit log like any other
	// refusal.
	var audit struct {
		Entries []struct {
			Status int
			Detail string
		}
	}
	if code := h.getJSON("/api/v1/audit?action=POST%20/api/v1/machines", &audit); code != 200 {
		t.Fatalf("audit: %d", code)
	}
	found := false
	for _, e := range audit.Entries {
		found = found || e.Status == 400 && strings.Contains(e.Detail, `"dry_run": no such query parameter`)
	}
	if !found {
		t.Errorf("the refused POST ?dry_run=true is not audited: %+v", audit.Entries)
	}
}

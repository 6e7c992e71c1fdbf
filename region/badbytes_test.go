package region_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/httpserver/httpservertest"
)

// route is one endpoint and what it reads from the request: the path
// with {name} for each parameter it parses, the query parameters it
// looks at, and a body it takes.
type route struct {
	method, path string
	query        []string
	body         string
}

// apiRoutes are every route of the region's API and web UI.
var apiRoutes = []route{
	{"GET", "/healthz", nil, ""},
	{"GET", "/readyz", nil, ""},
	{"GET", "/metrics", nil, ""},
	{"GET", "/", nil, ""},
	{"GET", "/ui/{file}", nil, ""},
	{"GET", "/{nothing}", nil, ""},
	{"GET", "/api/v1/racks", []string{"retired"}, ""},
	{"GET", "/api/v1/racks/{id}", nil, ""},
	{"DELETE", "/api/v1/racks/{id}", []string{"reason"}, ""},
	{"GET", "/api/v1/events", []string{"after", "limit", "wait", "stream", "type", "last"}, ""},
	{"GET", "/api/v1/rejected-events", []string{"limit"}, ""},
	{"GET", "/api/v1/stats/boots", []string{"window", "step"}, ""},
	{"GET", "/api/v1/os", []string{"live", "timeout", "os", "release", "arch"}, ""},
	{"GET", "/api/v1/racks/{id}/capabilities", []string{"live", "timeout"}, ""},
	{"PUT", "/api/v1/os/{os}/{release}/licence-key", nil, `{"key":"AAAA-BBBB"}`},
	{"GET", "/api/v1/os/{os}/{release}/licence-key", nil, ""},
	{"POST", "/api/v1/tokens", nil, `{"name":"x"}`},
	{"GET", "/api/v1/tokens", nil, ""},
	{"DELETE", "/api/v1/tokens/{token}", nil, ""},
	{"GET", "/api/v1/audit", []string{"actor", "action", "target", "since", "until", "after", "limit", "last"}, ""},
	{"POST", "/api/v1/machines", nil, `{"hostname":"n1","macs":["52:54:00:00:00:01"]}`},
	{"GET", "/api/v1/machines", []string{"status", "hostname", "mac", "os", "arch", "min_cores", "min_memory", "min_disks", "min_disk_size",
		"tag", "after", "limit"}, ""},
	{"GET", "/api/v1/machines/{machine}/hardware", nil, ""},
	{"GET", "/api/v1/machines/{machine}/hardware/history", []string{"limit"}, ""},
	{"PUT", "/api/v1/machines/{machine}/tags", nil, `{"tags":["gpu"]}`},
	{"GET", "/api/v1/machines/{machine}", nil, ""},
	{"PATCH", "/api/v1/machines/{machine}", nil, `{"hostname":"n2"}`},
	{"DELETE", "/api/v1/machines/{machine}", nil, ""},
	{"POST", "/api/v1/machines/{machine}/deploy", nil, `{"os":"ubuntu","release":"noble"}`},
	{"POST", "/api/v1/machines/{machine}/commission", nil, `{}`},
	{"POST", "/api/v1/machines/{machine}/release", nil, `{}`},
	{"POST", "/api/v1/machines/{machine}/mark-failed", nil, `{"reason":"x"}`},
	{"POST", "/api/v1/machines/{machine}/mark-broken", nil, `{"reason":"x"}`},
	{"POST", "/api/v1/machines/{machine}/mark-fixed", nil, `{}`},
	{"POST", "/api/v1/preseeds", nil, `{"name":"p","content":"x"}`},
	{"GET", "/api/v1/preseeds", nil, ""},
	{"GET", "/api/v1/preseeds/{name}", nil, ""},
	{"PUT", "/api/v1/preseeds/{name}", nil, `{"content":"y"}`},
	{"GET", "/api/v1/preseeds/{name}/versions", nil, ""},
	{"GET", "/api/v1/preseeds/{name}/versions/{version}", nil, ""},
	{"GET", "/api/v1/preseeds/{name}/diff", []string{"from", "to"}, ""},
	{"POST", "/api/v1/preseeds/{name}/rollback", nil, `{"version":1}`},
	{"GET", "/api/v1/racks/{id}/images", []string{"timeout"}, ""},
	{"DELETE", "/api/v1/racks/{id}/images/{imageversion}", []string{"timeout"}, ""},
	{"POST", "/api/v1/racks/{id}/images/gc", []string{"dry_run", "timeout"}, ""},
	{"POST", "/api/v1/racks/{id}/images/scrub", []string{"timeout"}, ""},
	{"POST", "/api/v1/racks/{id}/images/imports", []string{"timeout"}, `{"dir":"/nonexistent"}`},
	{"GET", "/api/v1/racks/{id}/images/imports", []string{"timeout"}, ""},
	{"GET", "/api/v1/racks/{id}/images/imports/{import}", []string{"timeout"}, ""},
	{"POST", "/api/v1/machines/{machine}/volumes", []string{"timeout"}, `{"provider":"p","size_mib":1}`},
	{"GET", "/api/v1/machines/{machine}/volumes", []string{"removed"}, ""},
	{"GET", "/api/v1/volumes/{vol}", nil, ""},
	{"GET", "/api/v1/storage-providers", nil, ""},
	{"DELETE", "/api/v1/volumes/{vol}", []string{"timeout"}, ""},
	{"POST", "/api/v1/volumes/{vol}/grow", []string{"timeout"}, `{"new_size_mib":2}`},
	{"POST", "/api/v1/volumes/{vol}/attach", []string{"timeout"}, ""},
	{"POST", "/api/v1/subnets", nil, `{"cidr":"10.9.0.0/24"}`},
	{"GET", "/api/v1/subnets", []string{"rack_id"}, ""},
	{"GET", "/api/v1/subnets/{subnet}", nil, ""},
	{"PATCH", "/api/v1/subnets/{subnet}", nil, `{"name":"s"}`},
	{"DELETE", "/api/v1/subnets/{subnet}", nil, ""},
	{"GET", "/api/v1/subnets/{subnet}/leases", []string{"mac", "after", "limit"}, ""},
	{"GET", "/api/v1/leases", []string{"rack_id", "subnet", "mac", "after", "limit"}, ""},
}

// rackRoutes are every route of a rack's HTTP server: what installers,
// firmware and scrapers ask.
var rackRoutes = []route{
	{"GET", "/healthz", nil, ""},
	{"GET", "/metrics", nil, ""},
	{"GET", "/preseed/{machine}", nil, ""},
	{"GET", "/preseed/{machine}/{credential}", nil, ""},
	{"POST", "/status/{machine}/{statustoken}", nil, "result=success"},
	{"GET", "/{file}", nil, ""},
	{"HEAD", "/{file}", nil, ""},
	{"GET", "/ipxe/{ipxe}", nil, ""},
	{"GET", "/images/{file}", nil, ""},
	{"GET", "/grub/{file}", nil, ""},
}

// badBytes are what a request may carry that no endpoint can take: a
// NUL, and bytes that are not UTF-8 (a lone continuation byte, an
// overlong NUL, a truncated sequence), percent-encoded as a client sends
// them.
var badBytes = map[string]string{"nul": "a%00b", "ff": "a%FFb", "overlong_nul": "%C0%80", "truncated": "%E2%82"}

// spoilt is every request of routes with one bad value: in each path
// parameter, in each query parameter the route reads, and in a query
// parameter it does not.
func spoilt(routes []route, values map[string]string) []spoiltRequest {
	var out []spoiltRequest
	fill := func(path, except, bad string) string {
		for name, v := range values {
			if name == except {
				v = bad
			}
			path = strings.ReplaceAll(path, "{"+name+"}", v)
		}
		return path
	}
	for _, r := range routes {
		for kind, bad := range badBytes {
			for _, seg := range strings.Split(r.path, "/") {
				if name, ok := strings.CutPrefix(seg, "{"); ok {
					name = strings.TrimSuffix(name, "}")
					out = append(out, spoiltRequest{r, fmt.Sprintf("%s %s: %s in {%s}", r.method, r.path, kind, name), fill(r.path, name, bad)})
				}
			}
			for _, q := range append(r.query, "unknown") {
				out = append(out, spoiltRequest{r, fmt.Sprintf("%s %s: %s in ?%s", r.method, r.path, kind, q), fill(r.path, "", "") + "?" + q + "=" + bad})
			}
			out = append(out, spoiltRequest{r, fmt.Sprintf("%s %s: %s in a query name", r.method, r.path, kind), fill(r.path, "", "") + "?" + bad + "=1"})
		}
	}
	return out
}

type spoiltRequest struct {
	route
	name, target string
}

// rawRequest sends a request line as given, which no HTTP client would
// clean up first, and returns the status and body of the answer. A body
// goes as JSON, or as a form when it is not an object.
func rawRequest(t testing.TB, addr, method, target string, header map[string]string, body string) (int, http.Header, string) {
	t.Helper()
	var b []byte
	if body != "" {
		h := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
		if strings.HasPrefix(body, "{") {
			h["Content-Type"] = "application/json"
		}
		for k, v := range header {
			h[k] = v
		}
		header, b = h, []byte(body)
	}
	resp, rb, err := httpservertest.Raw(addr, method, target, header, b)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	return resp.StatusCode, resp.Header, string(rb)
}

// TestBadBytesAre400 sends a NUL or bytes that are not UTF-8 in every
// path and query parameter of every route of the API and of a rack's
// HTTP server: each answers 400 with a JSON error saying what is wrong,
// never 500 (Postgres refuses such text, and nothing upstream of it did).
func TestBadBytesAre400(t *testing.T) {
	h := startRegion(t)
	r, _ := startRack(t, h, filepath.Join(t.TempDir(), "rack-a"), 200*time.Millisecond)
	values := map[string]string{
		"id": r.ID(), "machine": uuid.NewString(), "vol": uuid.NewString(), "subnet": uuid.NewString(), "token": uuid.NewString(),
		"os": "ubuntu", "release": "noble", "name": "default", "version": "1", "imageversion": "images/x/1", "import": "imp-1",
		"file": "pxelinux.0", "ipxe": "52-54-00-12-34-56.ipxe", "nothing": "nothing", "statustoken": "tok", "credential": "cred",
	}
	auth := map[string]string{"Authorization": "Bearer " + h.token}
	servers := []struct {
		name, addr string
		routes     []route
	}{
		{"api", strings.TrimPrefix(h.api, "http://"), apiRoutes},
		{"rack", r.HTTPAddr(), rackRoutes},
	}
	var failed []string
	for _, srv := range servers {
		for _, req := range spoilt(srv.routes, values) {
			status, hdr, body := rawRequest(t, srv.addr, req.method, req.target, auth, req.body)
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if req.method == http.MethodHead {
				// No body; the headers say what it would be.
				body = `{"error":{"code":"invalid","message":"(HEAD)"}}`
			}
			jerr := json.Unmarshal([]byte(body), &e)
			if status != 400 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") || jerr != nil ||
				e.Error.Code != rackplane.EINVALID || e.Error.Message == "" {
				failed = append(failed, fmt.Sprintf("%s %s (%s): %d %q", srv.name, req.name, req.target, status, clip(body)))
			}
		}
	}
	// JSON bodies carry a NUL as \u0000, which decodes fine and which
	// PostgreSQL refuses; bytes that are not UTF-8 decode as U+FFFD.
	var m struct{ ID string }
	if code := h.do("POST", "/api/v1/machines", map[string]any{"hostname": "body-test", "macs": []string{"52:54:00:00:10:01"}}, &m); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	for _, b := range []struct{ method, path, body string }{
		{"POST", "/api/v1/machines", `{"hostname":"a\u0000b","macs":["52:54:00:00:10:02"]}`},
		{"PATCH", "/api/v1/machines/" + m.ID, `{"hostname":"a\u0000b"}`},
		{"POST", "/api/v1/machines/" + m.ID + "/mark-broken", `{"reason":"a\u0000b"}`},
		{"POST", "/api/v1/preseeds", `{"name":"p0","content":"a\u0000b"}`},
		{"POST", "/api/v1/preseeds", `{"name":"p\u0000","content":"x"}`},
		{"POST", "/api/v1/tokens", `{"name":"a\u0000b"}`},
		{"POST", "/api/v1/subnets", `{"cidr":"10.9.0.0/24","name":"a\u0000b"}`},
		{"POST", "/api/v1/machines/" + m.ID + "/volumes", `{"provider":"a\u0000b","size_mib":1}`},
	} {
		status, _, body := rawRequest(t, strings.TrimPrefix(h.api, "http://"), b.method, b.path, auth, b.body)
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal([]byte(body), &e) != nil || status != 400 || e.Error.Code != rackplane.EINVALID {
			failed = append(failed, fmt.Sprintf("api %s %s with %s: %d %q", b.method, b.path, b.body, status, clip(body)))
		}
	}
	if len(failed) > 0 {
		t.Errorf("%d requests not answered 400 with a JSON error:\n%s", len(failed), strings.Join(failed, "\n"))
	}
}

func clip(s string) string {
	if len(s) > 160 {
		return s[:160] + "…"
	}
	return s
}

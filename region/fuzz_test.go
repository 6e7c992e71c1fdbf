package region_test

import (
	"net/http"
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/httpserver/httpservertest"
	"github.com/rackplane/rackplane/region"
)

// fuzzSite is what the fuzz targets send to: a region, a rack with
// ubuntu/noble, and a machine deploying from it, with the token of its
// install-status URL. Each fuzzing process builds its own.
type fuzzSite struct {
	h       *harness
	rack    string // host:port of the rack's HTTP server
	api     string // host:port of the API
	machine string
	token   string
	// credential is the one on the machine's kernel command line.
	credential string
}

func startFuzzSite(f *testing.F) *fuzzSite {
	h, rackHTTP := deployedSite(f, func(*region.Config) {})
	m := h.newMachine("fuzz", "52:54:00:fa:00:01")
	h.deploy(m)
	u := h.statusURL(rackHTTP, m)
	return &fuzzSite{h: h, rack: rackHTTP, api: strings.TrimPrefix(h.api, "http://"), machine: m.ID, token: path.Base(u),
		credential: path.Base(h.preseedPath(rackHTTP, m))}
}

// answered fails t when a request got a 5xx that is not the word of a
// dependency (503: the region, a rack or PostgreSQL away; 504: not in
// time), or no answer: no bytes from a client make a server fail.
func answered(t *testing.T, resp *http.Response, body []byte, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: no answer: %v", what, err)
	}
	if resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("%s: %d %q", what, resp.StatusCode, body)
	}
}

// FuzzRackPreseed asks the rack for a preseed as an installer does, by
// any machine id, credential and query. Only the deployment's own
// credential of the deploying machine gets it; nothing gets a 500.
func FuzzRackPreseed(f *testing.F) {
	s := startFuzzSite(f)
	c := s.credential
	for _, seed := range [][3]string{
		{s.machine, c, ""}, {s.machine, c, "x=1"}, {s.machine, "", ""}, {uuid.NewString(), c, ""}, {strings.ToUpper(s.machine), c, ""},
		{strings.ReplaceAll(s.machine, "-", ""), c, ""}, {"{" + s.machine + "}", c, ""}, {"urn:uuid:" + s.machine, c, ""},
		{"", "", ""}, {"..", c, ""}, {"../status", "", ""}, {s.machine + "%00", c, ""}, {"%FF", "", ""}, {s.machine, c, "a=%00"},
		{s.machine, c + "/extra", ""}, {s.machine, strings.ToLower(c), ""}, {s.machine, c[:20], ""}, {s.machine, c + "=", ""},
		{s.machine, "%00", ""}, {strings.Repeat("a", 5000), strings.Repeat("b", 5000), ""},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	f.Fuzz(func(t *testing.T, machine, credential, query string) {
		target := "/preseed/" + httpservertest.Target(machine)
		if credential != "" {
			target += "/" + httpservertest.Target(credential)
		}
		if query != "" {
			target += "?" + httpservertest.Target(query)
		}
		resp, body, err := httpservertest.Raw(s.rack, "GET", target, nil, nil)
		answered(t, resp, body, err, "GET "+target)
		// (The machine id may be written in any form uuid.Parse takes.)
		if u, err := url.Parse(target); resp.StatusCode == http.StatusOK && (err != nil || !strings.HasSuffix(u.Path, "/"+s.credential)) {
			t.Fatalf("GET %s: the preseed went to a request without the deployment's credential:\n%s", target, body)
		}
	})
}

// FuzzRackInstallStatus posts installers' reports to the rack with any
// machine, token, content type and body: forms, JSON and junk.
func FuzzRackInstallStatus(f *testing.F) {
	s := startFuzzSite(f)
	const form, json = "application/x-www-form-urlencoded", "application/json"
	for _, seed := range []struct {
		machine, token, contentType string
		body                        []byte
	}{
		{s.machine, s.token, form, []byte("result=failure&message=disk+full")},
		{s.machine, s.token, json, []byte(`{"result":"failure","message":"no network"}`)},
		{s.machine, s.token, form, []byte("result=maybe")},
		{s.machine, "wrong-token", form, []byte("result=success")},
		{uuid.NewString(), s.token, form, []byte("result=success")},
		{s.machine, s.token, json, []byte(`{"result":"success","message":"\u0000"}`)},
		{s.machine, s.token, json, []byte(`{"result":"success"`)},
		{s.machine, s.token, form, []byte("result=failure&message=%FF%FE")},
		{s.machine, s.token, "text/plain", []byte("result=failure&message=" + strings.Repeat("x", 20000))},
		{s.machine, s.token, json + "; charset=utf-8", []byte(`[]`)},
		{s.machine, s.token, "multipart/form-data; boundary=x", []byte("--x\r\n\r\n")},
		{"not-a-uuid", s.token, form, nil},
		{s.machine, strings.Repeat("t", 200), form, []byte("result=failure")},
		{s.machine, s.token + "%00", form, []byte("result=failure")},
		{s.machine, s.token, form, []byte("result=success")},
	} {
		f.Add(seed.machine, seed.token, seed.contentType, seed.body)
	}
	f.Fuzz(func(t *testing.T, machine, token, contentType string, body []byte) {
		target := "/status/" + httpservertest.Target(machine) + "/" + httpservertest.Target(token)
		resp, rb, err := httpservertest.Raw(s.rack, "POST", target, map[string]string{"Content-Type": httpservertest.HeaderValue(contentType)}, body)
		answered(t, resp, rb, err, "POST "+target)
	})
}

// FuzzAPIRequest sends any path parameter, query and body to each route
// of the API, with a token: every parser of a request (ids, names,
// filters, cursors, durations, JSON bodies) refuses what it cannot take
// with 4xx, never 500.
func FuzzAPIRequest(f *testing.F) {
	s := startFuzzSite(f)
	auth := map[string]string{"Authorization": "Bearer " + s.h.token, "Content-Type": "application/json"}
	for i, r := range apiRoutes {
		param := s.machine
		switch {
		case strings.Contains(r.path, "{name}"):
			param = "default"
		case strings.Contains(r.path, "{os}"):
			param = "ubuntu"
		}
		query := ""
		for _, q := range r.query {
			query += q + "=1&"
		}
		f.Add(uint8(i), param, query, []byte(r.body))
	}
	for _, seed := range []struct {
		param, query, body string
	}{
		{"x", "limit=-1&after=%00", `{"hostname":"a\u0000"}`}, {"", "since=2026-13-45T99:00:00Z", `{`},
		{s.machine, "status=deployed&mac=zz", `{"macs":["52:54:00:fa:00:01"],"hostname":"dup"}`},
		{"default", "from=1&to=99999999999999999999", `{"content":"` + strings.Repeat("x", 1000) + `"}`},
	} {
		f.Add(uint8(0), seed.param, seed.query, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, route uint8, param, query string, body []byte) {
		r := apiRoutes[int(route)%len(apiRoutes)]
		target := r.path
		for strings.Contains(target, "{") {
			i, j := strings.Index(target, "{"), strings.Index(target, "}")
			target = target[:i] + httpservertest.Target(param) + target[j+1:]
		}
		if q := withoutWaits(query); q != "" {
			target += "?" + httpservertest.Target(q)
		}
		resp, rb, err := httpservertest.Raw(s.api, r.method, target, auth, body)
		answered(t, resp, rb, err, r.method+" "+target)
	})
}

// withoutWaits drops the query parameters that make a request wait (a
// long poll, a rack's timeout): they would make a fuzz run slow, and a
// duration is checked by the same parser whatever its name.
func withoutWaits(query string) string {
	var keep []string
	for pair := range strings.SplitSeq(query, "&") {
		k, _, _ := strings.Cut(pair, "=")
		if k != "wait" && k != "timeout" {
			keep = append(keep, pair)
		}
	}
	return strings.Join(keep, "&")
}

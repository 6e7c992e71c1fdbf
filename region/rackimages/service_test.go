package rackimages

import (
	"strings"
	"testing"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

func TestRPCSchema(t *testing.T) {
	for _, tc := range []struct{ method, part, want string }{
		{events.MethodImagesGC, "request", "images_rpc_gc.request.v1"},
		{events.MethodImagesList, "reply", "images_rpc_list.reply.v1"},
		{events.MethodImagesImports, "request", "images_rpc_imports.request.v1"},
		{events.MethodImagesScrub, "request", "images_rpc_scrub.request.v1"},
		{events.MethodImagesScrub, "reply", "images_rpc_scrub.reply.v1"},
	} {
		if got := events.ImagesRPCSchema(tc.method, tc.part); got != tc.want {
			t.Errorf("ImagesRPCSchema(%q, %q) = %q, want %q", tc.method, tc.part, got, tc.want)
		}
	}
}

func TestSourceKind(t *testing.T) {
	yes := true
	for _, tc := range []struct {
		req  ImportRequest
		want string
	}{
		{ImportRequest{URL: "https://user:secret@example.org/m.json"}, "url"},
		{ImportRequest{Dir: "/srv/images"}, "dir"},
		{ImportRequest{SystemBootloaders: &yes}, "system_bootloaders"},
		{ImportRequest{DebianNetboot: &events.DebianNetbootSource{}}, "debian_netboot"},
		{ImportRequest{Simplestreams: &events.SimplestreamsSource{URL: "https://user:secret@mirror.example.org/"}}, "simplestreams_url"},
		{ImportRequest{Simplestreams: &events.SimplestreamsSource{Dir: "/srv/mirror"}}, "simplestreams_dir"},
	} {
		if got := sourceKind(tc.req); got != tc.want {
			t.Errorf("sourceKind(%+v) = %q, want %q", tc.req, got, tc.want)
		}
	}
}

// TestEncode: a request is checked against its method's schema before it
// leaves; one that breaks it is EINVALID naming the method, on one line.
func TestEncode(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		name   string
		method string
		req    any
		want   string // the body, or "" when refused
	}{
		{"list", events.MethodImagesList, struct{}{}, `{}`},
		{"import from a dir", events.MethodImagesImport, ImportRequest{Dir: "/srv/images"}, `{"dir":"/srv/images"}`},
		{"import of the system bootloaders", events.MethodImagesImport, ImportRequest{SystemBootloaders: &yes}, `{"system_bootloaders":true}`},
		{"import of no bootloaders", events.MethodImagesImport, ImportRequest{SystemBootloaders: &no}, ""},
		{"import from a relative dir", events.MethodImagesImport, ImportRequest{Dir: "images"}, ""},
		{"import of debian-netboot", events.MethodImagesImport, ImportRequest{DebianNetboot: &events.DebianNetbootSource{Arches: []string{"arm64"}}},
			`{"debian_netboot":{"arches":["arm64"]}}`},
		{"import of every debian-netboot", events.MethodImagesImport, ImportRequest{DebianNetboot: &events.DebianNetbootSource{}}, `{"debian_netboot":{}}`},
		{"import of debian-netboot for i386", events.MethodImagesImport, ImportRequest{DebianNetboot: &events.DebianNetbootSource{Arches: []string{"i386"}}}, ""},
		{"import from a simplestreams mirror", events.MethodImagesImport, ImportRequest{Simplestreams: &events.SimplestreamsSource{
			URL: "http://images.maas.io/ephemeral-v3/stable/", Filters: events.SimplestreamsFilters{Release: []string{"noble"}}, Versions: 2}},
			`{"simplestreams":{"url":"http://images.maas.io/ephemeral-v3/stable/","filters":{"release":["noble"]},"versions":2}}`},
		{"import from a simplestreams mirror with no address", events.MethodImagesImport, ImportRequest{Simplestreams: &events.SimplestreamsSource{Versions: 1}}, ""},
		{"import from a simplestreams url and dir", events.MethodImagesImport, ImportRequest{Simplestreams: &events.SimplestreamsSource{URL: "http://m/", Dir: "/m"}}, ""},
		{"import of 21 simplestreams versions", events.MethodImagesImport, ImportRequest{Simplestreams: &events.SimplestreamsSource{Dir: "/m", Versions: 21}}, ""},
		{"import with no source", events.MethodImagesImport, ImportRequest{}, ""},
		{"all imports", events.MethodImagesImports, importsRequest{}, `{}`},
		{"delete", events.MethodImagesDelete, deleteRequest{VersionID: "ubuntu/noble/amd64/ga-24.04/generic/20240101"},
			`{"version_id":"ubuntu/noble/amd64/ga-24.04/generic/20240101"}`},
		{"delete of no version", events.MethodImagesDelete, deleteRequest{}, ""},
		{"gc dry run", events.MethodImagesGC, gcRequest{DryRun: true}, `{"dry_run":true}`},
		{"scrub", events.MethodImagesScrub, struct{}{}, `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := Encode(tc.method, tc.req)
			if tc.want == "" {
				if rackplane.ErrorCode(err) != rackplane.EINVALID || !strings.Contains(rackplane.ErrorMessage(err), tc.method) ||
					strings.Contains(rackplane.ErrorMessage(err), "\n") {
					t.Fatalf("Encode = %s, %v (code %s): want EINVALID naming %s on one line", body, err, rackplane.ErrorCode(err), tc.method)
				}
				return
			}
			if err != nil || string(body) != tc.want {
				t.Fatalf("Encode = %s, %v; want %s", body, err, tc.want)
			}
		})
	}
}

package api

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/rackimages"
)

// FuzzImportRequest feeds arbitrary bodies to the import endpoint's
// validation: it refuses with EINVALID or yields exactly one source that
// the rack's request schema accepts.
func FuzzImportRequest(f *testing.F) {
	for _, seed := range []string{
		`{"dir":"/srv/images"}`, `{"url":"https://images.example.org/manifest.json"}`, `{"system_bootloaders":true}`,
		`{"system_bootloaders":false}`, `{"dir":"images"}`, `{"url":"ftp://x"}`, `{"dir":"/a","url":"http://b"}`,
		`{}`, `null`, `[]`, `{"dir":"/a"} {}`, `{"path":"/a"}`, `{"url":""}`, "",
		`{"debian_netboot":{}}`, `{"debian_netboot":{"arches":["amd64","arm64"]}}`, `{"debian_netboot":{"arches":["i386"]}}`, `{"debian_netboot":null}`,
		`{"simplestreams":{"url":"http://images.maas.io/ephemeral-v3/stable/","filters":{"release":["noble"],"arch":["amd64"]},"versions":2}}`,
		`{"simplestreams":{"dir":"/srv/mirror","url":"http://x/"}}`, `{"simplestreams":{}}`, `{"simplestreams":{"dir":"/m","filters":{}}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/api/v1/racks/x/images/imports", bytes.NewReader(body))
		req, err := decodeImportRequest(r)
		if err == nil {
			var enc []byte
			enc, err = rackimages.Encode(events.MethodImagesImport, req)
			if err == nil {
				var back map[string]any
				if jerr := json.Unmarshal(enc, &back); jerr != nil || len(back) != 1 {
					t.Fatalf("accepted %q as %s", body, enc)
				}
				return
			}
		}
		if rackplane.ErrorCode(err) != rackplane.EINVALID || rackplane.ErrorMessage(err) == "" {
			t.Fatalf("body %q: error %v (code %s), want invalid with a message", body, err, rackplane.ErrorCode(err))
		}
	})
}

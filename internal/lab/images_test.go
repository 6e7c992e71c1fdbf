package lab

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestImportFailureSaidAtOnce: an import the rack fails is reported with
// the rack's own error as soon as the import says failed, not as a
// release missing from the OS registry minutes later. The region here is
// a recording of the two answers the lab reads (the import's state and
// the registry), as the region's API gives them.
func TestImportFailureSaidAtOnce(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == "POST" && r.URL.Path == "/api/v1/racks/r1/images/imports":
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, `{"id": "imp1", "state": "running"}`)
		case r.Method == "GET" && r.URL.Path == "/api/v1/racks/r1/images/imports/imp1":
			_, _ = io.WriteString(w, `{"id": "imp1", "state": "failed", "code": "invalid", "error": "manifest.json: no such file"}`)
		case r.Method == "GET" && r.URL.Path == "/api/v1/os":
			_, _ = io.WriteString(w, `{"oses": []}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	a := &client{base: srv.URL, token: "t", http: srv.Client()}
	im := image{what: "disk image", dir: "/lab/images/disk", os: "rackplane-lab", release: "1"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := importImage(ctx, a, "r1", im, io.Discard)
	want := "import the disk image from /lab/images/disk: the rack says: manifest.json: no such file (invalid)"
	if err == nil || err.Error() != want {
		t.Fatalf("importImage: %v, want %q", err, want)
	}
	if strings.Contains(err.Error(), "OS registry") {
		t.Errorf("the failure is said as a missing release: %v", err)
	}
}

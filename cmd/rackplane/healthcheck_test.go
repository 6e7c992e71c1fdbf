package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/region/regiontest"
)

// TestHealthcheck: `rackplane healthcheck URL`, the compose stack's
// health check, succeeds on a 2xx answer only, and says why otherwise.
func TestHealthcheck(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"status":"ok"}` + "\n")) })
	mux.HandleFunc("/down", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"status":"starting"}`, http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	closed := httptest.NewServer(mux)
	closed.Close()

	tests := []struct {
		name    string
		args    []string
		wantOut string
		wantErr string // "" when it succeeds
	}{
		{"healthy", []string{srv.URL + "/ok"}, `{"status":"ok"}`, ""},
		{"unhealthy", []string{srv.URL + "/down"}, "", `answered 503 Service Unavailable: {"status":"starting"}`},
		{"not found", []string{srv.URL + "/nothing"}, "", "answered 404"},
		{"too slow", []string{"-timeout", "200ms", srv.URL + "/slow"}, "", "context deadline exceeded"},
		{"nothing listening", []string{closed.URL + "/ok"}, "", "connection refused"},
		{"no URL", nil, "", "usage: rackplane healthcheck"},
		{"not http", []string{"tcp://127.0.0.1:5240"}, "", "want an http:// URL"},
		{"no timeout", []string{"-timeout", "0s", srv.URL + "/ok"}, "", "-timeout 0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), append([]string{"healthcheck"}, tt.args...), &out, &errOut)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("failed: %v", err)
				}
				if got := strings.TrimSpace(out.String()); got != tt.wantOut {
					t.Errorf("printed %q, want %q", got, tt.wantOut)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want one saying %q", err, tt.wantErr)
			}
		})
	}
}

// TestHealthcheckOfTheDaemons: the health checks the compose stack runs
// pass against a running region and rack.
func TestHealthcheckOfTheDaemons(t *testing.T) {
	if testing.Short() {
		t.Skip("starts rackplane dev")
	}
	d := startDev(t)
	regiontest.Eventually(t, 30*time.Second, "the built-in rack online", d.rackOnline("dev-rack", true))
	var racks struct{ Racks []rackplane.Rack }
	if _, err := d.get("/api/v1/racks", &racks); err != nil || len(racks.Racks) != 1 || len(racks.Racks[0].HTTP) == 0 {
		t.Fatalf("racks %+v: %v", racks, err)
	}
	for _, url := range []string{d.api + "/healthz", "http://" + racks.Racks[0].HTTP[0] + "/healthz"} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"healthcheck", url}, &out, &out); err != nil || !strings.Contains(out.String(), `"ok"`) {
			t.Errorf("healthcheck %s: %v\n%s", url, err, out.String())
		}
	}
}

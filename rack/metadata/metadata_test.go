package metadata_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/machinecred"
	"github.com/rackplane/rackplane/rack/metadata"
)

const (
	machineID  = "0190f0e0-0000-7000-8000-00000000d001"
	otherID    = "0190f0e0-0000-7000-8000-00000000d002"
	deployment = "0190f0e0-0000-7000-8000-00000000d0d0"
)

type service struct {
	url     string
	cred    string
	refused *prometheus.CounterVec
	mu      sync.Mutex
	phoned  []string
	// userData answers user-data.
	userData func() (string, error)
}

func start(t *testing.T) *service {
	t.Helper()
	keys, err := machinecred.New(bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	s := &service{cred: keys.For(machineID, deployment),
		refused:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "refused"}, []string{"endpoint", "reason"}),
		userData: func() (string, error) { return "#cloud-config\nhostname: node1\n", nil }}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	h, err := metadata.New(metadata.Config{BaseURL: srv.URL,
		Deployment: func(id string) (events.BootDecision, bool) {
			return events.BootDecision{MachineID: id, Hostname: "node1", Purpose: events.BootPurposeLocal, DeploymentID: deployment,
				DiskImage: "ubuntu/amd64/generic/noble/stable/1"}, id == machineID || id == otherID
		},
		Check: keys.Check,
		MACs:  func(string) []string { return []string{"52:54:00:12:34:56", "52:54:00:12:34:57"} },
		UserData: func(ctx context.Context, m, d, u, remote string) (string, error) {
			if d != deployment || !strings.HasSuffix(u, "/user-data") {
				t.Errorf("user-data asked for deployment %s at %s", d, u)
			}
			return s.userData()
		},
		PhoneHome: func(ctx context.Context, m, d, remote string) (string, bool, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.phoned = append(s.phoned, m+" "+d)
			return events.MachineDeployed, false, nil
		},
		Refused: s.refused, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	h.Register(mux)
	return s
}

func do(t *testing.T, method, u, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServesTheDeployment(t *testing.T) {
	s := start(t)
	base := s.url + "/metadata/" + machineID + "/" + s.cred + "/"
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"meta-data", []string{"instance-id: " + deployment + "\n", "local-hostname: node1\n"}},
		{"user-data", []string{"#cloud-config\nhostname: node1\n"}},
		{"vendor-data", []string{"#cloud-config\n", "phone_home:\n", `url: "` + base + `phone-home"`, "post: [instance_id, hostname]", "tries: 10"}},
		{"network-config", []string{"version: 2\n", `macaddress: "52:54:00:12:34:56"`, `macaddress: "52:54:00:12:34:57"`, "dhcp4: true"}},
		{"latest/meta-data/instance-id", []string{deployment}},
		{"latest/meta-data/hostname", []string{"node1"}},
		{"latest/meta-data/local-hostname", []string{"node1"}},
		{"latest/user-data", []string{"#cloud-config\n"}},
	} {
		code, body := do(t, http.MethodGet, base+tc.path, "")
		if code != http.StatusOK {
			t.Errorf("%s: %d %s", tc.path, code, body)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: %q lacks %q", tc.path, body, w)
			}
		}
	}
	// A deployment without a preseed has empty user-data.
	s.userData = func() (string, error) { return "", rackplane.Errorf(rackplane.ENOTFOUND, "no preseed") }
	if code, body := do(t, http.MethodGet, base+"user-data", ""); code != http.StatusOK || body != "" {
		t.Errorf("user-data without a preseed: %d %q", code, body)
	}
	// The region away: try again later.
	s.userData = func() (string, error) { return "", rackplane.Errorf(rackplane.EUNAVAILABLE, "away") }
	if code, _ := do(t, http.MethodGet, base+"user-data", ""); code != http.StatusServiceUnavailable {
		t.Errorf("user-data with the region away: %d, want 503", code)
	}
	// cloud-init's phone_home form.
	form := url.Values{"instance_id": {deployment}, "hostname": {"node1"}, "pub_key_rsa": {"ssh-rsa AAAA"}}.Encode()
	if code, body := do(t, http.MethodPost, base+"phone-home", form); code != http.StatusOK || !strings.Contains(body, "deployed") {
		t.Errorf("phone-home: %d %s", code, body)
	}
	if code, _ := do(t, http.MethodPost, base+"phone-home", "instance_id=0190f0e0-0000-7000-8000-000000000bad"); code != http.StatusConflict {
		t.Errorf("phone-home of another instance: %d, want 409", code)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.phoned) != 1 || s.phoned[0] != machineID+" "+deployment {
		t.Errorf("phoned home %v", s.phoned)
	}
}

func TestRefuses(t *testing.T) {
	s := start(t)
	for _, tc := range []struct {
		name, method, path string
		status             int
		reason             string
	}{
		{"wrong credential", "GET", "/metadata/" + machineID + "/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/meta-data", 403, "wrong_credential"},
		{"another machine's credential", "GET", "/metadata/" + otherID + "/" + s.cred + "/user-data", 403, "wrong_credential"},
		{"not deploying", "GET", "/metadata/0190f0e0-0000-7000-8000-00000000dfff/" + s.cred + "/meta-data", 403, "not_deploying"},
		{"unknown document", "GET", "/metadata/" + machineID + "/" + s.cred + "/secrets", 404, "bad_path"},
		{"the base", "GET", "/metadata/" + machineID + "/" + s.cred + "/", 404, "bad_path"},
		{"no credential", "GET", "/metadata/" + machineID + "/meta-data", 404, "bad_path"},
		{"not a machine", "GET", "/metadata/node1/" + s.cred + "/meta-data", 404, "bad_path"},
		{"phone-home by GET", "GET", "/metadata/" + machineID + "/" + s.cred + "/phone-home", 405, "method"},
		{"meta-data by POST", "POST", "/metadata/" + machineID + "/" + s.cred + "/meta-data", 405, "method"},
		{"wrong credential phones home", "POST", "/metadata/" + machineID + "/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/phone-home", 403, "wrong_credential"},
	} {
		before := testutil.ToFloat64(s.refused.WithLabelValues(metadata.Endpoint, tc.reason))
		code, body := do(t, tc.method, s.url+tc.path, "")
		if code != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.status)
		}
		if after := testutil.ToFloat64(s.refused.WithLabelValues(metadata.Endpoint, tc.reason)); after != before+1 {
			t.Errorf("%s: refused{reason=%s} went from %v to %v", tc.name, tc.reason, before, after)
		}
		if strings.Contains(body, "node1") || strings.Contains(body, deployment) {
			t.Errorf("%s: the refusal tells %q", tc.name, body)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.phoned) != 0 {
		t.Errorf("refused phone-homes reported: %v", s.phoned)
	}
}

// TestNetworkConfig: the installed system gets DHCPv4 on the NIC it
// booted from, first, and on its other NICs as optional ones whose
// routes rank after it, from its inventory, with any MAC of the machine
// the inventory lacks; without an inventory, on every MAC of the machine.
func TestNetworkConfig(t *testing.T) {
	boot := events.BootNIC{MAC: "52:54:00:00:00:02", Name: "enp2s0", Boot: true, Link: events.LinkUp}
	other := events.BootNIC{MAC: "52:54:00:00:00:01", Name: "enp1s0", Link: events.LinkDown}
	up := events.BootNIC{MAC: "52:54:00:00:00:03", Name: "enp3s0", Link: events.LinkUp}
	nic := func(i int, mac string) string {
		return fmt.Sprintf("  nic%d:\n    match:\n      macaddress: \"%s\"\n    dhcp4: true\n", i, mac)
	}
	const secondary = "    dhcp4-overrides:\n      route-metric: 200\n    optional: true\n"
	for _, tc := range []struct {
		name string
		d    events.BootDecision
		macs []string
		want string
	}{
		{"inventory, boot NIC second", events.BootDecision{NICs: []events.BootNIC{other, boot}}, []string{"52:54:00:00:00:02"},
			"version: 2\nethernets:\n" + nic(0, boot.MAC) + nic(1, other.MAC) + secondary},
		{"a MAC the inventory lacks", events.BootDecision{NICs: []events.BootNIC{boot}}, []string{"52:54:00:00:00:02", "52:54:00:00:00:09"},
			"version: 2\nethernets:\n" + nic(0, boot.MAC) + nic(1, "52:54:00:00:00:09") + secondary},
		{"inventory without a boot NIC", events.BootDecision{NICs: []events.BootNIC{other, up}}, nil,
			"version: 2\nethernets:\n" + nic(0, other.MAC) + "    optional: true\n" + nic(1, up.MAC)},
		{"no inventory: the machine's MACs", events.BootDecision{}, []string{"52:54:00:00:00:01", "52:54:00:00:00:02"},
			"version: 2\nethernets:\n" + nic(0, "52:54:00:00:00:01") + nic(1, "52:54:00:00:00:02")},
		{"nothing", events.BootDecision{}, nil, "version: 2\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := metadata.NetworkConfig(metadata.NICs(tc.d, tc.macs)); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

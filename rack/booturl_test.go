package rack_test

import (
	"strings"
	"testing"

	"github.com/rackplane/rackplane/rack"
)

// TestBootURLRefusedWhenNoMachineCanReachIt: a rack does not start with a
// boot URL no machine could reach (the compose file's placeholder, a
// listening address, no host), and the refusal names the setting to give;
// URLs machines can reach, and none at all, pass.
func TestBootURLRefusedWhenNoMachineCanReachIt(t *testing.T) {
	tests := []struct {
		url  string
		want string // "" when accepted
	}{
		{"", ""},
		{"http://10.20.0.2:5248", ""},
		{"http://10.20.0.2:5248/", ""},
		{"https://rack1.example.net", ""},
		{"http://[2001:db8::2]:5248", ""},
		{"http://127.0.0.1:5248", ""}, // rackplane dev on a laptop
		{rack.PlaceholderBootURL, "is a placeholder"},
		{"http://RACK.INVALID.:5248", "is a placeholder"},
		{"http://0.0.0.0:5248", "0.0.0.0 is where a server listens"},
		{"http://[::]:5248", ":: is where a server listens"},
		{"http://:5248", "has no host"},
		{"http://10.20.0.2:99999", `port "99999"`},
		{"tftp://10.20.0.2", "want an http:// URL"},
		{"10.20.0.2:5248", "want an http:// URL"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			cfg := rack.DefaultConfig()
			cfg.Name, cfg.BootURL = "r", tt.url
			err := cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%v; want it to say %q", err, tt.want)
			}
			if tt.want != "want an http:// URL" && !strings.Contains(err.Error(), "set -boot-url (RACKPLANE_BOOT_URL)") {
				t.Errorf("%v; want it to name the setting to give", err)
			}
		})
	}
}

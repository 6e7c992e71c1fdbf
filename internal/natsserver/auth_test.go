package natsserver

import (
	"strings"
	"testing"
)

// TestAuthValidate: a configuration with a wrong kind of key, or the
// system account's name, is refused with every problem named.
func TestAuthValidate(t *testing.T) {
	dir := t.TempDir()
	keys, err := LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	good, err := keys.Auth("RACKPLANE")
	if err != nil {
		t.Fatal(err)
	}
	bad := good
	bad.Account, bad.Issuer, bad.Region = SystemAccount, good.Region, good.System
	err = bad.Validate()
	for _, want := range []string{`NATS account "SYS"`, "callout issuer", "must be different nkeys"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v; want %q in it", err, want)
		}
	}
	// The same directory gives the same keys; another, others.
	for _, c := range []struct {
		dir  string
		same bool
	}{{dir, true}, {t.TempDir(), false}} {
		again, err := LoadOrCreateKeys(c.dir)
		if err != nil {
			t.Fatal(err)
		}
		if a, _ := again.Auth("RACKPLANE"); (a == good) != c.same {
			t.Errorf("keys of %s: %+v, first %+v; want the same: %v", c.dir, a, good, c.same)
		}
	}
}

package machinecred_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/rack/machinecred"
)

const (
	machine    = "0190f0e0-0000-7000-8000-000000000001"
	deployment = "0190f0e0-0000-7000-8000-0000000000d1"
)

func TestCredentialOpensOnlyItsDeployment(t *testing.T) {
	dir := t.TempDir()
	k, err := machinecred.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	cred := k.For(machine, deployment)
	if len(cred) != 43 || strings.ContainsAny(cred, "/+= ") {
		t.Fatalf("credential %q: want 43 URL-safe characters", cred)
	}
	other, err := machinecred.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                   string
		k                      *machinecred.Keyring
		machine, deploy, given string
		want                   bool
	}{
		{"its own", k, machine, deployment, cred, true},
		{"another deployment of the machine", k, machine, "0190f0e0-0000-7000-8000-0000000000d2", cred, false},
		{"another machine", k, "0190f0e0-0000-7000-8000-000000000002", deployment, cred, false},
		{"another rack's key", other, machine, deployment, cred, false},
		{"no deployment", k, machine, "", k.For(machine, ""), false},
		{"empty", k, machine, deployment, "", false},
		{"cut short", k, machine, deployment, cred[:42], false},
		{"one character changed", k, machine, deployment, flip(cred), false},
		{"not base64", k, machine, deployment, "!!!!", false},
		// "m\x00d" + "e" must not read as "m" + "d\x00e".
		{"the fields moved across the separator", k, machine + "\x00x", "y", k.For(machine, "x\x00y"), false},
	} {
		if got := tc.k.Check(tc.machine, tc.deploy, tc.given); got != tc.want {
			t.Errorf("%s: Check = %v, want %v", tc.name, got, tc.want)
		}
	}

	// The key outlives a restart of the rack: deployments under way keep
	// their credentials.
	again, err := machinecred.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Check(machine, deployment, cred) {
		t.Fatal("the credential no longer opens after the keyring was opened again")
	}
	fi, err := os.Stat(filepath.Join(dir, machinecred.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("key file: mode %v size %d, want 0600 and 32 bytes", fi.Mode().Perm(), fi.Size())
	}
}

func TestDamagedKeyFileRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, machinecred.KeyFile), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := machinecred.Open(dir)
	if err == nil || !strings.Contains(err.Error(), "remove it") {
		t.Fatalf("a 5-byte key file: %v, want refused with what to do", err)
	}
}

func flip(s string) string {
	b := []byte(s)
	if b[0] == 'A' {
		b[0] = 'B'
	} else {
		b[0] = 'A'
	}
	return string(b)
}

package capabilities_test

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/capabilities"
)

// TestCanonical pins the canonical form capabilities.v1.json defines, which
// racks in other languages reproduce.
func TestCanonical(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"keys sorted at every level, digest left out",
			`{"z": 1, "digest": "ab", "a": {"y": [3, {"b": 1, "a": 2}], "x": null}}`,
			`{"a":{"x":null,"y":[3,{"a":2,"b":1}]},"z":1}`},
		{"numbers as written", `{"size": 1000000, "big": 9007199254740993}`, `{"big":9007199254740993,"size":1000000}`},
		{"no HTML escaping", `{"t": "a<b>&c"}`, `{"t":"a<b>&c"}`},
		{"JSON escapes kept", `{"t": "q\"\\\n\u0001é"}`, `{"t":"q\"\\\n\u0001é"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := capabilities.Canonical([]byte(c.in))
			if err != nil || string(got) != c.want {
				t.Fatalf("Canonical(%s) = %s, %v; want %s", c.in, got, err, c.want)
			}
		})
	}
	if _, err := capabilities.Canonical([]byte(`[1]`)); err == nil {
		t.Fatal("a JSON array is not a capability object, but Canonical took it")
	}
}

// TestDigestIsOfTheCanonicalForm: the digest is the sha256 of exactly the
// canonical JSON, so anyone can recompute it from the snapshot.
func TestDigestIsOfTheCanonicalForm(t *testing.T) {
	c := events.Capabilities{
		OSes:             []events.OS{{Name: "debian", Title: "Debian <12>"}},
		Bootloaders:      []events.Bootloader{},
		StorageProviders: []events.StorageProvider{},
	}
	want := `{"bootloaders":[],"oses":[{"name":"debian","releases":null,"title":"Debian <12>"}],"storage_providers":[]}`
	sum := sha256.Sum256([]byte(want))
	if got := capabilities.Digest(c); got != hex.EncodeToString(sum[:]) {
		t.Fatalf("digest %s is not the sha256 of %s", got, want)
	}
}

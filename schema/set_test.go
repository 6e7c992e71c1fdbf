package schema_test

import (
	"encoding/json"
	"io/fs"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/schema"
)

// TestFiles: every file compiles, names itself by its $id (other files
// refer to it by that), and every rpc request schema has its reply schema
// and the other way round.
func TestFiles(t *testing.T) {
	set, err := schema.Default()
	if err != nil {
		t.Fatal(err)
	}
	names, err := fs.Glob(schema.FS, "*.json")
	if err != nil || len(names) == 0 {
		t.Fatalf("no schema files: %v", err)
	}
	for _, n := range names {
		b, err := fs.ReadFile(schema.FS, n)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			ID string `json:"$id"`
		}
		if err := json.Unmarshal(b, &doc); err != nil || doc.ID != schema.BaseURI+n {
			t.Errorf("%s: $id %q, want %q (%v)", n, doc.ID, schema.BaseURI+n, err)
		}
		base := strings.TrimSuffix(n, ".json")
		for _, pair := range [][2]string{{".request.", ".reply."}, {".reply.", ".request."}} {
			// The part is inside the name or at its end: a trailing dot
			// makes both cases one.
			if other := strings.TrimSuffix(strings.Replace(base+".", pair[0], pair[1], 1), "."); other != base && !set.Has(other) {
				t.Errorf("%s has no %s", n, other+".json")
			}
		}
	}
}

package machine_test

import (
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/machine"
)

func TestParseBytes(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		err  string
	}{
		{"0", 0, ""},
		{"8589934592", 8 << 30, ""},
		{"8GiB", 8 << 30, ""},
		{"8gib", 8 << 30, ""},
		{"8G", 8 << 30, ""},
		{"8 GiB", 8 << 30, ""},
		{"500GB", 500e9, ""},
		{"1.5TiB", 3 << 39, ""},
		{"1.5KiB", 1536, ""},
		{"0.001K", 2, ""}, // 1.024 bytes, rounded up
		{"8PiB", 8 << 50, ""},
		{"8.001PiB", 0, "over 8 PiB"},
		{"9007199254740993", 0, "over 8 PiB"},
		{"99999999999999999999", 0, "over 8 PiB"},
		{"8XB", 0, `unit "XB"`},
		{"-1", 0, "want a number"},
		{"1.5555GiB", 0, "want a number"},
		{"GiB", 0, "want a number"},
		{"", 0, "want a number"},
		{"1e9", 0, "want a number"},
		{"1KB", 1000, ""},
	} {
		got, err := machine.ParseBytes(tt.in)
		if tt.err == "" && (err != nil || got != tt.want) || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d, %q", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestParseFilter(t *testing.T) {
	q, _ := url.ParseQuery("status=ready&arch=arm64&min_cores=8&min_memory=64GiB&min_disks=2&min_disk_size=1TB&tag=rack4&tag=gpu&tag=gpu" +
		"&mac=52-54-00-AA-00-01&hostname=web&os=ubuntu&after=node5&limit=10")
	f, err := machine.ParseFilter(q)
	if err != nil {
		t.Fatal(err)
	}
	want := machine.Filter{Status: "ready", Hostname: "web", MAC: "52:54:00:aa:00:01", OS: "ubuntu", Arch: "arm64", MinCores: 8,
		MinDisks: 2, MinMemory: 64 << 30, MinDiskSize: 1e12, Tags: []string{"gpu", "rack4"}, After: "node5", Limit: 10}
	if !reflect.DeepEqual(f, want) {
		t.Fatalf("got %+v\nwant %+v", f, want)
	}
	if f, err := machine.ParseFilter(url.Values{}); err != nil || f.Limit != machine.DefaultListLimit {
		t.Fatalf("no query: %+v %v", f, err)
	}
	// Every bad value is named in one error.
	q, _ = url.ParseQuery("status=bogus&min_cores=x&min_memory=8XB&tag=GPU&limit=0&mac=zz&colour=red")
	_, err = machine.ParseFilter(q)
	if rackplane.ErrorCode(err) != rackplane.EINVALID {
		t.Fatalf("bad query: %v", err)
	}
	for _, w := range []string{`status "bogus"`, `min_cores "x"`, `min_memory "8XB"`, `tag "GPU"`, `limit "0"`, `mac "zz"`, `"colour": no such parameter`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %s", err, w)
		}
	}
}

func TestCheckTags(t *testing.T) {
	got, err := machine.CheckTags([]string{"rack4", "gpu", "rack4", "a.b_c-d"})
	if err != nil || strings.Join(got, ",") != "a.b_c-d,gpu,rack4" {
		t.Fatalf("%v %v", got, err)
	}
	if got, err := machine.CheckTags(nil); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("no tags: %#v %v", got, err)
	}
	_, err = machine.CheckTags([]string{"ok", "Bad", "_x", strings.Repeat("a", 64), "é"})
	for _, w := range []string{`"Bad"`, `"_x"`, `"` + strings.Repeat("a", 64) + `"`, `"é"`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v does not name %s", err, w)
		}
	}
	if strings.Contains(err.Error(), `"ok"`) {
		t.Errorf("error names a good tag: %v", err)
	}
}

// FuzzParseFilter: whatever the query, ParseFilter answers a filter or an
// invalid error, never panics; a filter it answers is within its bounds
// and survives the round trip through Query.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"", "status=ready", "min_memory=8GiB&min_cores=4", "tag=a&tag=b&tag=a", "min_disk_size=1.5T",
		"arch=arm64&after=node1&limit=5", "min_memory=99999999999999999999", "tag=%00", "min_cores=1&min_cores=2", "mac=52:54:00:00:00:01",
		"min_memory=0.001k", "limit=1000&hostname=x%25y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		flt, err := machine.ParseFilter(q)
		if err != nil {
			if rackplane.ErrorCode(err) != rackplane.EINVALID {
				t.Fatalf("%q: error %v is not invalid", raw, err)
			}
			return
		}
		if flt.MinCores < 0 || flt.MinDisks < 0 || flt.MinMemory < 0 || flt.MinDiskSize < 0 || flt.MinMemory > 1<<53 ||
			flt.MinDiskSize > 1<<53 || flt.Limit < 1 || flt.Limit > machine.MaxListLimit || len(flt.Tags) > events.MaxMachineTags {
			t.Fatalf("%q: out of bounds: %+v", raw, flt)
		}
		if _, err := machine.CheckTags(flt.Tags); err != nil {
			t.Fatalf("%q: tags %v: %v", raw, flt.Tags, err)
		}
		again, err := machine.ParseFilter(flt.Query())
		if err != nil || !reflect.DeepEqual(again, flt) {
			t.Fatalf("%q: round trip %+v → %v → %+v, %v", raw, flt, flt.Query(), again, err)
		}
	})
}

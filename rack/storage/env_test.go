package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/scriptrun"
	"github.com/rackplane/rackplane/internal/scriptrun/scriptruntest"
)

func TestScriptEnvironment(t *testing.T) {
	t.Setenv("RACKPLANE_SECRET", "must not leak")
	search := t.TempDir()
	dir := filepath.Join(search, "envdump")
	dump := `env | grep -v -e '^PWD=' -e '^SHLVL=' -e '^_=' | sort > "$EXTP_OUT/$(basename "$0").env"; pwd > "$EXTP_OUT/$(basename "$0").pwd"`
	scripts := map[string]string{}
	for _, a := range Actions {
		scripts[string(a)] = dump
	}
	scripts["attach"] = dump + "; echo; echo rbd:pool/vol"
	writeProvider(t, dir, "out where to dump\nFromSnap snapshot to start from\n", scripts)
	out := t.TempDir()
	m, _ := newManager(t, Config{SearchPath: []string{search}})
	id := newVolumeID(t)
	name := VolumeName(id, "m-7")
	req := Request{VolumeID: id, Machine: "m-7", Provider: "envdump", SizeMiB: 100,
		Parameters: map[string]string{"out": out, "FromSnap": "snap 1; $(rm -rf /)"}}
	ctx := context.Background()
	steps := []struct {
		action string
		req    Request
		extra  []string
	}{
		{"create", req, []string{"VOL_SIZE=100"}},
		{"grow", Request{VolumeID: id, NewSizeMiB: 300}, []string{"VOL_SIZE=100", "VOL_NEW_SIZE=300"}},
		{"attach", Request{VolumeID: id}, nil},
		{"open", Request{VolumeID: id, Exclusive: true}, []string{"VOL_OPEN_EXCLUSIVE=true"}},
		{"snapshot", Request{VolumeID: id, SnapshotName: "nightly-2024.06_01"}, []string{"VOL_SNAPSHOT_NAME=nightly-2024.06_01", "VOL_SNAPSHOT_SIZE=300"}},
		{"close", Request{VolumeID: id}, nil},
		{"open", Request{VolumeID: id}, []string{"VOL_OPEN_EXCLUSIVE=false"}},
		{"close", Request{VolumeID: id}, nil},
		{"detach", Request{VolumeID: id}, nil},
		{"setinfo", Request{VolumeID: id, Machine: "m-8"}, nil},
		{"verify", Request{VolumeID: id}, nil},
	}
	markers := map[string]bool{}
	for _, s := range steps {
		if _, err := m.Do(ctx, s.action, s.req); err != nil {
			t.Fatalf("%s: %v", s.action, err)
		}
		owner := "m-7"
		if s.action == "setinfo" || s.action == "verify" {
			owner = "m-8"
		}
		want := append([]string{
			"EXTP_FROMSNAP=snap 1; $(rm -rf /)",
			"EXTP_OUT=" + out,
			"PATH=" + scriptrun.SafePath,
			"VOL_METADATA=rackplane-machine=" + owner,
			"VOL_NAME=" + name, // fixed at create, whoever owns it now
			"VOL_UUID=" + id,
		}, s.extra...)
		slices.Sort(want)
		b, err := os.ReadFile(filepath.Join(out, s.action+".env"))
		if err != nil {
			t.Fatal(err)
		}
		// Every run has a marker of its own (RunMarker).
		got := strings.Split(strings.TrimSpace(string(b)), "\n")
		n := len(markers)
		got = slices.DeleteFunc(got, func(l string) bool {
			v, ok := strings.CutPrefix(l, RunMarker+"=")
			if ok && (len(v) != 16 || markers[v]) {
				t.Errorf("%s: marker %q: want 16 hex digits, new at each run", s.action, l)
			}
			if ok {
				markers[v] = true
			}
			return ok
		})
		if len(markers) != n+1 {
			t.Errorf("%s: no %s in the environment", s.action, RunMarker)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s environment:\n%s\nwant:\n%s", s.action, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		wd, _ := os.ReadFile(filepath.Join(out, s.action+".pwd"))
		if strings.TrimSpace(string(wd)) != dir {
			t.Errorf("%s ran in %s, want %s", s.action, wd, dir)
		}
	}
}

func TestVolumeLogIsBounded(t *testing.T) {
	search := t.TempDir()
	// Each verify prints 100 lines of about 50 bytes.
	writeProvider(t, filepath.Join(search, "chatty"), "", map[string]string{
		"verify": `i=0; while [ $i -lt 100 ]; do echo "run $VOL_SIZE line $i padding padding padding padding"; i=$((i+1)); done`,
	})
	const limit = 16 << 10
	m, _ := newManager(t, Config{SearchPath: []string{search}, LogMaxBytes: limit})
	id := newVolumeID(t)
	for i := range 12 {
		if _, err := m.Do(context.Background(), "verify", Request{VolumeID: id, Machine: "m", Provider: "chatty"}); err != nil {
			t.Fatalf("verify %d: %v", i, err)
		}
	}
	logs := filepath.Join(m.cfg.DataDir, "storage", "logs")
	entries, _ := os.ReadDir(logs)
	if len(entries) != 1 {
		t.Fatalf("want one log file, got %v", entries)
	}
	b, err := os.ReadFile(filepath.Join(logs, id+".log"))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > limit {
		t.Errorf("log is %d bytes, limit %d", len(b), limit)
	}
	if !strings.HasPrefix(string(b), "[earlier output dropped") {
		t.Errorf("log does not say it was cut:\n%.200s", b)
	}
	// The newest run is whole at the end.
	if n := strings.Count(string(b), "=== "); n < 2 || !strings.HasSuffix(string(b), "verify ok after "+lastField(string(b))) {
		t.Errorf("log tail:\n%s", b[max(0, len(b)-300):])
	}
	if !strings.Contains(string(b), "line 99 ") {
		t.Error("last line of the last run is missing")
	}
}

func lastField(s string) string {
	f := strings.Fields(s)
	return f[len(f)-1] + "\n"
}

func TestInterruptedActionIsRecorded(t *testing.T) {
	data := t.TempDir()
	search := t.TempDir()
	writeProvider(t, filepath.Join(search, "p"), "", nil)
	m, _ := newManager(t, Config{SearchPath: []string{search}, DataDir: data})
	id := newVolumeID(t)
	if _, err := m.Do(context.Background(), "create", Request{VolumeID: id, Machine: "m", Provider: "p", SizeMiB: 5}); err != nil {
		t.Fatal(err)
	}
	// As if the rack died while attach ran.
	rec, _, _ := m.Record(id)
	rec.Pending = "attach"
	if err := m.records.save(rec); err != nil {
		t.Fatal(err)
	}
	// And a damaged record of another volume must not stop the start.
	broken := newVolumeID(t)
	scriptruntest.WriteFile(t, m.records.path(broken), "{not json", 0o640)
	m2, _ := newManager(t, Config{SearchPath: []string{search}, DataDir: data})
	if _, err := m2.Do(context.Background(), "verify", Request{VolumeID: broken, Machine: "m", Provider: "p"}); rackplane.ErrorCode(err) != rackplane.EINTERNAL ||
		!strings.Contains(rackplane.ErrorMessage(err), "unreadable") {
		t.Errorf("action on a damaged record: %v", err)
	}
	rec, found, err := m2.Record(id)
	if err != nil || !found {
		t.Fatal(found, err)
	}
	if rec.Pending != "" || rec.State != events.VolumeStateUnknown || rec.LastAction != "attach" || rec.LastOK || !strings.Contains(rec.LastError, "interrupted") {
		t.Errorf("record after restart: %+v", rec)
	}
	if rec.SizeMiB != 5 || rec.Name != VolumeName(id, "m") {
		t.Errorf("record lost what it knew: %+v", rec)
	}
}

func TestCallerGivesUpScriptFinishes(t *testing.T) {
	search := t.TempDir()
	writeProvider(t, filepath.Join(search, "slow"), "", map[string]string{"create": "sleep 0.5; echo made"})
	m, pub := newManager(t, Config{SearchPath: []string{search}})
	id := newVolumeID(t)
	req := Request{VolumeID: id, Machine: "m", Provider: "slow", SizeMiB: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := m.Do(ctx, "create", req)
	if rackplane.ErrorCode(err) != rackplane.ETIMEOUT || !strings.Contains(rackplane.ErrorMessage(err), "still running") {
		t.Fatalf("impatient caller got %v", err)
	}
	if _, err := m.Do(context.Background(), "attach", Request{VolumeID: id}); rackplane.ErrorCode(err) != rackplane.ECONFLICT {
		t.Errorf("second action while the first runs: %v", err)
	}
	rec, _, _ := m.Record(id)
	if rec.Pending != "create" {
		t.Errorf("record while create runs: %+v", rec)
	}
	scriptruntest.Eventually(t, "the create's outcome", func() bool { return len(pub.of(events.TypeVolumeActionCompleted)) == 1 })
	d := pub.actions(t)[0]
	if !d.OK || d.State != events.VolumeStateCreated {
		t.Errorf("outcome %+v", d)
	}
	rec, _, _ = m.Record(id)
	if rec.Pending != "" || rec.State != events.VolumeStateCreated {
		t.Errorf("record after create: %+v", rec)
	}
}

func TestPerActionTimeout(t *testing.T) {
	search := t.TempDir()
	writeProvider(t, filepath.Join(search, "p"), "", map[string]string{"verify": "sleep 1", "setinfo": "sleep 1"})
	m, _ := newManager(t, Config{SearchPath: []string{search}, ActionTimeout: 5 * time.Second,
		Timeouts: map[Action]time.Duration{ActionVerify: 100 * time.Millisecond}})
	req := Request{VolumeID: newVolumeID(t), Machine: "m", Provider: "p"}
	if _, err := m.Do(context.Background(), "verify", req); rackplane.ErrorCode(err) != rackplane.ETIMEOUT {
		t.Errorf("verify: %v, want timeout", err)
	}
	if _, err := m.Do(context.Background(), "setinfo", req); err != nil {
		t.Errorf("setinfo under the default timeout: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	ok := func() Config {
		return Config{RackID: testRack, SearchPath: []string{"/srv/rackplane/storage"}, DataDir: "/var/lib/rackplane", Events: newCollector(t)}
	}
	cases := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"fine", func(*Config) {}, ""},
		{"rack id", func(c *Config) { c.RackID = "rack-1" }, "RackID"},
		{"no search path", func(c *Config) { c.SearchPath = nil }, "SearchPath must list"},
		{"relative search path", func(c *Config) { c.SearchPath = []string{"providers"} }, `SearchPath entry "providers"`},
		{"relative data dir", func(c *Config) { c.DataDir = "data" }, "DataDir"},
		{"no publisher", func(c *Config) { c.Events = nil }, "Events"},
		{"negative timeout", func(c *Config) { c.ActionTimeout = -1 }, "must not be negative"},
		{"unknown action timeout", func(c *Config) { c.Timeouts = map[Action]time.Duration{"evil": time.Second} }, `Timeouts["evil"]`},
		{"optional action timeout", func(c *Config) { c.Timeouts = map[Action]time.Duration{ActionSnapshot: time.Hour} }, ""},
		{"tiny log", func(c *Config) { c.LogMaxBytes = 100 }, "LogMaxBytes"},
	}
	for _, tc := range cases {
		c := ok()
		tc.change(&c)
		err := c.validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (rackplane.ErrorCode(err) != rackplane.EINVALID || !strings.Contains(fmt.Sprint(err), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestFailedActionKeepsOwnerAndParameters(t *testing.T) {
	search := t.TempDir()
	writeProvider(t, filepath.Join(search, "p"), "pool the pool\n", map[string]string{"setinfo": "echo refused >&2; exit 1"})
	m, _ := newManager(t, Config{SearchPath: []string{search}})
	id := newVolumeID(t)
	ctx := context.Background()
	if _, err := m.Do(ctx, "create", Request{VolumeID: id, Machine: "old", Provider: "p", SizeMiB: 1, Parameters: map[string]string{"pool": "a"}}); err != nil {
		t.Fatal(err)
	}
	_, err := m.Do(ctx, "setinfo", Request{VolumeID: id, Machine: "new", Parameters: map[string]string{"pool": "b"}})
	if err == nil || !strings.Contains(rackplane.ErrorMessage(err), "refused") {
		t.Fatalf("setinfo: %v", err)
	}
	rec, _, _ := m.Record(id)
	if rec.Machine != "old" || rec.Parameters["pool"] != "a" || rec.State != events.VolumeStateCreated || rec.LastOK {
		t.Errorf("record after a failed setinfo: %+v", rec)
	}
	if _, err := m.Do(ctx, "attach", Request{VolumeID: id, Machine: "new"}); rackplane.ErrorCode(err) != rackplane.ECONFLICT {
		t.Errorf("attach for another owner: %v", err)
	}
}

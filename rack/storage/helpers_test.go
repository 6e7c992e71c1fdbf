package storage

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/scriptrun/scriptruntest"
	"github.com/rackplane/rackplane/schema"
)

const testRack = "0190a3c2-1111-7000-8000-000000000001"

// collector is the Publisher of tests: it keeps every event and checks it
// against its schema as it arrives. Every action that gets as far as a
// volume_action_completed event has saved the record it answers with, so
// the collector checks that record against the storage rpc's reply
// schema too: every reply the tests make is one the schema accepts.
type collector struct {
	t       testing.TB
	v       *events.Validator
	set     *schema.Set
	records records // set once the manager exists
	mu      sync.Mutex
	ev      []events.Event
}

func newCollector(t testing.TB) *collector {
	v, err := events.NewValidator()
	if err != nil {
		t.Fatalf("validator: %v", err)
	}
	set, err := schema.Default()
	if err != nil {
		t.Fatalf("schemas: %v", err)
	}
	return &collector{t: t, v: v, set: set}
}

func (c *collector) Publish(e events.Event) {
	if err := c.v.Validate(e); err != nil {
		c.t.Errorf("event %s does not validate: %v\n%s", e.Type, err, e.Data)
	}
	if e.Type == events.TypeVolumeActionCompleted && c.records.dir != "" {
		c.checkReply(e)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ev = append(c.ev, e)
}

// checkReply checks the record of e's volume, as the action left it,
// against the reply schema of storage.<action>.
func (c *collector) checkReply(e events.Event) {
	var d events.VolumeActionCompleted
	if err := e.DecodeData(&d); err != nil {
		c.t.Errorf("decode %s: %v", e.Type, err)
		return
	}
	rec, found, err := c.records.load(d.VolumeID)
	if err != nil || !found {
		c.t.Errorf("no record of volume %s after %s: %v", d.VolumeID, d.Action, err)
		return
	}
	b, err := json.Marshal(rec)
	if err != nil {
		c.t.Errorf("encode record: %v", err)
		return
	}
	name := events.StorageRPCSchema(Method(Action(d.Action)), events.PartReply)
	if err := c.set.ValidateJSON(name, b); err != nil {
		c.t.Errorf("the record after %s, the reply, breaks %s: %v\n%s", d.Action, name, err, b)
	}
}

// of returns the events of type typ so far.
func (c *collector) of(typ string) []events.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []events.Event
	for _, e := range c.ev {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func (c *collector) actions(t testing.TB) []events.VolumeActionCompleted {
	t.Helper()
	var out []events.VolumeActionCompleted
	for _, e := range c.of(events.TypeVolumeActionCompleted) {
		var d events.VolumeActionCompleted
		if err := e.DecodeData(&d); err != nil {
			t.Fatal(err)
		}
		if e.Subject != "volume/"+d.VolumeID || e.Source != events.RackSource(testRack) {
			t.Errorf("event subject %q source %q for volume %s", e.Subject, e.Source, d.VolumeID)
		}
		out = append(out, d)
	}
	return out
}

func newManager(t testing.TB, cfg Config) (*Manager, *collector) {
	t.Helper()
	pub := newCollector(t)
	cfg.RackID = testRack
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.Events = pub
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("new manager: %v", err)
	}
	pub.records = m.records
	return m, pub
}

func newVolumeID(t testing.TB) string {
	t.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// copyProvider copies a provider directory, keeping file modes.
func copyProvider(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatalf("copy provider: %v", err)
	}
}

// writeProvider makes a provider whose every required script succeeds
// silently, except those given in scripts (name to shell body; an empty
// body removes the script). Optional and other scripts are written only
// when given.
func writeProvider(t testing.TB, dir string, params string, scripts map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range RequiredActions {
		body, ok := scripts[string(a)]
		if !ok {
			body = "exit 0"
		}
		if body == "" {
			continue
		}
		scriptruntest.WriteFile(t, filepath.Join(dir, string(a)), "#!/bin/sh\n"+body+"\n", 0o755)
	}
	for name, body := range scripts {
		if !slices.Contains(RequiredActions, Action(name)) && body != "" {
			scriptruntest.WriteFile(t, filepath.Join(dir, name), "#!/bin/sh\n"+body+"\n", 0o755)
		}
	}
	scriptruntest.WriteFile(t, filepath.Join(dir, parametersFile), params, 0o644)
}

// detachLoops detaches every loop device backed by a file under dir, so
// a failing test leaves no device behind.
func detachLoops(t testing.TB, dir string) {
	t.Helper()
	t.Cleanup(func() {
		out, err := exec.Command("losetup", "--list", "--noheadings", "--raw", "--output", "NAME,BACK-FILE").Output()
		if err != nil {
			t.Errorf("losetup --list: %v", err)
			return
		}
		for _, line := range strings.Split(string(out), "\n") {
			name, back, ok := strings.Cut(line, " ")
			if ok && strings.HasPrefix(back, dir+"/") {
				if out, err := exec.Command("losetup", "--detach", name).CombinedOutput(); err != nil {
					t.Errorf("detach %s: %v: %s", name, err, out)
				}
			}
		}
	})
}

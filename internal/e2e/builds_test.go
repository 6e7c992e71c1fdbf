package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// builds holds what the tests build from Debian packages (the ephemeral
// environment, the disk image), once per test binary, with the
// documented commands (`rackplane images build-ephemeral`, `build-disk`)
// of the binaries TestMain built: the builds are reproducible, so every
// test that imports one gets the same bytes, and building it again for
// each test only burnt the CI's two CPUs (building in the test's own
// process, under the race detector, took minutes). A build that fails
// fails the test that asked; the next asks again.
var builds buildCache

type buildCache struct {
	mu   sync.Mutex
	dir  string
	done map[string]any
}

// once returns what build made for name, building it into a directory
// that lives as long as the test binary when no test did yet.
func (c *buildCache) once(t *testing.T, name string, build func(ctx context.Context, out string) (any, error)) any {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.done[name]; ok {
		return r
	}
	if c.dir == "" {
		dir, err := os.MkdirTemp("", "rackplane-e2e-builds-")
		if err != nil {
			t.Fatal(err)
		}
		c.dir = dir
	}
	out, err := os.MkdirTemp(c.dir, name+"-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	began := time.Now()
	r, err := build(ctx, out)
	if err != nil {
		os.RemoveAll(out)
		t.Fatalf("build the %s: %v", name, err)
	}
	t.Logf("built the %s in %s for this test binary's tests", name, time.Since(began).Round(time.Second))
	if c.done == nil {
		c.done = map[string]any{}
	}
	c.done[name] = r
	return r
}

// remove deletes the builds; TestMain calls it after the tests.
func (c *buildCache) remove() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dir != "" {
		os.RemoveAll(c.dir)
	}
}

// built is an image source directory a build command wrote: its version
// and, for a disk image, the raw image's size and sha256.
type built struct {
	Dir, VersionID string
	DiskSize       int64
	DiskSHA256     string
}

// buildImage runs `rackplane images <command> -out DIR args...` once for
// the test binary and reads the manifest it wrote.
func buildImage(t *testing.T, command string, args ...string) *built {
	t.Helper()
	return builds.once(t, command, func(ctx context.Context, out string) (any, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "rackplane"), append([]string{"images", command, "-out", out}, args...)...)
		cmd.Dir = "../.." // the module's root, the agent's source
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("rackplane images %s: %v\n%s", command, err, b)
		}
		raw, err := os.ReadFile(filepath.Join(out, "manifest.json"))
		if err != nil {
			return nil, err
		}
		var m struct {
			Versions []struct {
				OS, Arch, Subarch, Release, Label, Version string
				Disk                                       *struct {
					Size   int64
					SHA256 string
				}
			}
		}
		if err := json.Unmarshal(raw, &m); err != nil || len(m.Versions) != 1 {
			return nil, fmt.Errorf("manifest of rackplane images %s: %v\n%s", command, err, raw)
		}
		v := m.Versions[0]
		b := &built{Dir: out, VersionID: strings.Join([]string{v.OS, v.Arch, v.Subarch, v.Release, v.Label, v.Version}, "/")}
		if v.Disk != nil {
			b.DiskSize, b.DiskSHA256 = v.Disk.Size, v.Disk.SHA256
		}
		return b, nil
	}).(*built)
}

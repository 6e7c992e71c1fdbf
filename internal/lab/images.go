package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rackplane/rackplane/internal/diskimage"
	"github.com/rackplane/rackplane/internal/ephemeral"
)

// image is an image source directory the lab built (or found built) and
// the version its manifest names.
type image struct {
	what, dir                              string
	os, arch, subarch, release, label, ver string
}

func (im image) versionID() string {
	return strings.Join([]string{im.os, im.arch, im.subarch, im.release, im.label, im.ver}, "/")
}

// Where the lab keeps what it built: a second start imports it again
// (which the rack finds unchanged) without building.
func ephemeralDir(dataDir string) string {
	return filepath.Join(labDir(dataDir), "images", "ephemeral")
}
func diskImageDir(dataDir string) string { return filepath.Join(labDir(dataDir), "images", "disk") }

// ensureImage returns the image built in dir, building it with build
// (into a directory beside it, renamed into place when complete, so a
// build cut short is never taken for one) when there is none.
func ensureImage(ctx context.Context, what, dir string, out io.Writer, build func(ctx context.Context, dir string) error) (image, error) {
	if im, err := readManifest(what, dir); err == nil {
		fmt.Fprintf(out, "lab: %s %s (kept in %s)\n", what, im.ver, dir)
		return im, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return image{}, err
	}
	fmt.Fprintf(out, "lab: building the %s into %s (once for this data directory; a few minutes)\n", what, dir)
	began := time.Now()
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return image{}, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".building-")
	if err != nil {
		return image{}, err
	}
	defer os.RemoveAll(tmp)
	if err := build(ctx, tmp); err != nil {
		return image{}, fmt.Errorf("build the %s: %w", what, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return image{}, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return image{}, err
	}
	im, err := readManifest(what, dir)
	if err != nil {
		return image{}, err
	}
	fmt.Fprintf(out, "lab: built the %s %s in %s\n", what, im.ver, time.Since(began).Round(time.Second))
	return im, nil
}

// readManifest reads the one version of the manifest a build wrote.
func readManifest(what, dir string) (image, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return image{}, err
	}
	var m struct {
		Versions []struct{ OS, Arch, Subarch, Release, Label, Version string }
	}
	if err := json.Unmarshal(raw, &m); err != nil || len(m.Versions) != 1 {
		return image{}, fmt.Errorf("%s: not the manifest of one image version (%v): delete %s to build it again", filepath.Join(dir, "manifest.json"), err, dir)
	}
	v := m.Versions[0]
	return image{what: what, dir: dir, os: v.OS, arch: v.Arch, subarch: v.Subarch, release: v.Release, label: v.Label, ver: v.Version}, nil
}

// buildEphemeral is `rackplane images build-ephemeral -arch amd64`.
func buildEphemeral(source string, log *slog.Logger) func(context.Context, string) error {
	return func(ctx context.Context, out string) error {
		_, err := ephemeral.Build(ctx, ephemeral.Options{Arch: "amd64", Out: out, Source: source, Log: log})
		return err
	}
}

// buildDisk is `rackplane images build-disk -arch amd64`.
func buildDisk(log *slog.Logger) func(context.Context, string) error {
	return func(ctx context.Context, out string) error {
		_, err := diskimage.Build(ctx, diskimage.Options{Arch: "amd64", OutDir: out, Log: log})
		return err
	}
}

// importImage imports im into the rack and waits until the region's OS
// registry offers it.
func importImage(ctx context.Context, a *client, rackID string, im image, out io.Writer) error {
	var imp struct{ ID, State string }
	began := time.Now()
	for {
		err := a.do(ctx, "POST", "/api/v1/racks/"+rackID+"/images/imports", map[string]string{"dir": im.dir}, &imp, 202)
		if err == nil {
			break
		}
		// A rack that ran with this data directory a moment ago is
		// online for the region until its heartbeats lapse, and does
		// not answer until dev's rack has connected again.
		if !strings.Contains(err.Error(), "503") || time.Since(began) > time.Minute {
			return fmt.Errorf("import the %s: %w", im.what, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	for {
		// The import's own state first: a failed one is said as the rack
		// said it, at once, not as a release missing minutes later.
		var st struct{ State, Code, Error string }
		if err := a.do(ctx, "GET", "/api/v1/racks/"+rackID+"/images/imports/"+imp.ID, nil, &st, 200); err == nil && st.State == "failed" {
			return fmt.Errorf("import the %s from %s: the rack says: %s (%s)", im.what, im.dir, st.Error, st.Code)
		}
		var oses struct {
			OSes []struct{ OS, Release string }
		}
		if err := a.do(ctx, "GET", "/api/v1/os", nil, &oses, 200); err == nil {
			for _, o := range oses.OSes {
				if o.OS == im.os && o.Release == im.release {
					fmt.Fprintf(out, "lab: imported the %s (%s) into the rack in %s\n", im.what, im.versionID(), time.Since(began).Round(100*time.Millisecond))
					return nil
				}
			}
		}
		if time.Since(began) > 5*time.Minute {
			return fmt.Errorf("the %s (import %s) is not in the OS registry after %s", im.what, imp.ID, time.Since(began).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

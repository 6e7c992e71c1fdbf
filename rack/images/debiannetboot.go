package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// The Debian netboot installer as debian-installer-12-netboot-<arch>
// installs it: one image per arch, booted as d-i.
const (
	debianNetbootOS      = "debian"
	debianNetbootRelease = "bookworm" // Debian 12, the release of the packages
	debianNetbootSubarch = "generic"
	debianNetbootLabel   = "stable"
)

// debianNetbootDir is where arch's package puts the kernel and initrd of
// the text-mode installer, relative to Config.SystemRoot. The gtk/ tree
// beside it is the graphical installer, which needs a framebuffer a
// serial-console machine lacks.
func debianNetbootDir(arch string) string {
	return "usr/lib/debian-installer/images/12/" + arch + "/text/debian-installer/" + arch + "/"
}

// debianNetbootSource imports the netboot installer of the installed
// packages, building its manifest in code as systemSource does.
type debianNetbootSource struct {
	store  *Store
	root   string
	arches []string // asked for; empty: every installed one
	paths  map[string]string
}

func (s *Store) newDebianNetbootSource(src events.DebianNetbootSource) (source, error) {
	seen := map[string]bool{}
	for _, a := range src.Arches {
		if !slices.Contains(events.DebianNetbootArches, a) {
			return nil, rackplane.Errorf(rackplane.EINVALID, "debian_netboot arch %q is none of %s", truncate(a), strings.Join(events.DebianNetbootArches, ", "))
		}
		if seen[a] {
			return nil, rackplane.Errorf(rackplane.EINVALID, "debian_netboot lists arch %s twice", a)
		}
		seen[a] = true
	}
	return &debianNetbootSource{store: s, root: s.cfg.SystemRoot, arches: src.Arches}, nil
}

// key is the same for every arch list: two imports of the same packages
// at once would only race for the same versions.
func (d *debianNetbootSource) key() string { return "debian-netboot:" + d.root }

func (d *debianNetbootSource) manifest(ctx context.Context) (*Manifest, bool, error) {
	pkgs := map[string]string{}
	if f, err := os.Open(d.abs("var/lib/dpkg/status")); err == nil {
		pkgs = ParseDpkgStatus(f)
		f.Close()
	}
	arches, explicit := d.arches, len(d.arches) > 0
	if !explicit {
		arches = events.DebianNetbootArches
	}
	d.paths = map[string]string{}
	m := &Manifest{Format: ManifestFormat}
	for _, arch := range arches {
		v, err := d.version(arch, pkgs)
		if errors.Is(err, os.ErrNotExist) && !explicit {
			continue // not installed; only the arches asked for must be
		}
		if err != nil {
			return nil, false, err
		}
		m.Versions = append(m.Versions, v)
	}
	if len(m.Versions) == 0 {
		names := make([]string, len(arches))
		for i, a := range arches {
			names[i] = events.DebianNetbootPackage(a)
		}
		return nil, false, rackplane.Errorf(rackplane.ENOTFOUND, "no Debian netboot installer under %s: install %s on the rack (apt-get install %s)",
			d.root, strings.Join(names, " or "), names[0])
	}
	if err := m.check(); err != nil {
		return nil, false, err
	}
	return m, d.store.holdsAll(m), nil
}

// version is arch's image; an error wrapping os.ErrNotExist says the
// package is not installed, in words that name it.
func (d *debianNetbootSource) version(arch string, pkgs map[string]string) (SourceVersion, error) {
	pkg := events.DebianNetbootPackage(arch)
	v := SourceVersion{Kind: KindImage, OS: debianNetbootOS, Release: debianNetbootRelease, Arch: arch,
		Subarch: debianNetbootSubarch, Label: debianNetbootLabel, Installer: events.InstallerDebian}
	for _, name := range []string{"linux", "initrd.gz"} {
		p := debianNetbootDir(arch) + name
		sum, size, err := hashFile(d.abs(p))
		if errors.Is(err, os.ErrNotExist) {
			return SourceVersion{}, rackplane.WrapError(rackplane.ENOTFOUND, err,
				"the Debian netboot installer for %s is not installed (no %s): install package %s on the rack (apt-get install %s)", arch, p, pkg, pkg)
		}
		if err != nil {
			return SourceVersion{}, rackplane.WrapError(rackplane.EUNAVAILABLE, err, "read %s", p)
		}
		d.paths[sum] = p
		v.Files = append(v.Files, SourceFile{Name: name, SHA256: sum, Size: size, Path: p})
	}
	// The package version names the image version, so a re-import of the
	// same package finds it present. Files without a package record (a
	// tree copied by hand) are named by their content, as systemSource
	// names them, which keeps the version immutable.
	v.Version = versionSegment(pkgs[pkg])
	if v.Version == "" {
		content := sha256.New()
		for _, f := range v.Files {
			fmt.Fprintf(content, "%s %s\n", f.Name, f.SHA256)
		}
		v.Version = "sha256-" + hex.EncodeToString(content.Sum(nil))[:16]
	}
	return v, nil
}

func (d *debianNetbootSource) abs(p string) string { return strings.TrimSuffix(d.root, "/") + "/" + p }

func (d *debianNetbootSource) open(ctx context.Context, f SourceFile) (io.ReadCloser, error) {
	p, ok := d.paths[f.SHA256]
	if !ok {
		return nil, fmt.Errorf("file %s is not in this import's manifest", f.Name)
	}
	fh, err := os.Open(d.abs(p))
	if err != nil {
		return nil, rackplane.WrapError(rackplane.EUNAVAILABLE, err, "installer file %s is not readable", p)
	}
	return fh, nil
}

func (d *debianNetbootSource) succeeded() error { return nil }

package images

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rackplane/rackplane"
)

// systemBootloader describes one bootloader as Debian packages install it.
// Paths are relative to Config.SystemRoot.
type systemBootloader struct {
	name string
	arch string
	// alternatives are tried in order; the first whose required file
	// exists wins, and its package's version names the version.
	alternatives []bootloaderFiles
}

type bootloaderFiles struct {
	pkg      string
	required string            // path that must exist
	files    map[string]string // stored name -> path
	globs    []string          // more files, stored under their base name
}

// debianInstallerARM64 is where debian-installer-12-netboot-arm64 puts
// its netboot tree.
const debianInstallerARM64 = "usr/lib/debian-installer/images/12/arm64/text/debian-installer/arm64/"

// GRUBEFI is the bootloader name of GRUB for UEFI; its amd64 versions
// hold the x86_64-efi modules GRUB loads at run time.
const GRUBEFI = "grub-efi"

// systemBootloaders is what the importer looks for. pxelinux.0 needs the
// ldlinux.c32 of the same syslinux build, so the modules are part of the
// pxelinux version rather than a version of their own.
var systemBootloaders = []systemBootloader{
	{name: "pxelinux", arch: "amd64", alternatives: []bootloaderFiles{{
		pkg:      "pxelinux",
		required: "usr/lib/PXELINUX/pxelinux.0",
		files: map[string]string{
			"pxelinux.0":  "usr/lib/PXELINUX/pxelinux.0",
			"lpxelinux.0": "usr/lib/PXELINUX/lpxelinux.0",
		},
		globs: []string{"usr/lib/syslinux/modules/bios/*.c32"},
	}}},
	{name: GRUBEFI, arch: "amd64", alternatives: []bootloaderFiles{
		{
			pkg:      "grub-efi-amd64-signed",
			required: "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
			files: map[string]string{
				"grubx64.efi": "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
				"bootx64.efi": "usr/lib/shim/shimx64.efi.signed",
				// The signed network image has no http module; GRUB loads
				// this one (grub-efi-amd64-bin, built from the same grub2
				// source) to fetch kernel and initrd over HTTP. Under
				// Secure Boot it loads no module and stays on TFTP.
				"http.mod": "usr/lib/grub/x86_64-efi/http.mod",
			},
		},
		{
			pkg:      "grub-efi-amd64-bin",
			required: "usr/lib/grub/x86_64-efi/monolithic/grubnetx64.efi",
			files:    map[string]string{"grubx64.efi": "usr/lib/grub/x86_64-efi/monolithic/grubnetx64.efi"},
		},
	}},
	// arm64 GRUB comes from the Debian installer's netboot tree, the one
	// package with arm64 boot loaders that installs on an amd64 rack
	// (grub-efi-arm64-signed is Architecture: arm64). Its grubaa64.efi is
	// Debian's signed netboot GRUB with everything it needs built in (its
	// prefix, /debian-installer/arm64/grub, is where the hand-off renders
	// the chain to the per-MAC config), and bootnetaa64.efi is the signed
	// shim, which loads grubaa64.efi from beside itself. The grub/ tree of
	// the package (modules, d-i's own menu) is not imported: the rack
	// renders the configs and the image needs no modules.
	//
	// Firmware asks for bootloaders by bare name, whatever its arch, so a
	// stored name must be unique across arches (grubaa64.efi, not a second
	// grubx64.efi): TestSystemBootloaderNamesAreUniqueAcrossArches.
	{name: GRUBEFI, arch: "arm64", alternatives: []bootloaderFiles{{
		pkg:      "debian-installer-12-netboot-arm64",
		required: debianInstallerARM64 + "grubaa64.efi",
		files: map[string]string{
			"grubaa64.efi": debianInstallerARM64 + "grubaa64.efi",
			"bootaa64.efi": debianInstallerARM64 + "bootnetaa64.efi",
		},
	}}},
	{name: "ipxe", arch: "amd64", alternatives: []bootloaderFiles{{
		pkg:      "ipxe",
		required: "usr/lib/ipxe/undionly.kpxe",
		globs:    []string{"usr/lib/ipxe/*.efi", "usr/lib/ipxe/*.kpxe", "usr/lib/ipxe/*.kkpxe", "usr/lib/ipxe/*.pxe", "usr/lib/ipxe/*.lkrn"},
	}}},
}

// systemSource imports whatever of systemBootloaders is installed.
type systemSource struct {
	store *Store
	root  string
	paths map[string]string // stored sha256 -> path, for open
}

func (s *systemSource) key() string { return "system-bootloaders:" + s.root }

func (s *systemSource) manifest(ctx context.Context) (*Manifest, bool, error) {
	pkgs := map[string]string{}
	if f, err := os.Open(s.abs("var/lib/dpkg/status")); err == nil {
		pkgs = ParseDpkgStatus(f)
		f.Close()
	}
	s.paths = map[string]string{}
	m := &Manifest{Format: ManifestFormat}
	for _, bl := range systemBootloaders {
		for _, alt := range bl.alternatives {
			if !s.exists(alt.required) {
				continue
			}
			v, err := s.version(bl, alt, pkgs)
			if err != nil {
				return nil, false, err
			}
			m.Versions = append(m.Versions, v)
			break
		}
	}
	if len(m.Versions) == 0 {
		return nil, false, rackplane.Errorf(rackplane.ENOTFOUND, "no bootloader packages installed under %s (install pxelinux, syslinux-common, grub-efi-amd64-bin, ipxe or debian-installer-12-netboot-arm64)", s.root)
	}
	if err := m.check(); err != nil {
		return nil, false, err
	}
	return m, false, nil
}

func (s *systemSource) exists(p string) bool {
	fi, err := os.Stat(s.abs(p))
	return err == nil && fi.Mode().IsRegular()
}

func (s *systemSource) abs(p string) string { return path.Join(s.root, p) }

func (s *systemSource) version(bl systemBootloader, alt bootloaderFiles, pkgs map[string]string) (SourceVersion, error) {
	named := map[string]string{}
	for name, p := range alt.files {
		if s.exists(p) {
			named[name] = p
		}
	}
	for _, g := range alt.globs {
		matches, _ := globIn(s.root, g)
		for _, p := range matches {
			if base := path.Base(p); validFileName(base) {
				if _, dup := named[base]; !dup {
					named[base] = p
				}
			}
		}
	}
	names := make([]string, 0, len(named))
	for n := range named {
		names = append(names, n)
	}
	sort.Strings(names)
	v := SourceVersion{Kind: KindBootloader, Bootloader: bl.name, Arch: bl.arch}
	content := sha256.New()
	for _, n := range names {
		sum, size, err := hashFile(s.abs(named[n]))
		if err != nil {
			return SourceVersion{}, rackplane.WrapError(rackplane.EUNAVAILABLE, err, "read %s", named[n])
		}
		s.paths[sum] = named[n]
		v.Files = append(v.Files, SourceFile{Name: n, SHA256: sum, Size: size, Path: named[n]})
		fmt.Fprintf(content, "%s %s\n", n, sum)
	}
	// Without a package version (a hand-installed file), the content names
	// the version, which keeps it immutable.
	v.Version = versionSegment(pkgs[alt.pkg])
	if v.Version == "" {
		v.Version = "sha256-" + hex.EncodeToString(content.Sum(nil))[:16]
	}
	return v, nil
}

func globIn(root, pattern string) ([]string, error) {
	matches, err := filepath.Glob(path.Join(root, pattern))
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(matches))
	for _, m := range matches {
		rel := strings.TrimPrefix(strings.TrimPrefix(m, root), "/")
		out = append(out, rel)
	}
	return out, nil
}

// versionSegment turns a Debian version (epoch colons and all) into a path
// component.
func versionSegment(v string) string {
	if v == "" {
		return ""
	}
	b := []byte(v)
	for i, c := range b {
		if !isAlnum(c) && c != '.' && c != '_' && c != '+' && c != '~' && c != '-' {
			b[i] = '_'
		}
	}
	if !isAlnum(b[0]) {
		b = append([]byte{'v'}, b...)
	}
	if len(b) > maxSegment {
		b = b[:maxSegment]
	}
	return string(b)
}

func hashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func (s *systemSource) open(ctx context.Context, f SourceFile) (io.ReadCloser, error) {
	p, ok := s.paths[f.SHA256]
	if !ok {
		return nil, errors.New("file not in this import's manifest")
	}
	// The packages' own symlinks (ipxe.efi -> /boot/ipxe.efi) are followed:
	// SystemRoot is the operator's configuration, not outside input.
	fh, err := os.Open(s.abs(p))
	if err != nil {
		return nil, rackplane.WrapError(rackplane.EUNAVAILABLE, err, "bootloader file %s is not readable", p)
	}
	return fh, nil
}

func (s *systemSource) succeeded() error { return nil }

// ParseDpkgStatus returns the version of every installed package in a
// dpkg status file.
func ParseDpkgStatus(r io.Reader) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var pkg, ver, status string
	flush := func() {
		if pkg != "" && ver != "" && strings.HasSuffix(status, " installed") {
			out[pkg] = ver
		}
		pkg, ver, status = "", "", ""
	}
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			flush()
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // continuation of a multi-line field
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Package":
			pkg = v
		case "Version":
			ver = v
		case "Status":
			status = v
		}
	}
	flush()
	return out
}

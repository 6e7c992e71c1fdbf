package images

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/schema"
)

func FuzzParseManifest(f *testing.F) {
	v, _ := imageVersion("20261101", map[string][]byte{"linux": content("k", 10), "initrd": content("i", 10)})
	f.Add(manifestBytes(f, v))
	f.Add(manifestBytes(f, SourceVersion{Kind: KindBootloader, Bootloader: "pxelinux", Arch: "amd64", Version: "6.04",
		Files: []SourceFile{{Name: "pxelinux.0", SHA256: sum(nil), Size: 0, Path: "a/../b"}}}))
	f.Add([]byte(`{"format":"rackplane.image_manifest.v1","versions":[{"kind":"image","os":"bootloaders"}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	set, err := schema.Default()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := ParseManifest(set, raw)
		if err != nil {
			return
		}
		// Whatever passes must name only safe, parseable paths.
		for _, v := range m.Versions {
			for _, file := range v.Files {
				id, name, err := ParsePath(v.ID() + "/" + file.Name)
				if err != nil || id != v.ID() || name != file.Name {
					t.Fatalf("accepted version %q file %q does not round-trip: %v", v.ID(), file.Name, err)
				}
				for _, seg := range strings.Split(file.Path, "/") {
					if file.Path != "" && (seg == ".." || seg == "." || seg == "") {
						t.Fatalf("accepted path %q", file.Path)
					}
				}
			}
		}
	})
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"ubuntu/amd64/ga-24.04/noble/stable/20261101/linux",
		"/bootloaders/pxelinux/amd64/6.04/pxelinux.0",
		"../../etc/passwd", "a/b/c/d/e/f/..", "bootloaders/x/y/z/", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		id, name, err := ParsePath(p)
		if err != nil {
			return
		}
		if got := id + "/" + name; got != strings.TrimPrefix(p, "/") {
			t.Fatalf("%q parsed to %q", p, got)
		}
		for _, seg := range strings.Split(id+"/"+name, "/") {
			if seg == "" || seg == "." || seg == ".." || strings.ContainsAny(seg, "\\\x00") {
				t.Fatalf("%q accepted with component %q", p, seg)
			}
		}
	})
}

func FuzzParseDpkgStatus(f *testing.F) {
	f.Add([]byte("Package: a\nStatus: install ok installed\nVersion: 1\n\n"))
	f.Add([]byte("Package: b\n continuation\nVersion:\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		for pkg, ver := range ParseDpkgStatus(bytes.NewReader(raw)) {
			if pkg == "" || ver == "" {
				t.Fatalf("empty package %q or version %q", pkg, ver)
			}
			if s := versionSegment(ver); !validSegment(s) {
				t.Fatalf("version %q gives invalid segment %q", ver, s)
			}
		}
	})
}

func FuzzCompareVersions(f *testing.F) {
	f.Add("20261101", "20261102")
	f.Add("9", "10")
	f.Add("1.0~rc1", "1.0")
	f.Fuzz(func(t *testing.T, a, b string) {
		if compareVersions(a, b) != -compareVersions(b, a) {
			t.Fatalf("compare(%q,%q) not antisymmetric", a, b)
		}
	})
}

package images

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rackplane/rackplane"
)

func TestSystemBootloadersFromAPackageTree(t *testing.T) {
	root := t.TempDir()
	put := func(p string, b []byte) {
		t.Helper()
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put("usr/lib/PXELINUX/pxelinux.0", content("pxelinux", 4000))
	put("usr/lib/PXELINUX/lpxelinux.0", content("lpxelinux", 4000))
	put("usr/lib/syslinux/modules/bios/ldlinux.c32", content("ldlinux", 1000))
	put("usr/lib/syslinux/modules/bios/menu.c32", content("menu", 1000))
	put("usr/lib/grub/x86_64-efi/monolithic/grubnetx64.efi", content("grub", 2000))
	put(debianInstallerARM64+"grubaa64.efi", content("grubaa64", 2000))
	put(debianInstallerARM64+"bootnetaa64.efi", content("shimaa64", 1000))
	put(debianInstallerARM64+"grub/grub.cfg", content("d-i menu", 100))
	put("var/lib/dpkg/status", []byte(`Package: pxelinux
Status: install ok installed
Version: 3:6.04~git20190206.bf6db5b4+dfsg1-3
Description: collection of bootloaders
 with a continuation line: Version: 9

Package: grub-efi-amd64-bin
Status: deinstall ok config-files
Version: 2.06-13

Package: debian-installer-12-netboot-arm64
Status: install ok installed
Version: 20230607+deb12u15
`))
	e := newEnv(t, func(c *Config) { c.SystemRoot = root })
	st, err := e.s.Import(context.Background(), Source{SystemBootloaders: true})
	if err != nil {
		t.Fatal(err)
	}
	pxe := "bootloaders/pxelinux/amd64/3_6.04~git20190206.bf6db5b4+dfsg1-3"
	arm64 := "bootloaders/grub-efi/arm64/20230607+deb12u15"
	if len(st.Versions) != 3 || st.Versions[0] != pxe || !strings.HasPrefix(st.Versions[1], "bootloaders/grub-efi/amd64/sha256-") || st.Versions[2] != arm64 {
		t.Fatalf("versions %v", st.Versions)
	}
	for _, tt := range []struct {
		version string
		files   []string
	}{
		{pxe, []string{"ldlinux.c32", "lpxelinux.0", "menu.c32", "pxelinux.0"}},
		{arm64, []string{"bootaa64.efi", "grubaa64.efi"}},
	} {
		vi, _ := e.s.Version(tt.version)
		var names []string
		for _, f := range vi.Files {
			names = append(names, f.Name)
		}
		if !slices.Equal(names, tt.files) {
			t.Fatalf("%s files %v, want %v", tt.version, names, tt.files)
		}
	}
	for path, want := range map[string][]byte{
		pxe + "/ldlinux.c32":    content("ldlinux", 1000),
		arm64 + "/bootaa64.efi": content("shimaa64", 1000), // the package's bootnetaa64.efi
	} {
		f, err := e.s.OpenFile(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, f)
		f.Close()
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: wrong content", path)
		}
	}
	// Importing again finds everything in place.
	st, err = e.s.Import(context.Background(), Source{SystemBootloaders: true})
	if err != nil || st.BytesDone != 0 {
		t.Fatalf("second import %+v %v", st, err)
	}

	empty := newEnv(t, func(c *Config) { c.SystemRoot = t.TempDir() })
	_, err = empty.s.Import(context.Background(), Source{SystemBootloaders: true})
	wantCode(t, err, rackplane.ENOTFOUND)
}

// TestSystemBootloadersInstalled imports the real packages listed in
// .ci/packages (pxelinux, syslinux-common, ipxe, grub-efi-amd64-bin,
// debian-installer-12-netboot-arm64), so
// it is not in the quick set.
func TestSystemBootloadersInstalled(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the bootloader packages of .ci/packages: skipped with -short")
	}
	e := newEnv(t, nil)
	st, err := e.s.Import(context.Background(), Source{SystemBootloaders: true})
	if err != nil {
		t.Fatalf("import system bootloaders (are the packages of .ci/packages installed?): %v", err)
	}
	c := e.s.Capabilities()
	for _, want := range []struct{ bootloader, arch, file string }{
		{"pxelinux", "amd64", "pxelinux.0"}, {"pxelinux", "amd64", "ldlinux.c32"}, {"pxelinux", "amd64", "lpxelinux.0"},
		{"ipxe", "amd64", "undionly.kpxe"}, {"ipxe", "amd64", "ipxe.efi"}, {"grub-efi", "amd64", "grubx64.efi"},
		{"grub-efi", "amd64", "bootx64.efi"}, {"grub-efi", "amd64", "http.mod"},
		{"grub-efi", "arm64", "grubaa64.efi"}, {"grub-efi", "arm64", "bootaa64.efi"},
	} {
		vs := c.Bootloaders[want.bootloader][want.arch]
		if len(vs) != 1 || !slices.ContainsFunc(vs[0].Files, func(f File) bool { return f.Name == want.file }) {
			t.Fatalf("%s/%s has no %s: %+v (import %+v)", want.bootloader, want.arch, want.file, vs, st)
		}
		f, err := e.s.OpenFile(context.Background(), vs[0].ID+"/"+want.file)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	// What was imported, globs included, has each name in one arch only
	// (see TestSystemBootloaderNamesAreUniqueAcrossArches).
	archOf := map[string]string{}
	for _, byArch := range c.Bootloaders {
		for arch, vs := range byArch {
			for _, v := range vs {
				for _, f := range v.Files {
					if a, ok := archOf[f.Name]; ok && a != arch {
						t.Errorf("%s is imported for both %s and %s", f.Name, a, arch)
					}
					archOf[f.Name] = arch
				}
			}
		}
	}
}

// TestSystemBootloaderNamesAreUniqueAcrossArches guards the bare-name
// lookup: firmware asks for "grubaa64.efi", not for an arch, so the same
// stored name in two arches would serve one arch's loader to the other.
func TestSystemBootloaderNamesAreUniqueAcrossArches(t *testing.T) {
	archOf := map[string]string{} // stored name -> arch
	for _, bl := range systemBootloaders {
		for _, alt := range bl.alternatives {
			for name := range alt.files {
				if a, ok := archOf[name]; ok && a != bl.arch {
					t.Errorf("%s is stored for both %s and %s", name, a, bl.arch)
				}
				archOf[name] = bl.arch
			}
		}
	}
	if archOf["grubaa64.efi"] != "arm64" || archOf["grubx64.efi"] != "amd64" {
		t.Fatalf("arches of the GRUB images: %v", archOf)
	}
}

func TestParseDpkgStatus(t *testing.T) {
	got := ParseDpkgStatus(strings.NewReader("Package: a\nStatus: install ok installed\nVersion: 1\n\nPackage: b\nStatus: deinstall ok config-files\nVersion: 2\n\nPackage: c\nVersion: 3\nStatus: install ok installed"))
	if len(got) != 2 || got["a"] != "1" || got["c"] != "3" {
		t.Fatalf("%v", got)
	}
}

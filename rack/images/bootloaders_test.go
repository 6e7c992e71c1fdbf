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
	put("var/lib/dpkg/status", []byte(`Package: pxelinux
Status: install ok installed
Version: 3:6.04~git20190206.bf6db5b4+dfsg1-3
Description: collection of bootloaders
 with a continuation line: Version: 9

Package: grub-efi-amd64-bin
Status: deinstall ok config-files
Version: 2.06-13
`))
	e := newEnv(t, func(c *Config) { c.SystemRoot = root })
	st, err := e.s.Import(context.Background(), Source{SystemBootloaders: true})
	if err != nil {
		t.Fatal(err)
	}
	pxe := "bootloaders/pxelinux/amd64/3_6.04~git20190206.bf6db5b4+dfsg1-3"
	if len(st.Versions) != 2 || st.Versions[0] != pxe || !strings.HasPrefix(st.Versions[1], "bootloaders/grub-efi/amd64/sha256-") {
		t.Fatalf("versions %v", st.Versions)
	}
	vi, _ := e.s.Version(pxe)
	var names []string
	for _, f := range vi.Files {
		names = append(names, f.Name)
	}
	if !slices.Equal(names, []string{"ldlinux.c32", "lpxelinux.0", "menu.c32", "pxelinux.0"}) {
		t.Fatalf("pxelinux files %v", names)
	}
	f, err := e.s.OpenFile(context.Background(), pxe+"/ldlinux.c32")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !bytes.Equal(readAll(t, f), content("ldlinux", 1000)) {
		t.Fatal("wrong content")
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
// .ci/packages (pxelinux, syslinux-common, ipxe, grub-efi-amd64-bin), so
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
	for _, want := range []struct{ bootloader, file string }{
		{"pxelinux", "pxelinux.0"}, {"pxelinux", "ldlinux.c32"}, {"pxelinux", "lpxelinux.0"},
		{"ipxe", "undionly.kpxe"}, {"ipxe", "ipxe.efi"}, {"grub-efi", "grubx64.efi"},
	} {
		vs := c.Bootloaders[want.bootloader]["amd64"]
		if len(vs) != 1 || !slices.ContainsFunc(vs[0].Files, func(f File) bool { return f.Name == want.file }) {
			t.Fatalf("%s has no %s: %+v (import %+v)", want.bootloader, want.file, vs, st)
		}
		f, err := e.s.OpenFile(context.Background(), vs[0].ID+"/"+want.file)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

func TestParseDpkgStatus(t *testing.T) {
	got := ParseDpkgStatus(strings.NewReader("Package: a\nStatus: install ok installed\nVersion: 1\n\nPackage: b\nStatus: deinstall ok config-files\nVersion: 2\n\nPackage: c\nVersion: 3\nStatus: install ok installed"))
	if len(got) != 2 || got["a"] != "1" || got["c"] != "3" {
		t.Fatalf("%v", got)
	}
}

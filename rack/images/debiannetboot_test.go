package images

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// netbootTree is a system root with the netboot installer of arches, as
// their packages lay it out, and a dpkg status that lists the packages of
// listed (arch -> version).
func netbootTree(t *testing.T, arches []string, listed map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for _, arch := range arches {
		dir := filepath.Join(root, debianNetbootDir(arch))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"linux", "initrd.gz", "pxelinux.0"} {
			if err := os.WriteFile(filepath.Join(dir, name), content(arch+name+listed[arch], 3000), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var status strings.Builder
	for _, arch := range slices.Sorted(func(yield func(string) bool) {
		for a := range listed {
			if !yield(a) {
				return
			}
		}
	}) {
		status.WriteString("Package: " + events.DebianNetbootPackage(arch) + "\nStatus: install ok installed\nVersion: " + listed[arch] + "\n\n")
	}
	os.MkdirAll(filepath.Join(root, "var/lib/dpkg"), 0o755)
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), []byte(status.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestDebianNetbootFromAPackageTree(t *testing.T) {
	const ver = "20230607+deb12u15"
	both := map[string]string{"amd64": ver, "arm64": ver}
	tests := []struct {
		name      string
		installed []string
		listed    map[string]string
		arches    []string
		want      []string // version ids; empty: wantCode
		wantCode  string
		wantWords []string
	}{
		{"amd64 of both", []string{"amd64", "arm64"}, both, []string{"amd64"}, []string{"debian/amd64/generic/bookworm/stable/" + ver}, "", nil},
		{"every installed arch", []string{"amd64", "arm64"}, both, nil,
			[]string{"debian/amd64/generic/bookworm/stable/" + ver, "debian/arm64/generic/bookworm/stable/" + ver}, "", nil},
		{"every installed arch, one installed", []string{"arm64"}, map[string]string{"arm64": ver}, nil,
			[]string{"debian/arm64/generic/bookworm/stable/" + ver}, "", nil},
		{"files dpkg does not list are named by content", []string{"amd64"}, nil, []string{"amd64"}, []string{"debian/amd64/generic/bookworm/stable/sha256-"}, "", nil},
		{"arm64 asked, amd64 installed", []string{"amd64"}, map[string]string{"amd64": ver}, []string{"amd64", "arm64"}, nil, rackplane.ENOTFOUND,
			[]string{"install package debian-installer-12-netboot-arm64", "for arm64"}},
		{"nothing installed", nil, nil, nil, nil, rackplane.ENOTFOUND,
			[]string{"debian-installer-12-netboot-amd64 or debian-installer-12-netboot-arm64"}},
		{"an arch with no package", nil, nil, []string{"i386"}, nil, rackplane.EINVALID, []string{`"i386" is none of amd64, arm64`}},
		{"an arch twice", []string{"amd64"}, both, []string{"amd64", "amd64"}, nil, rackplane.EINVALID, []string{"twice"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := netbootTree(t, tt.installed, tt.listed)
			e := newEnv(t, func(c *Config) { c.SystemRoot = root })
			src := Source{DebianNetboot: &events.DebianNetbootSource{Arches: tt.arches}}
			st, err := e.s.Import(context.Background(), src)
			if tt.wantCode != "" {
				wantCode(t, err, tt.wantCode)
				for _, w := range tt.wantWords {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("error %q does not say %q", err, w)
					}
				}
				if ids := e.ids(); len(ids) != 0 {
					t.Fatalf("a failed import left %v", ids)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ids := e.ids()
			if len(ids) != len(tt.want) || st.Unchanged {
				t.Fatalf("versions %v (unchanged %v), want %v", ids, st.Unchanged, tt.want)
			}
			for i, v := range e.s.Versions() {
				if !strings.HasPrefix(v.ID, tt.want[i]) || v.Installer != events.InstallerDebian || !v.Usable {
					t.Fatalf("version %s installer %q usable %v, want %s with installer %s", v.ID, v.Installer, v.Usable, tt.want[i], events.InstallerDebian)
				}
				if len(v.Files) != 2 || v.Files[0].Name != "linux" || v.Files[1].Name != "initrd.gz" {
					t.Fatalf("%s has files %+v, want linux and initrd.gz", v.ID, v.Files)
				}
				for _, f := range v.Files {
					want, err := os.ReadFile(filepath.Join(root, debianNetbootDir(v.Arch), f.Name))
					if err != nil {
						t.Fatal(err)
					}
					rc, err := e.s.OpenFile(context.Background(), v.ID+"/"+f.Name)
					if err != nil {
						t.Fatal(err)
					}
					if got := readAll(t, rc); string(got) != string(want) {
						t.Errorf("%s/%s differs from the package's file", v.ID, f.Name)
					}
					rc.Close()
				}
			}
			// The same package again: nothing to do.
			again, err := e.s.Import(context.Background(), src)
			if err != nil || !again.Unchanged || again.BytesDone != 0 || !slices.Equal(e.ids(), ids) {
				t.Fatalf("re-import: %+v, %v; versions %v", again, err, e.ids())
			}
		})
	}
}

// TestDebianNetbootUpgrade: a new package version is a new image version
// beside the old one, and files changed under an unchanged package
// version are refused, as versions are immutable.
func TestDebianNetbootUpgrade(t *testing.T) {
	root := netbootTree(t, []string{"amd64"}, map[string]string{"amd64": "20230607+deb12u14"})
	e := newEnv(t, func(c *Config) { c.SystemRoot = root })
	src := Source{DebianNetboot: &events.DebianNetbootSource{Arches: []string{"amd64"}}}
	if _, err := e.s.Import(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	// apt-get upgrade without the package record: same version, new bytes.
	kernel := filepath.Join(root, debianNetbootDir("amd64"), "linux")
	if err := os.WriteFile(kernel, content("a rebuilt kernel", 3000), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := e.s.Import(context.Background(), src)
	wantCode(t, err, rackplane.ECONFLICT)
	if !strings.Contains(err.Error(), "immutable") {
		t.Fatalf("error %q does not say the version is immutable", err)
	}
	// The upgrade as dpkg finishes it.
	upgraded := netbootTree(t, []string{"amd64"}, map[string]string{"amd64": "20230607+deb12u15"})
	e.s.cfg.SystemRoot = upgraded
	st, err := e.s.Import(context.Background(), src)
	if err != nil || st.Unchanged {
		t.Fatalf("import of the upgrade: %+v, %v", st, err)
	}
	want := []string{"debian/amd64/generic/bookworm/stable/20230607+deb12u14", "debian/amd64/generic/bookworm/stable/20230607+deb12u15"}
	if got := e.ids(); !slices.Equal(got, want) {
		t.Fatalf("versions %v, want %v", got, want)
	}
}

// TestDebianNetbootInstalled imports Debian's installer from the
// packages .ci/packages installs (debian-installer-12-netboot-amd64 and
// -arm64) through the rack's store, so it is not in the quick set.
func TestDebianNetbootInstalled(t *testing.T) {
	if testing.Short() {
		t.Skip("needs debian-installer-12-netboot-amd64 and -arm64 of .ci/packages: skipped with -short")
	}
	versions := map[string]string{}
	for _, arch := range events.DebianNetbootArches {
		pkg := events.DebianNetbootPackage(arch)
		out, err := exec.Command("dpkg-query", "-W", "-f=${Status} ${Version}", pkg).Output()
		if err != nil || !strings.HasPrefix(string(out), "install ok installed ") {
			t.Fatalf("package %s is not installed (%q, %v): apt-get install %s", pkg, out, err, pkg)
		}
		versions[arch] = strings.TrimPrefix(string(out), "install ok installed ")
	}
	e := newEnv(t, nil)
	st, err := e.s.Import(context.Background(), Source{DebianNetboot: &events.DebianNetbootSource{}})
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	for _, arch := range events.DebianNetbootArches {
		id := "debian/" + arch + "/generic/bookworm/stable/" + versionSegment(versions[arch])
		if !slices.Contains(st.Versions, id) {
			t.Fatalf("import %+v has no %s", st, id)
		}
		for _, name := range []string{"linux", "initrd.gz"} {
			fi, err := os.Stat(filepath.Join("/", debianNetbootDir(arch), name))
			if err != nil {
				t.Fatal(err)
			}
			f, err := e.s.OpenFile(context.Background(), id+"/"+name)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := f.Seek(0, 2)
			f.Close()
			if got != fi.Size() {
				t.Fatalf("%s/%s is %d bytes, the package's %d", id, name, got, fi.Size())
			}
		}
	}
	t.Logf("imported %v: %d bytes", st.Versions, st.BytesDone)
	again, err := e.s.Import(context.Background(), Source{DebianNetboot: &events.DebianNetbootSource{Arches: []string{"amd64"}}})
	if err != nil || !again.Unchanged || again.BytesDone != 0 {
		t.Fatalf("re-import: %+v, %v", again, err)
	}
}

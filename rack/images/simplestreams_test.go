package images

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// simplestreamsMirror copies testdata/simplestreams, a mirror in the
// shape of images.maas.io's (index, product files with the fields MAAS
// publishes, small payloads with their real sha256 and size), into a
// temporary directory and returns it. A Go module may not hold file names
// with colons, so the product files are stored with "+" where the
// published names (com.ubuntu.maas:stable:v3:download.json) have ":".
func simplestreamsMirror(t testing.TB) string {
	t.Helper()
	dst := t.TempDir()
	src := filepath.Join("testdata", "simplestreams")
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if filepath.Dir(rel) == filepath.Join("streams", "v1") {
			rel = strings.ReplaceAll(rel, "+", ":")
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// serveDir serves dir over HTTP and returns its URL.
func serveDir(t testing.TB, dir string) string {
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	return srv.URL
}

const (
	nobleOld = "ubuntu/amd64/ga-24.04/noble/stable/20250716"
	nobleNew = "ubuntu/amd64/ga-24.04/noble/stable/20250805"
	jammyARM = "ubuntu/arm64/ga-22.04/jammy/stable/20250801"
)

// TestSimplestreamsImport imports from a MAAS-shaped mirror, by directory
// and over HTTP: each matching product's newest versions become image
// versions with the files the region boots (boot-kernel, boot-initrd) and
// the squashfs, byte for byte as the mirror has them; bootloader archives
// and CentOS root tarballs are passed over; a second import is unchanged.
func TestSimplestreamsImport(t *testing.T) {
	mirror := simplestreamsMirror(t)
	base := serveDir(t, mirror)
	tests := []struct {
		name string
		src  events.SimplestreamsSource
		want []string
	}{
		{"dir, newest of every product", events.SimplestreamsSource{Dir: mirror}, []string{nobleNew, jammyARM}},
		{"url, newest of every product", events.SimplestreamsSource{URL: base + "/"}, []string{nobleNew, jammyARM}},
		{"url of the index", events.SimplestreamsSource{URL: base + "/streams/v1/index.json"}, []string{nobleNew, jammyARM}},
		{"url of the signed index", events.SimplestreamsSource{URL: base + "/streams/v1/index.sjson"}, []string{nobleNew, jammyARM}},
		{"url without a slash, two versions of noble", events.SimplestreamsSource{URL: base, Versions: 2,
			Filters: events.SimplestreamsFilters{Release: []string{"noble"}}}, []string{nobleOld, nobleNew}},
		{"arm64 only", events.SimplestreamsSource{Dir: mirror, Filters: events.SimplestreamsFilters{Arch: []string{"arm64"}}}, []string{jammyARM}},
		{"every filter", events.SimplestreamsSource{Dir: mirror, Versions: 5, Filters: events.SimplestreamsFilters{OS: []string{"ubuntu"},
			Release: []string{"noble", "jammy"}, Arch: []string{"amd64"}, Subarch: []string{"ga-24.04"}, Label: []string{"stable"}}}, []string{nobleOld, nobleNew}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			st, err := e.s.Import(context.Background(), Source{Simplestreams: &tt.src})
			if err != nil {
				t.Fatalf("import: %v", err)
			}
			if got := e.ids(); !slices.Equal(got, tt.want) || st.Unchanged {
				t.Fatalf("versions %v (unchanged %v), want %v", got, st.Unchanged, tt.want)
			}
			for _, v := range e.s.Versions() {
				if v.Installer != events.InstallerCustom || !v.Usable || !strings.HasPrefix(v.Source, "simplestreams:") {
					t.Errorf("%s: installer %q usable %v source %q", v.ID, v.Installer, v.Usable, v.Source)
				}
				var names []string
				for _, f := range v.Files {
					names = append(names, f.Name)
					parts := strings.Split(v.ID, "/") // os/arch/subarch/release/label/serial
					want := filepath.Join(mirror, parts[3], parts[1], parts[5], parts[2], "generic", f.Name)
					if f.Name == "squashfs" {
						want = filepath.Join(mirror, parts[3], parts[1], parts[5], "squashfs")
					}
					wantBytes, err := os.ReadFile(want)
					if err != nil {
						t.Fatal(err)
					}
					rc, err := e.s.OpenFile(context.Background(), v.ID+"/"+f.Name)
					if err != nil {
						t.Fatal(err)
					}
					got := readAll(t, rc)
					rc.Close()
					if string(got) != string(wantBytes) {
						t.Errorf("%s/%s is %q, the mirror's %s is %q", v.ID, f.Name, got, want, wantBytes)
					}
				}
				if !slices.Equal(names, []string{"boot-initrd", "boot-kernel", "squashfs"}) {
					t.Errorf("%s has files %v", v.ID, names)
				}
			}
			imported := len(e.rec.ofType(events.TypeImageImported))
			again, err := e.s.Import(context.Background(), Source{Simplestreams: &tt.src})
			if err != nil || !again.Unchanged || again.BytesDone != 0 || len(e.rec.ofType(events.TypeImageImported)) != imported {
				t.Fatalf("second import: %+v, %v; imported events %d, were %d", again, err, len(e.rec.ofType(events.TypeImageImported)), imported)
			}
		})
	}
}

// TestSimplestreamsImportFailures: what is wrong with a mirror or a
// request is said, and a failed import leaves no version and no file.
func TestSimplestreamsImportFailures(t *testing.T) {
	tests := []struct {
		name     string
		break_   func(t *testing.T, mirror string) // changes the mirror
		src      func(mirror string) events.SimplestreamsSource
		code     string
		contains string
	}{
		{"no product matches", nil, func(m string) events.SimplestreamsSource {
			return events.SimplestreamsSource{Dir: m, Filters: events.SimplestreamsFilters{Release: []string{"trusty"}}}
		}, rackplane.ENOTFOUND, "release=trusty"},
		{"only products that do not boot", nil, func(m string) events.SimplestreamsSource {
			return events.SimplestreamsSource{Dir: m, Filters: events.SimplestreamsFilters{OS: []string{"centos", "grub-efi-signed"}}}
		}, rackplane.ENOTFOUND, "boot-kernel and boot-initrd"},
		{"no index", func(t *testing.T, m string) { os.Remove(filepath.Join(m, "streams/v1/index.json")) }, dirSS, rackplane.ENOTFOUND, "index.json"},
		{"index is not JSON", writeFile("streams/v1/index.json", "<html>"), dirSS, rackplane.EINVALID, "not decodable"},
		{"index of another format", writeFile("streams/v1/index.json", `{"format":"products:1.0","index":{}}`), dirSS, rackplane.EINVALID, "format"},
		{"product file missing", func(t *testing.T, m string) {
			os.Remove(filepath.Join(m, "streams/v1/com.ubuntu.maas:stable:v3:download.json"))
		}, dirSS, rackplane.ENOTFOUND, "v3:download.json"},
		{"a file was changed", writeFile("noble/amd64/20250805/squashfs", "squashfs of someone else, of the same size\n"[:40]), dirSS, rackplane.EINVALID, "sha256"},
		{"a file is missing", func(t *testing.T, m string) {
			os.Remove(filepath.Join(m, "jammy/arm64/20250801/ga-22.04/generic/boot-kernel"))
		}, dirSS, rackplane.ENOTFOUND, "boot-kernel"},
		{"an item leaves the mirror", editProducts(func(items map[string]any) {
			items["boot-kernel"].(map[string]any)["path"] = "../../etc/passwd"
		}), dirSS, rackplane.EINVALID, "inside the mirror"},
		{"an item without sha256", editProducts(func(items map[string]any) {
			delete(items["boot-initrd"].(map[string]any), "sha256")
		}), dirSS, rackplane.EINVALID, "sha256"},
		{"a serial that is no path component", editProducts(func(items map[string]any) {}, "20250805:1"), dirSS, rackplane.EINVALID, "invalid component"},
		{"url answers 404", nil, func(m string) events.SimplestreamsSource {
			return events.SimplestreamsSource{URL: serveDir(t, t.TempDir())}
		}, rackplane.ENOTFOUND, "HTTP 404"},
		{"url and dir", nil, func(m string) events.SimplestreamsSource {
			return events.SimplestreamsSource{Dir: m, URL: "http://example.org/"}
		}, rackplane.EINVALID, "exactly one of url and dir"},
		{"relative dir", nil, func(m string) events.SimplestreamsSource { return events.SimplestreamsSource{Dir: "mirror"} }, rackplane.EINVALID, "absolute"},
		{"ftp url", nil, func(m string) events.SimplestreamsSource {
			return events.SimplestreamsSource{URL: "ftp://example.org/"}
		}, rackplane.EINVALID, "http(s)"},
		{"too many versions", nil, func(m string) events.SimplestreamsSource { return events.SimplestreamsSource{Dir: m, Versions: 21} }, rackplane.EINVALID, "between 1 and 20"},
		{"more versions than one import takes", func(t *testing.T, m string) {
			p := filepath.Join(m, "streams/v1/com.ubuntu.maas:stable:v3:download.json")
			var doc map[string]any
			b, _ := os.ReadFile(p)
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatal(err)
			}
			products := doc["products"].(map[string]any)
			noble := products["com.ubuntu.maas.stable:v3:boot:24.04:amd64:ga-24.04"].(map[string]any)
			for i := range MaxSimplestreamsSelection {
				p := maps.Clone(noble)
				p["subarch"] = fmt.Sprintf("hwe-%d", i)
				products[fmt.Sprintf("com.ubuntu.maas.stable:v3:boot:24.04:amd64:hwe-%d", i)] = p
			}
			b, _ = json.Marshal(doc)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}, dirSS, rackplane.EINVALID, "66 versions that match the filters (none), more than 64: narrow the filters"},
		{"a filter that is no component", nil, func(m string) events.SimplestreamsSource {
			return events.SimplestreamsSource{Dir: m, Filters: events.SimplestreamsFilters{Arch: []string{"../amd64"}}}
		}, rackplane.EINVALID, "filter arch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mirror := simplestreamsMirror(t)
			if tt.break_ != nil {
				tt.break_(t, mirror)
			}
			e := newEnv(t, nil)
			src := tt.src(mirror)
			_, err := e.s.Import(context.Background(), Source{Simplestreams: &src})
			wantCode(t, err, tt.code)
			if !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("error %q does not say %q", err, tt.contains)
			}
			// Versions are imported one by one: those before the failing
			// one stay, which is no partial version.
			ids := e.ids()
			if slices.Contains(ids, nobleNew) || len(ids) > 1 || len(ids) == 1 && ids[0] != jammyARM {
				t.Fatalf("a failed import left versions %v", ids)
			}
			if blobs := e.files("blobs"); len(blobs) != 3*len(ids) {
				t.Fatalf("a failed import left blobs %v beside versions %v", blobs, ids)
			}
		})
	}
}

func dirSS(m string) events.SimplestreamsSource { return events.SimplestreamsSource{Dir: m} }

func writeFile(rel, data string) func(*testing.T, string) {
	return func(t *testing.T, m string) {
		if err := os.WriteFile(filepath.Join(m, rel), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// editProducts changes the items of the newest noble version of the
// mirror's v3 product file, and renames that version to serial if given.
func editProducts(edit func(items map[string]any), serial ...string) func(*testing.T, string) {
	return func(t *testing.T, m string) {
		p := filepath.Join(m, "streams/v1/com.ubuntu.maas:stable:v3:download.json")
		var doc map[string]any
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		versions := doc["products"].(map[string]any)["com.ubuntu.maas.stable:v3:boot:24.04:amd64:ga-24.04"].(map[string]any)["versions"].(map[string]any)
		v := versions["20250805"].(map[string]any)
		edit(v["items"].(map[string]any))
		if len(serial) > 0 {
			delete(versions, "20250805")
			versions[serial[0]] = v
		}
		if b, err = json.Marshal(doc); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestParseSimplestreams: the parsers take the published shape, fields
// inherited from outer levels included, and refuse malformed documents.
func TestParseSimplestreams(t *testing.T) {
	item := func(ftype, path string) string {
		return `{"ftype":"` + ftype + `","path":"` + path + `","sha256":"` + strings.Repeat("ab", 32) + `","size":3}`
	}
	bootable := `{"boot-kernel":` + item("boot-kernel", "k") + `,"boot-initrd":` + item("boot-initrd", "i") + `}`
	tests := []struct {
		name    string
		doc     string
		want    []string // version ids
		wantErr string
	}{
		{"fields on the outer levels", `{"format":"products:1.0","os":"ubuntu","label":"candidate","products":{"p":{"arch":"amd64","release":"noble",` +
			`"versions":{"20250101":{"subarch":"hwe-24.04","items":` + bootable + `}}}}}`, []string{"ubuntu/amd64/hwe-24.04/noble/candidate/20250101"}, ""},
		{"inner levels win", `{"format":"products:1.0","os":"centos","products":{"p":{"os":"ubuntu","arch":"amd64","release":"noble","subarch":"ga-24.04","label":"stable",` +
			`"versions":{"1":{"items":` + bootable + `}}}}}`, []string{"ubuntu/amd64/ga-24.04/noble/stable/1"}, ""},
		{"a product without a subarch", `{"format":"products:1.0","products":{"p":{"os":"ubuntu","arch":"amd64","release":"noble","label":"stable",` +
			`"versions":{"1":{"items":` + bootable + `}}}}}`, nil, ""},
		{"a kernel without an initrd", `{"format":"products:1.0","products":{"p":{"os":"ubuntu","arch":"amd64","release":"noble","subarch":"g","label":"stable",` +
			`"versions":{"1":{"items":{"k":` + item("boot-kernel", "k") + `}}}}}}`, nil, ""},
		{"two kernels", `{"format":"products:1.0","products":{"p":{"os":"ubuntu","arch":"amd64","release":"noble","subarch":"g","label":"stable",` +
			`"versions":{"1":{"items":{"a":` + item("boot-kernel", "k") + `,"b":` + item("boot-kernel", "k2") + `}}}}}}`, nil, "two boot-kernel items"},
		{"an absolute path", `{"format":"products:1.0","products":{"p":{"os":"ubuntu","arch":"amd64","release":"noble","subarch":"g","label":"stable",` +
			`"versions":{"1":{"items":{"a":` + item("boot-kernel", "/etc/k") + `}}}}}}`, nil, "inside the mirror"},
		{"a size that is a string", `{"format":"products:1.0","products":{"p":{"versions":{"1":{"items":{"a":{"size":"3"}}}}}}}`, nil, "not decodable"},
		{"products that are a list", `{"format":"products:1.0","products":[]}`, nil, "not decodable"},
		{"no format", `{"products":{}}`, nil, "format"},
		{"trailing garbage", `{"format":"products:1.0","products":{}} x`, nil, "not decodable"},
		{"not JSON", `]`, nil, "not decodable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vs, err := SimplestreamsVersions([]byte(tt.doc), events.SimplestreamsFilters{}, 1)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || rackplane.ErrorCode(err) != rackplane.EINVALID {
					t.Fatalf("got %v, want an invalid error about %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, v := range vs {
				ids = append(ids, v.ID())
			}
			if !slices.Equal(ids, tt.want) {
				t.Fatalf("versions %v, want %v", ids, tt.want)
			}
		})
	}

	indexTests := []struct {
		name    string
		doc     string
		want    []string
		wantErr string
	}{
		{"signed paths read unsigned", `{"format":"index:1.0","index":{"b":{"format":"products:1.0","path":"streams/v1/b.sjson"},` +
			`"a":{"format":"products:1.0","path":"streams/v1/a.json"},"c":{"format":"index:1.0","path":"streams/v1/other.json"}}}`,
			[]string{"streams/v1/a.json", "streams/v1/b.json"}, ""},
		{"a path that leaves the mirror", `{"format":"index:1.0","index":{"a":{"format":"products:1.0","path":"../a.json"}}}`, nil, "leaves the mirror"},
		{"an empty path", `{"format":"index:1.0","index":{"a":{"format":"products:1.0","path":""}}}`, nil, "leaves the mirror"},
		{"a product file as the index", `{"format":"products:1.0","products":{}}`, nil, "format"},
		{"an index that is a list", `{"format":"index:1.0","index":[]}`, nil, "not decodable"},
	}
	for _, tt := range indexTests {
		t.Run("index "+tt.name, func(t *testing.T) {
			paths, err := ParseSimplestreamsIndex([]byte(tt.doc))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || rackplane.ErrorCode(err) != rackplane.EINVALID {
					t.Fatalf("got %v, want an invalid error about %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(paths, tt.want) {
				t.Fatalf("paths %v, %v; want %v", paths, err, tt.want)
			}
		})
	}
}

// FuzzSimplestreams feeds arbitrary documents to both simplestreams
// parsers: what they accept names only paths inside the mirror, and every
// version passes the manifest's checks, at most keep of each product.
func FuzzSimplestreams(f *testing.F) {
	for _, p := range []string{"streams/v1/index.json", "streams/v1/com.ubuntu.maas+stable+v3+download.json",
		"streams/v1/com.ubuntu.maas+stable+1+bootloader-download.json", "streams/v1/com.ubuntu.maas+stable+centos-bases-download.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", "simplestreams", p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"format":"products:1.0","os":"ubuntu","products":{"p":{"versions":{"1":{"items":{}}}}}}`))
	f.Add([]byte(`{"format":"index:1.0","index":{"a":{"format":"products:1.0","path":"x/../y.sjson"}}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if paths, err := ParseSimplestreamsIndex(raw); err == nil {
			for _, p := range paths {
				if !safeMirrorPath(p) || strings.HasPrefix(p, "/") || slices.Contains(strings.Split(p, "/"), "..") {
					t.Fatalf("accepted index path %q", p)
				}
			}
		} else if rackplane.ErrorCode(err) != rackplane.EINVALID {
			t.Fatalf("index error %v is not invalid", err)
		}
		vs, err := SimplestreamsVersions(raw, events.SimplestreamsFilters{}, 2)
		if err != nil {
			if rackplane.ErrorCode(err) != rackplane.EINVALID {
				t.Fatalf("product error %v is not invalid", err)
			}
			return
		}
		for _, v := range vs {
			if err := (&Manifest{Format: ManifestFormat, Versions: []SourceVersion{v}}).check(); err != nil {
				t.Fatalf("accepted version %s fails the manifest's checks: %v", v.ID(), err)
			}
			for _, file := range v.Files {
				if slices.Contains(strings.Split(file.Path, "/"), "..") || strings.HasPrefix(file.Path, "/") {
					t.Fatalf("accepted path %q", file.Path)
				}
			}
		}
	})
}

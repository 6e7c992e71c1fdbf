package httpboot_test

import (
	"strings"
	"testing"

	"github.com/rackplane/rackplane/internal/httpserver/httpservertest"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/handoff/handofftest"
)

// fuzzMethods are what the fuzz targets ask with, by index: the two a
// boot client uses and others it does not.
var fuzzMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PROPFIND"}

// fuzzServer serves a tree with a machine's decision, a boot loader, a
// versioned kernel and a 1 MiB file, as a rack's boot HTTP server would.
func fuzzServer(f *testing.F) string {
	tr := handofftest.Build(f, handofftest.Decisions{decision.MAC: decision}, bootconfig.RenderConfig{HTTPBootURL: "http://rack.example:5248"})
	tr.WriteFile(f, "bootx64.efi", 1<<20)
	return start(f, tr.Resolver)
}

// checkAnswer fails t when the server answered 5xx or not at all: the
// bytes a machine, or anyone on the boot network, sends never make the
// boot server fail.
func checkAnswer(t *testing.T, addr, method, target string, header map[string]string) {
	t.Helper()
	resp, body, err := httpservertest.Raw(addr, method, target, header, nil)
	if err != nil {
		t.Fatalf("%s %q: no answer: %v", method, target, err)
	}
	if resp.StatusCode >= 500 {
		t.Fatalf("%s %q %v: %d %q", method, target, header, resp.StatusCode, body)
	}
}

// FuzzBootHTTP asks the boot HTTP server for any path, with any Range:
// boot files, versioned images, the loaders UEFI HTTP boot fetches,
// GRUB, pxelinux and iPXE configs.
func FuzzBootHTTP(f *testing.F) {
	addr := fuzzServer(f)
	for _, s := range []struct {
		method uint8
		path   string
		rng    string
	}{
		{0, "/pxelinux.0", ""}, {0, "/bootx64.efi", "bytes=0-1023"}, {1, "/bootx64.efi", ""}, {0, "/bootx64.efi", "bytes=1048000-"},
		{0, "/bootx64.efi", "bytes=-10"}, {0, "/bootx64.efi", "bytes=5-1,9-"}, {0, "/bootx64.efi", "bytes=99999999-"},
		{0, "/images/debian/v1/linux", ""}, {0, "/images/debian/v2/linux", ""}, {0, "/sub/file.txt", ""},
		{0, "/grub/grub.cfg-52:54:00:12:34:56", ""}, {0, "/grub/grub.cfg", ""}, {0, "/grub.cfg-01-52-54-00-12-34-56", ""},
		{0, "/pxelinux.cfg/01-52-54-00-12-34-56", ""}, {0, "/pxelinux.cfg/default", ""}, {0, "/ipxe/boot.ipxe", ""},
		{0, "/debian-installer/arm64/grub/grub.cfg", ""}, {0, "/grub/x86_64-efi/normal.mod", ""},
		{0, "/../../etc/passwd", ""}, {0, "/%2e%2e/secret", ""}, {0, "/escape", ""}, {0, "/fifo", ""},
		{0, "/pxelinux.0%00.txt", ""}, {0, "/a%FFb", ""}, {0, "/?x=%00", ""}, {0, "//pxelinux.0", ""}, {0, "/sub/../pxelinux.0", ""},
		{2, "/pxelinux.0", ""}, {5, "/", ""}, {0, "/pxelinux.0?x=1&y=2", ""},
	} {
		f.Add(s.method, s.path, s.rng)
	}
	f.Fuzz(func(t *testing.T, method uint8, path, rng string) {
		var header map[string]string
		if rng != "" {
			header = map[string]string{"Range": httpservertest.HeaderValue(rng)}
		}
		target := "/" + strings.TrimPrefix(httpservertest.Target(path), "/")
		checkAnswer(t, addr, fuzzMethods[int(method)%len(fuzzMethods)], target, header)
	})
}

// FuzzIPXEScript asks for a machine's iPXE script by any name: the MAC
// iPXE puts in the path (${mac:hexhyp}), and any query.
func FuzzIPXEScript(f *testing.F) {
	addr := fuzzServer(f)
	for _, s := range []struct{ mac, query string }{
		{"52-54-00-12-34-56", ""}, {"52-54-00-12-34-57", ""}, {"52:54:00:12:34:56", ""}, {"525400123456", ""},
		{"boot", ""}, {"52-54-00-12-34-56", "x=1"}, {"", ""}, {"52-54-00-12-34-5", ""}, {"5G-54-00-12-34-56", ""},
		{"52-54-00-12-34-56-78-9a", ""}, {"../52-54-00-12-34-56", ""}, {"52-54-00-12-34-56%00", ""}, {"%FF", "a=%FF"},
	} {
		f.Add(s.mac, s.query)
	}
	f.Fuzz(func(t *testing.T, mac, query string) {
		target := httpservertest.Target("/ipxe/" + mac + ".ipxe")
		if query != "" {
			target += "?" + httpservertest.Target(query)
		}
		checkAnswer(t, addr, "GET", target, nil)
	})
}

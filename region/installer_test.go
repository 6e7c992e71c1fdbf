package region_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
)

// withInstaller sets the installer family of every version of the image
// source in dir.
func withInstaller(t *testing.T, dir, installer string) string {
	t.Helper()
	editVersions(t, dir, func(v map[string]any) { v["installer"] = installer })
	return dir
}

// TestDeployRefusesAPreseedTheInstallerDoesNotRead: through the API, a
// preseed gets its format (detected, or as its author says), a deployment
// of a debian-installer image with a cloud-config preseed is a conflict
// that says which formats would do, and one with a d-i preseed boots with
// debian-installer's kernel parameters in the rack's configs.
func TestDeployRefusesAPreseedTheInstallerDoesNotRead(t *testing.T) {
	h := startRegion(t)
	r, _ := startRack(t, h, filepath.Join(t.TempDir(), "rack-a"), 200*time.Millisecond)
	importInto(t, r, withInstaller(t, imageSource(t, "debian/bookworm/amd64/generic"), events.InstallerDebian))
	h.waitForRegistry("debian/bookworm/amd64/generic:rack-a")

	type version struct{ Version struct{ Format string } }
	for _, p := range []struct{ name, content, format, want string }{
		{"cloud", "#cloud-config\nhostname: {{.Machine.Hostname}}\n", "", events.PreseedFormatCloudConfig},
		{"debian", "d-i debian-installer/locale string en_US.UTF-8\nd-i preseed/late_command string curl -fsS --data result=success {{.URLs.Status}}\n", "", events.PreseedFormatDebian},
		// Its author knows better than the detection: an include only.
		{"included", "# the real one is included\n{{/* */}}\n", events.PreseedFormatDebian, events.PreseedFormatDebian},
	} {
		var out version
		if code := h.do("POST", "/api/v1/preseeds", map[string]any{"name": p.name, "content": p.content, "format": p.format}, &out); code != 201 || out.Version.Format != p.want {
			t.Fatalf("create preseed %s: %d, format %q, want %q", p.name, code, out.Version.Format, p.want)
		}
	}
	var refusal apiError
	if code := h.do("POST", "/api/v1/preseeds", map[string]any{"name": "odd", "content": "x\n", "format": "yaml"}, &refusal); code != 400 ||
		!strings.Contains(refusal.Error.Message, `format "yaml"`) {
		t.Fatalf("a preseed of an unknown format: %d %+v", code, refusal)
	}
	// An edit that says nothing of the format keeps the author's where
	// the new content is detected as none, and gets the new content's
	// where it is detected as one.
	var kept version
	code, body, _ := h.raw("PUT", h.api+"/api/v1/preseeds/included", map[string]string{"If-Match": `"1"`}, `{"content": "# still included\n"}`)
	if err := json.Unmarshal([]byte(body), &kept); code != 200 || err != nil || kept.Version.Format != events.PreseedFormatDebian {
		t.Fatalf("edit preseed included keeping its format: %d %s", code, body)
	}
	var edited version
	code, body, _ = h.raw("PUT", h.api+"/api/v1/preseeds/included", map[string]string{"If-Match": `"2"`}, `{"content": "#!/bin/sh\necho hi\n"}`)
	if err := json.Unmarshal([]byte(body), &edited); code != 200 || err != nil || edited.Version.Format != events.PreseedFormatScript {
		t.Fatalf("edit preseed included: %d %s", code, body)
	}

	m := h.newMachine("node1", "52:54:00:00:30:01")
	deploy := func(preseed string, out any) int {
		return h.do("POST", "/api/v1/machines/"+m.ID+"/deploy", map[string]any{"os": "debian", "release": "bookworm", "preseed": preseed}, out)
	}
	refusal = apiError{}
	if code := deploy("cloud", &refusal); code != 409 || refusal.Error.Code != "conflict" {
		t.Fatalf("deploy with a cloud-config preseed: %d %+v", code, refusal)
	}
	for _, w := range []string{"preseed cloud", "format cloud-config", "installer debian-installer", "takes d-i"} {
		if !strings.Contains(refusal.Error.Message, w) {
			t.Errorf("the refusal %q does not say %q", refusal.Error.Message, w)
		}
	}
	if s := h.status(m); s != "ready" {
		t.Fatalf("after the refused deployment the machine is %s", s)
	}

	if code := deploy("debian", nil); code != 200 {
		t.Fatalf("deploy with a d-i preseed: %d", code)
	}
	h.eventually(10*time.Second, "the rack's boot config to carry debian-installer's parameters", func() error {
		_, cfg, _ := h.raw("GET", "http://"+r.HTTPAddr()+"/pxelinux.cfg/01-52-54-00-00-30-01", nil, "")
		want := regexp.MustCompile(`\n  APPEND auto=true priority=critical locale=en_US\.UTF-8 keymap=us hostname=node1 netcfg/get_hostname=node1 ` +
			`netcfg/choose_interface=52:54:00:00:30:01 url=http://\S+/preseed/` + regexp.QuoteMeta(m.ID) + `/[A-Za-z0-9_-]{43} rackplane\.machine=` + regexp.QuoteMeta(m.ID) + ` rackplane\.hostname=node1\n`)
		if !want.MatchString(cfg) {
			return fmt.Errorf("config %q", cfg)
		}
		return nil
	})
}

package events_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/events"
)

var preseedFormatCases = []struct {
	name, content, want string
}{
	{"cloud-config", "#cloud-config\nhostname: {{.Machine.Hostname}}\n", events.PreseedFormatCloudConfig},
	{"cloud-config with CRLF and a BOM", "\ufeff#cloud-config\r\nhostname: x\r\n", events.PreseedFormatCloudConfig},
	{"autoinstall", "#cloud-config\nautoinstall:\n  version: 1\n", events.PreseedFormatAutoinstall},
	{"autoinstall key nested is not autoinstall", "#cloud-config\nwrite_files:\n  autoinstall: no\n", events.PreseedFormatCloudConfig},
	{"cloud-config must be the first line", "\n#cloud-config\nautoinstall:\n", events.PreseedFormatOther},
	{"script", "#!/bin/sh\necho hi\n", events.PreseedFormatScript},
	{"d-i", "# Debian\n\nd-i debian-installer/locale string en_US\nd-i preseed/early_command string wget -q -O /dev/null http://x/\n", events.PreseedFormatDebian},
	{"d-i with another owner first", "tasksel tasksel/first multiselect standard\n", events.PreseedFormatDebian},
	{"d-i after a template action", "{{if .LicenceKey}}\n{{end}}\nd-i passwd/root-login boolean false\n", events.PreseedFormatDebian},
	{"kickstart", "# Fedora\ntext\nlang en_US.UTF-8\n%packages\n@core\n%end\n", events.PreseedFormatKickstart},
	{"kickstart starting with a section", "%pre\necho\n%end\n", events.PreseedFormatKickstart},
	{"kickstart url", "url --url=http://mirror/fedora\n", events.PreseedFormatKickstart},
	{"plain text", "hello world\n", events.PreseedFormatOther},
	{"empty", "", events.PreseedFormatOther},
	{"yaml without the cloud-config header", "autoinstall:\n  version: 1\n", events.PreseedFormatOther},
	{"debconf-like line with an unknown type", "d-i foo/bar stringy x\n", events.PreseedFormatOther},
	{"cloud-config after a jinja header", "## template: jinja\n#cloud-config\nhostname: {{ v1.local_hostname }}\n", events.PreseedFormatCloudConfig},
	{"cloud-config after a template comment", "{{/* rendered per machine */ -}}\n#cloud-config\nautoinstall:\n  version: 1\n", events.PreseedFormatAutoinstall},
	{"script after a template action", "{{- /* x */ -}}\n#!/bin/sh\n", events.PreseedFormatScript},
	{"RHEL 7 anaconda-ks.cfg", "#version=DEVEL\n# System authorization information\nauth --enableshadow --passalgo=sha512\ncdrom\n", events.PreseedFormatKickstart},
	{"kickstart from an NFS server", "nfs --server=10.0.0.1 --dir=/srv/fedora\n", events.PreseedFormatKickstart},
}

func TestDetectPreseedFormat(t *testing.T) {
	for _, tt := range preseedFormatCases {
		if got := events.DetectPreseedFormat(tt.content); got != tt.want {
			t.Errorf("%s: DetectPreseedFormat = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// FuzzDetectPreseedFormat: any content gets one of the formats, the same
// one every time, and the same with a BOM before it or CRLF line ends
// (the ways an operator's editor changes a file without changing it).
func FuzzDetectPreseedFormat(f *testing.F) {
	for _, tt := range preseedFormatCases {
		f.Add(tt.content)
	}
	f.Fuzz(func(t *testing.T, content string) {
		got := events.DetectPreseedFormat(content)
		if !slices.Contains(events.PreseedFormats, got) {
			t.Fatalf("DetectPreseedFormat(%q) = %q, no format", content, got)
		}
		if again := events.DetectPreseedFormat(content); again != got {
			t.Fatalf("DetectPreseedFormat(%q) = %q, then %q", content, got, again)
		}
		if bom := events.DetectPreseedFormat("\ufeff" + content); bom != got && !hasBOM(content) {
			t.Fatalf("DetectPreseedFormat(%q) = %q, with a BOM %q", content, got, bom)
		}
		if crlf := events.DetectPreseedFormat(strings.ReplaceAll(content, "\n", "\r\n")); crlf != got {
			t.Fatalf("DetectPreseedFormat(%q) = %q, with CRLF %q", content, got, crlf)
		}
	})
}

func hasBOM(s string) bool { return len(s) >= 3 && s[:3] == "\ufeff" }

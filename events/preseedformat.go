package events

import "strings"

// Formats of a preseed (PreseedVersionCreated.Format): what kind of
// document its content is, which decides the installer families it fits.
const (
	// PreseedFormatCloudConfig is cloud-init user-data: #cloud-config.
	PreseedFormatCloudConfig = "cloud-config"
	// PreseedFormatAutoinstall is Ubuntu autoinstall user-data: a
	// cloud-config with a top-level autoinstall: key.
	PreseedFormatAutoinstall = "autoinstall"
	// PreseedFormatDebian is a debian-installer preseed: debconf lines
	// "owner question type value".
	PreseedFormatDebian = "d-i"
	// PreseedFormatKickstart is an anaconda kickstart.
	PreseedFormatKickstart = "kickstart"
	// PreseedFormatScript is a script (#!), as cloud-init runs user-data.
	PreseedFormatScript = "script"
	// PreseedFormatOther is none of the above.
	PreseedFormatOther = "other"
)

// PreseedFormats are the preseed formats, in the order documents list them.
var PreseedFormats = []string{PreseedFormatCloudConfig, PreseedFormatAutoinstall, PreseedFormatDebian, PreseedFormatKickstart,
	PreseedFormatScript, PreseedFormatOther}

// DetectPreseedFormat is the format of a preseed's content (its template
// source) when its author did not say; region/preseed's package
// documentation gives the rules. It is the one definition the region
// saves versions with and reads versions saved before formats with, so
// it must keep giving old content the same answer.
func DetectPreseedFormat(content string) string {
	rest := strings.TrimPrefix(content, "\ufeff")
	first := true
	cloudConfig := false
	for rest != "" {
		var line string
		line, rest, _ = strings.Cut(rest, "\n")
		line = strings.TrimRight(line, " \t\r")
		if first {
			// cloud-init reads "#cloud-config" on the first line, or after
			// "## template: jinja"; a template action alone on a line
			// (a comment, a trimmed {{- … -}}) renders to nothing.
			if strings.HasPrefix(line, "## template:") || isTemplateAction(strings.TrimSpace(line)) {
				continue
			}
			first = false
			switch {
			case strings.HasPrefix(line, "#cloud-config"):
				cloudConfig = true
				continue
			case strings.HasPrefix(line, "#!"):
				return PreseedFormatScript
			}
		}
		if cloudConfig {
			if strings.HasPrefix(line, "autoinstall:") {
				return PreseedFormatAutoinstall
			}
			continue
		}
		trimmed := strings.TrimLeft(line, " \t")
		if trimmed == "" || strings.HasPrefix(trimmed, "#") || isTemplateAction(trimmed) {
			continue // blank, a comment, or a template action alone
		}
		switch {
		case isDebconfLine(trimmed):
			return PreseedFormatDebian
		case isKickstartLine(trimmed):
			return PreseedFormatKickstart
		}
		return PreseedFormatOther
	}
	if cloudConfig {
		return PreseedFormatCloudConfig
	}
	return PreseedFormatOther
}

// isTemplateAction reports whether line is a Go template action alone.
func isTemplateAction(line string) bool {
	return strings.HasPrefix(line, "{{") && strings.HasSuffix(line, "}}")
}

// debconfTypes are the types of a debconf question.
var debconfTypes = map[string]bool{"string": true, "boolean": true, "select": true, "multiselect": true, "password": true,
	"note": true, "text": true, "error": true, "title": true, "seen": true}

// isDebconfLine reports whether line is a debconf selection: an owner, a
// question whose name has a slash, and a type.
func isDebconfLine(line string) bool {
	f := strings.Fields(line)
	return len(f) >= 3 && strings.Contains(f[1], "/") && debconfTypes[f[2]]
}

// kickstartWords are the commands and sections a kickstart starts with.
var kickstartWords = map[string]bool{
	"%pre": true, "%pre-install": true, "%post": true, "%packages": true, "%onerror": true, "%addon": true, "%include": true, "%ksappend": true,
	"authselect": true, "autopart": true, "bootloader": true, "clearpart": true, "cmdline": true, "eula": true, "firewall": true,
	"firstboot": true, "graphical": true, "group": true, "ignoredisk": true, "install": true, "keyboard": true, "lang": true,
	"liveimg": true, "logvol": true, "network": true, "ostreesetup": true, "part": true, "partition": true, "poweroff": true,
	"raid": true, "reboot": true, "repo": true, "reqpart": true, "rootpw": true, "selinux": true, "services": true, "shutdown": true,
	"skipx": true, "sshkey": true, "text": true, "timezone": true, "timesource": true, "url": true, "user": true, "volgroup": true,
	"xconfig": true, "zerombr": true,
	// Older releases' and rarer commands (RHEL 7's anaconda-ks.cfg begins
	// with auth).
	"auth": true, "authconfig": true, "btrfs": true, "cdrom": true, "device": true, "driverdisk": true, "fcoe": true,
	"halt": true, "harddrive": true, "iscsi": true, "iscsiname": true, "logging": true, "mediacheck": true, "module": true,
	"mount": true, "multipath": true, "nfs": true, "realm": true, "rhsm": true, "snapshot": true, "sshpw": true, "vnc": true,
	"zfcp": true, "zipl": true,
}

// isKickstartLine reports whether line starts with a kickstart command or
// section.
func isKickstartLine(line string) bool {
	f := strings.Fields(line)
	return len(f) > 0 && kickstartWords[f[0]]
}

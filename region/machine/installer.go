package machine

import (
	"slices"
	"strings"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// PreseedNone stands, in FittingFormats, for a deployment without a
// preseed.
const PreseedNone = "none"

// fitting are the preseed formats (and PreseedNone) each installer family
// can install with: what its installer reads from the URL its kernel
// command line names. A family not here (custom, none, one this region
// does not know) takes anything, as every image did before families.
var fitting = map[string][]string{
	events.InstallerDebian:      {events.PreseedFormatDebian},
	events.InstallerAutoinstall: {events.PreseedFormatAutoinstall},
	events.InstallerAnaconda:    {events.PreseedFormatKickstart},
	// The agent writes a disk image; the installed system's cloud-init
	// reads the preseed as its user-data, if there is one.
	events.InstallerAgent: {events.PreseedFormatCloudConfig, events.PreseedFormatScript, PreseedNone},
}

// FittingFormats returns the preseed formats installer family installer
// can deploy with (PreseedNone: without a preseed), or nil when it takes
// any.
func FittingFormats(installer string) []string {
	return fitting[installer]
}

// PreseedFits reports whether a preseed of format (PreseedNone or "": no
// preseed) fits installer family installer.
func PreseedFits(installer, format string) bool {
	if format == "" {
		format = PreseedNone
	}
	want := fitting[installer]
	return want == nil || slices.Contains(want, format)
}

// checkPreseedFits refuses a deployment of img with preseed p whose
// format its installer does not read: the installer would stop at its
// first question, or install something nobody asked for, and the
// deployment would fail only at its timeout.
func checkPreseedFits(img BootImage, p PreseedPin) error {
	format := p.Format
	if p.Name == "" {
		format = PreseedNone
	}
	if PreseedFits(img.Installer, format) {
		return nil
	}
	want := strings.Join(FittingFormats(img.Installer), ", ")
	if p.Name == "" {
		return rackplane.Errorf(rackplane.ECONFLICT, "no preseed: image %s (installer %s) needs a preseed of format %s; create one or name one",
			img.VersionID, img.Installer, want)
	}
	return rackplane.Errorf(rackplane.ECONFLICT, "preseed %s (version %d) is of format %s; image %s (installer %s) takes %s",
		p.Name, p.Version, formatName(format), img.VersionID, img.Installer, want)
}

// formatName names a format in a message: "unknown" for a version whose
// format the store did not give.
func formatName(format string) string {
	if format == "" {
		return "unknown"
	}
	return format
}

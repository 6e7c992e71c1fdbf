package machine_test

import (
	"strings"
	"testing"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/machine"
)

// TestDeployPreseedFitsInstaller: a deployment whose preseed's format its
// image's installer family does not read is refused as a conflict that
// names the preseed, its format, the family and the formats that fit; one
// that fits boots with the family on its install decisions.
func TestDeployPreseedFitsInstaller(t *testing.T) {
	pin := func(format string) machine.PreseedPin {
		return machine.PreseedPin{Name: "p1", Version: 3, Format: format}
	}
	none := machine.PreseedPin{}
	tests := []struct {
		installer string
		preseed   machine.PreseedPin
		// refused is what the conflict says, "" when the deployment goes.
		refused []string
	}{
		{events.InstallerDebian, pin(events.PreseedFormatDebian), nil},
		{events.InstallerDebian, pin(events.PreseedFormatCloudConfig), []string{"preseed p1 (version 3) is of format cloud-config", "installer debian-installer", "takes d-i"}},
		{events.InstallerDebian, pin(events.PreseedFormatAutoinstall), []string{"format autoinstall", "takes d-i"}},
		{events.InstallerDebian, none, []string{"no preseed", "installer debian-installer", "needs a preseed of format d-i"}},
		{events.InstallerAutoinstall, pin(events.PreseedFormatAutoinstall), nil},
		{events.InstallerAutoinstall, pin(events.PreseedFormatCloudConfig), []string{"format cloud-config", "installer ubuntu-autoinstall", "takes autoinstall"}},
		{events.InstallerAutoinstall, pin(events.PreseedFormatDebian), []string{"format d-i", "takes autoinstall"}},
		{events.InstallerAnaconda, pin(events.PreseedFormatKickstart), nil},
		{events.InstallerAnaconda, pin(events.PreseedFormatScript), []string{"format script", "installer anaconda", "takes kickstart"}},
		{events.InstallerAgent, pin(events.PreseedFormatCloudConfig), nil},
		{events.InstallerAgent, pin(events.PreseedFormatScript), nil},
		{events.InstallerAgent, none, nil},
		{events.InstallerAgent, pin(events.PreseedFormatDebian), []string{"format d-i", "installer agent", "takes cloud-config, script, none"}},
		{events.InstallerAgent, pin(events.PreseedFormatOther), []string{"format other"}},
		{events.InstallerCustom, pin(events.PreseedFormatDebian), nil},
		{events.InstallerCustom, pin(events.PreseedFormatOther), nil},
		{events.InstallerCustom, none, nil},
		{"", pin(events.PreseedFormatKickstart), nil},
		{"", none, nil},
		{events.InstallerDebian, pin(""), []string{"format unknown"}},
	}
	for _, tt := range tests {
		img := image
		img.Installer = tt.installer
		cmd := machine.Deploy{Image: img, Preseed: tt.preseed}
		if tt.installer == events.InstallerAgent {
			// A disk image, written by the ephemeral environment's agent.
			cmd.Image, cmd.Environment, cmd.TargetDisk = diskImage, diskEnv, "vda"
		}
		evs, err := machine.Decide(at("ready"), cmd, now)
		name := tt.installer + " with " + tt.preseed.Format
		if tt.preseed.Name == "" {
			name = tt.installer + " without a preseed"
		}
		if tt.refused == nil {
			if err != nil {
				t.Errorf("%s: refused: %v", name, err)
				continue
			}
			for mac, d := range decisions(t, evs) {
				if d.Installer != tt.installer {
					t.Errorf("%s: the decision of %s has installer %q", name, mac, d.Installer)
				}
			}
			continue
		}
		if rackplane.ErrorCode(err) != rackplane.ECONFLICT {
			t.Errorf("%s: Decide = %v, %v; want a conflict", name, types(evs), err)
			continue
		}
		for _, w := range append(tt.refused, cmd.Image.VersionID) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", name, err, w)
			}
		}
	}
}

// TestPreseedFitsUnknownFamily: a family this region does not know (a
// newer rack's) takes any preseed, as custom does, rather than refuse
// every deployment of its images.
func TestPreseedFitsUnknownFamily(t *testing.T) {
	for _, format := range append([]string{""}, events.PreseedFormats...) {
		if !machine.PreseedFits("some-future-family", format) || !machine.PreseedFits(events.InstallerCustom, format) {
			t.Errorf("format %q does not fit custom or an unknown family", format)
		}
	}
}

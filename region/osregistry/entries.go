package osregistry

import (
	"cmp"
	"sort"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
)

// Entry is one OS/release/arch/subarch the installation supports, with
// the racks that have images of it.
type Entry struct {
	OS                 string `json:"os"`
	OSTitle            string `json:"os_title"`
	Release            string `json:"release"`
	Title              string `json:"title"`
	Arch               string `json:"arch"`
	Subarch            string `json:"subarch"`
	Default            bool   `json:"default"`
	RequiresLicenceKey bool   `json:"requires_licence_key"`
	LicenceKeySet      bool   `json:"licence_key_set"`
	CanCommission      bool   `json:"can_commission"`
	// Available is true when at least one online rack can boot it now.
	Available bool        `json:"available"`
	Racks     []EntryRack `json:"racks"`
}

// EntryRack is a rack that has images of an Entry.
type EntryRack struct {
	ID       string         `json:"id"`
	Name     string         `json:"name"`
	Online   bool           `json:"online"`
	Versions []VersionBrief `json:"versions"`
}

// VersionBrief names an image version.
type VersionBrief struct {
	ID      string `json:"id"`
	Label   string `json:"label"`
	Version string `json:"version"`
	// Installer is the version's installer family; Disk is set on a
	// disk image.
	Installer string            `json:"installer"`
	Disk      *events.DiskImage `json:"disk,omitempty"`
}

// RackBrief names a rack.
type RackBrief struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Listing is the answer to List.
type Listing struct {
	Live bool    `json:"live"`
	OSes []Entry `json:"oses"`
	// Live queries only: racks expected to answer that did not in time.
	NotAnswered []RackBrief `json:"not_answered,omitempty"`
	Answered    []RackBrief `json:"answered,omitempty"`
	ElapsedMS   int64       `json:"elapsed_ms,omitempty"`
}

// RackView is what a rack offers, as RackCapabilities answers it.
type RackView struct {
	postgres.RackCapabilities
	// Available is false while the rack is offline: its snapshot is kept,
	// but nothing it offers can be booted now.
	Available bool `json:"available"`
	Live      bool `json:"live"`
	// Live only: whether the answer matches the last reported snapshot.
	MatchesReported *bool `json:"matches_reported,omitempty"`
}

// diverged says whether a rack's live digest differs from the one it last
// reported; a rack that reported none has nothing to diverge from.
func diverged(reported string, known bool, live string) bool {
	return known && reported != live
}

// imagesOf flattens a rack's live capabilities into image rows.
func imagesOf(rackID, name string, c events.Capabilities) []postgres.ImageOnRack {
	var out []postgres.ImageOnRack
	for _, o := range c.OSes {
		for _, rel := range o.Releases {
			for _, a := range rel.Arches {
				for _, v := range a.Versions {
					out = append(out, postgres.ImageOnRack{RackID: rackID, RackName: name, Online: true,
						OS: o.Name, OSTitle: o.Title, Release: rel.Name, ReleaseTitle: rel.Title, Default: rel.Default,
						RequiresLicenceKey: rel.RequiresLicenceKey, CanCommission: rel.CanCommission,
						Arch: a.Arch, Subarch: a.Subarch, VersionID: v.ID, Label: v.Label, Version: v.Version,
						Installer: cmp.Or(v.Installer, events.InstallerCustom), Disk: v.Disk})
				}
			}
		}
	}
	return out
}

// filter keeps the rows f's os, release and arch (each when set) match.
func filter(imgs []postgres.ImageOnRack, f postgres.ImageFilter) []postgres.ImageOnRack {
	var out []postgres.ImageOnRack
	for _, i := range imgs {
		if (f.OS == "" || i.OS == f.OS) && (f.Release == "" || i.Release == f.Release) && (f.Arch == "" || i.Arch == f.Arch) {
			out = append(out, i)
		}
	}
	return out
}

// group folds image rows into one entry per os/release/arch/subarch, each
// with its racks and their versions.
func group(imgs []postgres.ImageOnRack, keys map[[2]string]postgres.LicenceKey) []Entry {
	type key struct{ os, release, arch, subarch string }
	idx := map[key]int{}
	out := []Entry{}
	for _, i := range imgs {
		k := key{i.OS, i.Release, i.Arch, i.Subarch}
		n, ok := idx[k]
		if !ok {
			_, keySet := keys[[2]string{i.OS, i.Release}]
			out = append(out, Entry{OS: i.OS, OSTitle: i.OSTitle, Release: i.Release, Title: i.ReleaseTitle,
				Arch: i.Arch, Subarch: i.Subarch, Default: i.Default, RequiresLicenceKey: i.RequiresLicenceKey,
				LicenceKeySet: keySet, CanCommission: i.CanCommission, Racks: []EntryRack{}})
			n = len(out) - 1
			idx[k] = n
		}
		e := &out[n]
		if i.Online {
			e.Available = true
		}
		if len(e.Racks) == 0 || e.Racks[len(e.Racks)-1].ID != i.RackID {
			e.Racks = append(e.Racks, EntryRack{ID: i.RackID, Name: i.RackName, Online: i.Online, Versions: []VersionBrief{}})
		}
		rk := &e.Racks[len(e.Racks)-1]
		rk.Versions = append(rk.Versions, VersionBrief{ID: i.VersionID, Label: i.Label, Version: i.Version,
			Installer: i.Installer, Disk: i.Disk})
	}
	sort.SliceStable(out, func(a, b int) bool {
		x, y := out[a], out[b]
		if x.OS != y.OS {
			return x.OS < y.OS
		}
		if x.Release != y.Release {
			return x.Release < y.Release
		}
		if x.Arch != y.Arch {
			return x.Arch < y.Arch
		}
		return x.Subarch < y.Subarch
	})
	for i := range out {
		sort.SliceStable(out[i].Racks, func(a, b int) bool { return out[i].Racks[a].Name < out[i].Racks[b].Name })
	}
	return out
}

// onlineRacks are the online racks among imgs, each once, in order.
func onlineRacks(imgs []postgres.ImageOnRack) []string {
	var online []string
	seen := map[string]bool{}
	for _, i := range imgs {
		if i.Online && !seen[i.RackID] {
			seen[i.RackID] = true
			online = append(online, i.RackID)
		}
	}
	return online
}

// Mask hides all but the last four letters or digits of a key, keeping
// its separators so an operator can still tell keys apart.
func Mask(key string) string {
	b := []byte(key)
	keep := 4
	for i := len(b) - 1; i >= 0; i-- {
		c := b[i]
		isAlnum := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !isAlnum {
			continue
		}
		if keep > 0 {
			keep--
			continue
		}
		b[i] = '*'
	}
	return string(b)
}

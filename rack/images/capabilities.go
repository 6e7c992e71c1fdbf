package images

import (
	"sort"

	"github.com/rackplane/rackplane/events"
)

// Capabilities is what the store can boot, shaped for the rack's
// capability snapshot. Only usable versions appear, newest first.
type Capabilities struct {
	// OS maps os -> release -> "<arch>/<subarch>" -> versions.
	OS map[string]map[string]map[string][]CapabilityVersion `json:"os"`
	// Bootloaders maps bootloader -> arch -> versions.
	Bootloaders map[string]map[string][]CapabilityVersion `json:"bootloaders"`
}

// CapabilityVersion is one usable version.
type CapabilityVersion struct {
	ID      string `json:"id"`
	Label   string `json:"label,omitempty"`
	Version string `json:"version"`
	Files   []File `json:"files"`
	// Installer and Disk are the image's installer family and disk image.
	Installer string            `json:"installer,omitempty"`
	Disk      *events.DiskImage `json:"disk,omitempty"`
}

// Capabilities returns the usable versions by os, release and arch.
func (s *Store) Capabilities() Capabilities {
	c := Capabilities{
		OS:          map[string]map[string]map[string][]CapabilityVersion{},
		Bootloaders: map[string]map[string][]CapabilityVersion{},
	}
	s.mu.Lock()
	for _, e := range s.versions {
		if e.problem != "" {
			continue
		}
		v := e.v
		cv := CapabilityVersion{ID: v.ID, Label: v.Label, Version: v.Version, Files: append([]File{}, v.Files...),
			Installer: v.Installer, Disk: v.Disk}
		if v.Kind == KindBootloader {
			if c.Bootloaders[v.Bootloader] == nil {
				c.Bootloaders[v.Bootloader] = map[string][]CapabilityVersion{}
			}
			c.Bootloaders[v.Bootloader][v.Arch] = append(c.Bootloaders[v.Bootloader][v.Arch], cv)
			continue
		}
		if c.OS[v.OS] == nil {
			c.OS[v.OS] = map[string]map[string][]CapabilityVersion{}
		}
		if c.OS[v.OS][v.Release] == nil {
			c.OS[v.OS][v.Release] = map[string][]CapabilityVersion{}
		}
		key := v.Arch + "/" + v.Subarch
		c.OS[v.OS][v.Release][key] = append(c.OS[v.OS][v.Release][key], cv)
	}
	s.mu.Unlock()
	for _, rels := range c.OS {
		for _, arches := range rels {
			for _, vs := range arches {
				sortNewestFirst(vs)
			}
		}
	}
	for _, arches := range c.Bootloaders {
		for _, vs := range arches {
			sortNewestFirst(vs)
		}
	}
	return c
}

func sortNewestFirst(vs []CapabilityVersion) {
	sort.Slice(vs, func(i, j int) bool {
		if c := compareVersions(vs[i].Version, vs[j].Version); c != 0 {
			return c > 0
		}
		return vs[i].ID < vs[j].ID
	})
}

package images

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/schema"
)

// ManifestSchema is the schema name of a source's manifest.
const ManifestSchema = "image_manifest.v1"

// ManifestFormat is the value of a manifest's "format" field.
const ManifestFormat = "rackplane.image_manifest.v1"

// MaxFileSize bounds one file of a version (the manifest schema's limit),
// for the manifests built in code too (simplestreams): a source's sizes
// are summed before anything is fetched.
const MaxFileSize = 64 << 30

// MaxManifestSize bounds a source's manifest; anything larger is refused
// before it is parsed.
const MaxManifestSize = 4 << 20

// Manifest is what a source publishes.
type Manifest struct {
	Format   string          `json:"format"`
	Versions []SourceVersion `json:"versions"`
}

// SourceVersion is one version offered by a source.
type SourceVersion struct {
	Kind       string       `json:"kind"`
	OS         string       `json:"os,omitempty"`
	Release    string       `json:"release,omitempty"`
	Arch       string       `json:"arch"`
	Subarch    string       `json:"subarch,omitempty"`
	Label      string       `json:"label,omitempty"`
	Bootloader string       `json:"bootloader,omitempty"`
	Version    string       `json:"version"`
	Files      []SourceFile `json:"files"`
	// Installer and Disk, on an image, are its installer family and its
	// disk image (events.ImageVersion).
	Installer string            `json:"installer,omitempty"`
	Disk      *events.DiskImage `json:"disk,omitempty"`
}

// SourceFile is a file of a source version; Path, relative to the
// manifest, says where to fetch it and defaults to Name.
type SourceFile struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Path   string `json:"path,omitempty"`
}

// File is a stored file of a version.
type File = events.ImageFile

// Version is an immutable version manifest as stored.
type Version struct {
	ID         string            `json:"id"`
	Kind       string            `json:"kind"`
	OS         string            `json:"os,omitempty"`
	Release    string            `json:"release,omitempty"`
	Arch       string            `json:"arch"`
	Subarch    string            `json:"subarch,omitempty"`
	Label      string            `json:"label,omitempty"`
	Bootloader string            `json:"bootloader,omitempty"`
	Version    string            `json:"version"`
	Files      []File            `json:"files"`
	Installer  string            `json:"installer,omitempty"`
	Disk       *events.DiskImage `json:"disk,omitempty"`
	Source     string            `json:"source"`
	ImportedAt time.Time         `json:"imported_at"`
}

// versionID builds the id (the versioned path without file name) from the
// descriptive fields.
func versionID(kind, os, release, arch, subarch, label, bootloader, version string) string {
	if kind == KindBootloader {
		return strings.Join([]string{bootloaderRoot, bootloader, arch, version}, "/")
	}
	return strings.Join([]string{os, arch, subarch, release, label, version}, "/")
}

// ID returns the version id the source version will have in the store.
func (v SourceVersion) ID() string {
	return versionID(v.Kind, v.OS, v.Release, v.Arch, v.Subarch, v.Label, v.Bootloader, v.Version)
}

// group is what "the newest K" is counted within.
func (v Version) group() string {
	if v.Kind == KindBootloader {
		return strings.Join([]string{bootloaderRoot, v.Bootloader, v.Arch}, "/")
	}
	return strings.Join([]string{v.OS, v.Arch, v.Subarch, v.Release, v.Label}, "/")
}

// ParseManifest checks a source's manifest against its schema and the rules
// a schema cannot say (unique names, no ".." in paths, one hash per file
// name), and decodes it.
func ParseManifest(set *schema.Set, raw []byte) (*Manifest, error) {
	if len(raw) > MaxManifestSize {
		return nil, rackplane.Errorf(rackplane.EINVALID, "manifest is %d bytes, limit %d", len(raw), MaxManifestSize)
	}
	if err := set.ValidateJSON(ManifestSchema, raw); err != nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "manifest breaks %s: %s", ManifestSchema, truncateErr(err))
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, rackplane.WrapError(rackplane.EINVALID, err, "manifest is not decodable")
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return &m, nil
}

// check holds whatever the schema cannot express; it also runs on
// manifests built in code (the system bootloader importer).
func (m *Manifest) check() error {
	ids := map[string]bool{}
	for _, v := range m.Versions {
		id := v.ID()
		if err := checkVersionFields(v); err != nil {
			return err
		}
		if ids[id] {
			return rackplane.Errorf(rackplane.EINVALID, "manifest lists version %s twice", id)
		}
		ids[id] = true
		names := map[string]bool{}
		for _, f := range v.Files {
			if names[f.Name] {
				return rackplane.Errorf(rackplane.EINVALID, "version %s lists file %s twice", id, f.Name)
			}
			names[f.Name] = true
			if !validFileName(f.Name) || len(f.SHA256) != 64 || !isHex(f.SHA256) || f.Size < 0 || f.Size > MaxFileSize {
				return rackplane.Errorf(rackplane.EINVALID, "version %s: file %q is malformed", id, truncate(f.Name))
			}
			if f.Path != "" {
				for _, seg := range strings.Split(f.Path, "/") {
					if seg == "" || seg == "." || seg == ".." {
						return rackplane.Errorf(rackplane.EINVALID, "version %s: file %s has path %q, which leaves the source", id, f.Name, truncate(f.Path))
					}
				}
			}
		}
		if len(v.Files) == 0 {
			return rackplane.Errorf(rackplane.EINVALID, "version %s has no files", id)
		}
		if err := checkInstaller(id, v, names); err != nil {
			return err
		}
	}
	return nil
}

func checkVersionFields(v SourceVersion) error {
	var segs []string
	switch v.Kind {
	case KindImage:
		if v.OS == bootloaderRoot {
			return rackplane.Errorf(rackplane.EINVALID, "os %q is reserved", bootloaderRoot)
		}
		segs = []string{v.OS, v.Release, v.Arch, v.Subarch, v.Label, v.Version}
	case KindBootloader:
		segs = []string{v.Bootloader, v.Arch, v.Version}
	default:
		return rackplane.Errorf(rackplane.EINVALID, "version kind %q is neither image nor bootloader", truncate(v.Kind))
	}
	for _, s := range segs {
		if !validSegment(s) {
			return rackplane.Errorf(rackplane.EINVALID, "version %q has an invalid component %q", truncate(v.ID()), truncate(s))
		}
	}
	if len(v.ID()) > maxID {
		return rackplane.Errorf(rackplane.EINVALID, "version id %q is longer than %d", truncate(v.ID()), maxID)
	}
	return nil
}

// checkInstaller checks an image's installer family against its disk
// image: a disk image is the agent's to write, and names one of the
// version's files.
func checkInstaller(id string, v SourceVersion, files map[string]bool) error {
	if v.Installer != "" && !slices.Contains(events.Installers, v.Installer) {
		return rackplane.Errorf(rackplane.EINVALID, "version %s: installer %q is none of %s", id, truncate(v.Installer), strings.Join(events.Installers, ", "))
	}
	if v.Kind != KindImage && (v.Installer != "" || v.Disk != nil) {
		return rackplane.Errorf(rackplane.EINVALID, "version %s: only an image has an installer or a disk image", id)
	}
	switch d := v.Disk; {
	case d == nil && v.Installer == events.InstallerAgent:
		return rackplane.Errorf(rackplane.EINVALID, "version %s: installer agent needs a disk image (disk)", id)
	case d == nil:
		return nil
	case v.Installer != events.InstallerAgent:
		return rackplane.Errorf(rackplane.EINVALID, "version %s: a disk image is written by the agent: set installer to agent", id)
	case !files[d.File]:
		return rackplane.Errorf(rackplane.EINVALID, "version %s: the disk image %q is not one of its files", id, truncate(d.File))
	case d.Compression != events.DiskCompressionNone && d.Compression != events.DiskCompressionGzip && d.Compression != events.DiskCompressionZstd:
		return rackplane.Errorf(rackplane.EINVALID, "version %s: disk compression %q is none of none, gzip, zstd", id, truncate(d.Compression))
	case d.Size <= 0 || len(d.SHA256) != 64 || !isHex(d.SHA256):
		return rackplane.Errorf(rackplane.EINVALID, "version %s: the disk image needs its decompressed size and sha256", id)
	case d.GrowRoot && d.RootPartition == 0:
		return rackplane.Errorf(rackplane.EINVALID, "version %s: grow_root needs root_partition", id)
	}
	return nil
}

func truncateErr(err error) string {
	s := strings.ReplaceAll(err.Error(), "\n", "; ")
	if len(s) > 1024 {
		s = s[:1024] + "…"
	}
	return s
}

// toVersion is the stored form of a source version.
func (v SourceVersion) toVersion(source string, now time.Time) Version {
	out := Version{
		ID: v.ID(), Kind: v.Kind, OS: v.OS, Release: v.Release, Arch: v.Arch, Subarch: v.Subarch,
		Label: v.Label, Bootloader: v.Bootloader, Version: v.Version, Source: source,
		Installer: v.Installer, Disk: v.Disk, ImportedAt: now.UTC(),
	}
	for _, f := range v.Files {
		out.Files = append(out.Files, File{Name: f.Name, SHA256: f.SHA256, Size: f.Size})
	}
	return out
}

// sameFiles reports whether a stored version has exactly the files of a
// source version: versions are immutable, so a source may not change one.
func sameFiles(a []File, b []SourceFile) bool {
	if len(a) != len(b) {
		return false
	}
	m := make(map[string]File, len(a))
	for _, f := range a {
		m[f.Name] = f
	}
	for _, f := range b {
		g, ok := m[f.Name]
		if !ok || g.SHA256 != f.SHA256 || g.Size != f.Size {
			return false
		}
	}
	return true
}

// checkStored validates a version manifest read back from disk: the files
// are ours, but a disk or an operator can still break them.
func (v Version) checkStored() error {
	sv := SourceVersion{Kind: v.Kind, OS: v.OS, Release: v.Release, Arch: v.Arch, Subarch: v.Subarch,
		Label: v.Label, Bootloader: v.Bootloader, Version: v.Version, Installer: v.Installer, Disk: v.Disk}
	for _, f := range v.Files {
		sv.Files = append(sv.Files, SourceFile{Name: f.Name, SHA256: f.SHA256, Size: f.Size})
	}
	if sv.ID() != v.ID {
		return fmt.Errorf("id %q does not match its fields (%q)", truncate(v.ID), truncate(sv.ID()))
	}
	m := Manifest{Format: ManifestFormat, Versions: []SourceVersion{sv}}
	return m.check()
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// Reasons GC keeps a version.
const (
	KeptReferenced = "referenced"
	KeptInFlight   = "in_flight"
	KeptNewest     = "newest"
)

// GCReport says what a GC removed (or, in a dry run, would remove) and
// why it kept the rest.
type GCReport struct {
	DryRun     bool          `json:"dry_run"`
	Versions   []string      `json:"versions"`
	Blobs      []RemovedBlob `json:"blobs"`
	BytesFreed int64         `json:"bytes_freed"`
	Kept       []KeptVersion `json:"kept"`
}

// RemovedBlob is a stored file that went (or would go).
type RemovedBlob struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// KeptVersion is a version GC did not remove, with the first reason.
type KeptVersion struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// GC removes the versions nothing needs and the blobs no remaining version
// uses (including blobs an interrupted import left behind).
func (s *Store) GC(ctx context.Context, dryRun bool) (GCReport, error) {
	rep := GCReport{DryRun: dryRun, Versions: []string{}, Blobs: []RemovedBlob{}, Kept: []KeptVersion{}}
	var removed []Version
	s.mu.Lock()
	now := s.cfg.Now()
	owners := s.ownersLocked()
	groups := map[string][]*entry{}
	for _, e := range s.versions {
		groups[e.v.group()] = append(groups[e.v.group()], e)
	}
	newest := map[string]bool{}
	for _, g := range groups {
		sort.Slice(g, func(i, j int) bool { return compareVersions(g[i].v.Version, g[j].v.Version) > 0 })
		for i := 0; i < len(g) && i < s.cfg.KeepNewest; i++ {
			newest[g[i].v.ID] = true
		}
	}
	ids := make([]string, 0, len(s.versions))
	for id := range s.versions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		e := s.versions[id]
		switch {
		case len(owners[id]) > 0:
			rep.Kept = append(rep.Kept, KeptVersion{id, KeptReferenced})
		case now.Sub(e.lastServed) < s.cfg.InFlightWindow:
			rep.Kept = append(rep.Kept, KeptVersion{id, KeptInFlight})
		case newest[id]:
			rep.Kept = append(rep.Kept, KeptVersion{id, KeptNewest})
		default:
			rep.Versions = append(rep.Versions, id)
		}
	}
	var err error
	if dryRun {
		for _, id := range rep.Versions {
			removed = append(removed, s.versions[id].v)
		}
		rep.Blobs, err = s.unusedBlobsLocked(rep.Versions)
	} else {
		removed, rep.Blobs, err = s.removeLocked(rep.Versions)
	}
	s.mu.Unlock()
	for _, b := range rep.Blobs {
		rep.BytesFreed += b.Size
	}
	if !dryRun {
		s.announceRemoval(removed, rep.Blobs, "gc")
	}
	s.log.Info("image gc", "dry_run", dryRun, "versions_removed", len(rep.Versions), "blobs_removed", len(rep.Blobs), "bytes_freed", rep.BytesFreed, "kept", len(rep.Kept))
	return rep, err
}

// Delete removes one version now. It is ECONFLICT while an owner
// references the version or a file of it was handed out within the
// in-flight window: an operator's delete must not break a boot either.
func (s *Store) Delete(ctx context.Context, id string) (GCReport, error) {
	s.mu.Lock()
	e, ok := s.versions[id]
	if !ok {
		s.mu.Unlock()
		return GCReport{}, rackplane.Errorf(rackplane.ENOTFOUND, "no image version %s", truncate(id))
	}
	if o := s.ownersLocked()[id]; len(o) > 0 {
		s.mu.Unlock()
		return GCReport{}, rackplane.Errorf(rackplane.ECONFLICT, "image version %s is referenced by %d boot decision(s), e.g. %s", id, len(o), o[0])
	}
	if since := s.cfg.Now().Sub(e.lastServed); since < s.cfg.InFlightWindow {
		s.mu.Unlock()
		return GCReport{}, rackplane.Errorf(rackplane.ECONFLICT, "image version %s was handed out to a booting machine %s ago; retry after %s",
			id, since.Round(1e9), s.cfg.InFlightWindow)
	}
	removed, blobs, err := s.removeLocked([]string{id})
	s.mu.Unlock()
	rep := GCReport{Versions: []string{id}, Blobs: blobs, Kept: []KeptVersion{}}
	for _, b := range blobs {
		rep.BytesFreed += b.Size
	}
	s.announceRemoval(removed, blobs, "delete")
	return rep, err
}

// removeLocked deletes the versions' manifests, then every blob nothing
// uses any more. A manifest goes first: a crash in between leaves unused
// blobs, which the next GC removes, never a version without its files.
func (s *Store) removeLocked(ids []string) ([]Version, []RemovedBlob, error) {
	var removed []Version
	for _, id := range ids {
		e := s.versions[id]
		if err := os.Remove(filepath.Join(s.versionDir, versionFileName(id))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, nil, fmt.Errorf("remove version %s: %w", id, err)
		}
		delete(s.versions, id)
		removed = append(removed, e.v)
		s.m.removed.Inc()
	}
	unused, err := s.unusedBlobsLocked(nil)
	if err != nil {
		return removed, nil, err
	}
	var gone []RemovedBlob
	for _, b := range unused {
		err := os.Remove(s.blobPath(b.SHA256))
		s.forgetShared(b.SHA256)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, gone, fmt.Errorf("remove blob: %w", err)
		}
		gone = append(gone, b)
		s.m.blobsGone.Inc()
	}
	if gone == nil {
		gone = []RemovedBlob{}
	}
	return removed, gone, nil
}

// unusedBlobsLocked lists stored blobs that no version but those in
// without, and no running import, needs.
func (s *Store) unusedBlobsLocked(without []string) ([]RemovedBlob, error) {
	stored, err := s.listBlobs()
	if err != nil {
		return nil, err
	}
	used := s.usedBlobsLocked(without)
	out := []RemovedBlob{}
	for sum, size := range stored {
		if !used[sum] {
			out = append(out, RemovedBlob{SHA256: sum, Size: size})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SHA256 < out[j].SHA256 })
	return out, nil
}

func (s *Store) announceRemoval(removed []Version, blobs []RemovedBlob, reason string) {
	for _, v := range removed {
		s.log.Info("image version removed", "version_id", v.ID, "reason", reason)
		s.emit(events.TypeImageRemoved, v.ID, events.ImageRemoved{VersionID: v.ID, Reason: reason, Files: v.Files})
	}
	for _, b := range blobs {
		if !validSHA256(b.SHA256) {
			continue // a stray file in blobs/ is removed but has no hash to report
		}
		s.emit(events.TypeImageBlobRemoved, "store", events.ImageBlobRemoved{SHA256: b.SHA256, Size: b.Size, Reason: "unused"})
	}
	if len(removed) > 0 {
		s.changed()
	}
}

func validSHA256(s string) bool { return len(s) == 64 && isHex(s) }

// usedBlobsLocked is the set of blobs that some version (but those in
// without) or a running import needs.
func (s *Store) usedBlobsLocked(without []string) map[string]bool {
	used := map[string]bool{}
	for sum := range s.pins {
		used[sum] = true
	}
	for id, e := range s.versions {
		if slices.Contains(without, id) {
			continue
		}
		for _, f := range e.v.Files {
			used[f.SHA256] = true
		}
	}
	return used
}

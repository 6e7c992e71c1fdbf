package images

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/rackplane/rackplane"
)

const maxOwner = 256

func (s *Store) referencesPath() string { return filepath.Join(s.root, "references.json") }

func (s *Store) loadReferences() error {
	b, err := os.ReadFile(s.referencesPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read references: %w", err)
	}
	if err := json.Unmarshal(b, &s.refs); err != nil {
		// Losing references would let GC delete what machines boot from;
		// refuse to start instead of guessing.
		return fmt.Errorf("references file %s is corrupt (fix or remove it): %w", s.referencesPath(), err)
	}
	return nil
}

// SetReferences replaces the versions owner references; owner is a
// machine's boot decision (e.g. "machine/<id>"). No ids drops the owner.
// Ids of versions not (yet) in the store are kept: they protect the
// version once it arrives. References persist across restarts, because GC
// after a restart must not delete what a machine was told to boot.
func (s *Store) SetReferences(owner string, versionIDs ...string) error {
	if owner == "" || len(owner) > maxOwner {
		return rackplane.Errorf(rackplane.EINVALID, "reference owner must be 1 to %d characters", maxOwner)
	}
	for _, id := range versionIDs {
		if _, _, err := ParsePath(id + "/x"); err != nil {
			return rackplane.Errorf(rackplane.EINVALID, "%q is not a version id", truncate(id))
		}
	}
	ids := slices.Clone(versionIDs)
	sort.Strings(ids)
	ids = slices.Compact(ids)
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, had := s.refs[owner]
	if len(ids) == 0 {
		delete(s.refs, owner)
	} else {
		s.refs[owner] = ids
	}
	b, err := json.Marshal(s.refs)
	if err == nil {
		err = s.writeFileAtomic(s.referencesPath(), b)
	}
	if err != nil {
		if had {
			s.refs[owner] = prev
		} else {
			delete(s.refs, owner)
		}
		return fmt.Errorf("save references: %w", err)
	}
	return nil
}

// Touch records that a file of the version was handed out now, when the
// hand-off serves it by other means than OpenFile.
func (s *Store) Touch(versionID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.versions[versionID]; ok {
		e.lastServed = s.cfg.Now()
	}
}

// ownersLocked maps version id to the sorted owners referencing it.
func (s *Store) ownersLocked() map[string][]string {
	out := map[string][]string{}
	owners := make([]string, 0, len(s.refs))
	for o := range s.refs {
		owners = append(owners, o)
	}
	sort.Strings(owners)
	for _, o := range owners {
		for _, id := range s.refs[o] {
			out[id] = append(out[id], o)
		}
	}
	return out
}

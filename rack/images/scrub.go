package images

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/rackplane/rackplane/events"
)

// ScrubReport is the outcome of a verification of every stored file.
type ScrubReport struct {
	Checked int           `json:"checked"`
	Bytes   int64         `json:"bytes"`
	Corrupt []CorruptFile `json:"corrupt"`
}

// CorruptFile is a stored file whose content no longer matches its name.
type CorruptFile struct {
	SHA256       string   `json:"sha256"`
	ActualSHA256 string   `json:"actual_sha256"`
	Size         int64    `json:"size"`
	Versions     []string `json:"versions"`
	Quarantine   string   `json:"quarantine"`
}

// Scrub verifies every stored file against its sha256. A corrupt file is
// moved to quarantine, the versions using it become unusable (until an
// import brings the file back), an image_corrupt event goes out and
// OnChange is called.
func (s *Store) Scrub(ctx context.Context) (ScrubReport, error) {
	return s.scrub(ctx, "scrub")
}

func (s *Store) scrub(ctx context.Context, by string) (ScrubReport, error) {
	rep := ScrubReport{Corrupt: []CorruptFile{}}
	stored, err := s.listBlobs()
	if err != nil {
		return rep, err
	}
	sums := make([]string, 0, len(stored))
	for sum := range stored {
		sums = append(sums, sum)
	}
	sort.Strings(sums)
	for _, sum := range sums {
		if err := ctx.Err(); err != nil {
			return rep, fmt.Errorf("scrub interrupted after %d files: %w", rep.Checked, err)
		}
		if !validSHA256(sum) {
			s.log.Warn("stray file among image blobs", "name", sum)
			continue
		}
		// Blobs are immutable once renamed into place, so hashing needs no
		// lock; a blob GC removes meanwhile simply fails to open.
		actual, size, err := hashFile(s.blobPath(sum))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("read blob %s: %w", sum, err)
		}
		rep.Checked++
		rep.Bytes += size
		if actual == sum {
			continue
		}
		c, err := s.quarantine(sum, actual, size, by)
		if err != nil {
			return rep, err
		}
		rep.Corrupt = append(rep.Corrupt, c)
	}
	s.log.Info("image scrub finished", "by", by, "checked", rep.Checked, "bytes", rep.Bytes, "corrupt", len(rep.Corrupt))
	return rep, nil
}

func (s *Store) quarantine(sum, actual string, size int64, by string) (CorruptFile, error) {
	s.mu.Lock()
	name := fmt.Sprintf("%s.%d", sum, s.cfg.Now().UnixNano())
	err := os.Rename(s.blobPath(sum), filepath.Join(s.quarantineDir, name))
	s.forgetShared(sum)
	if err != nil {
		s.mu.Unlock()
		return CorruptFile{}, fmt.Errorf("quarantine blob %s: %w", sum, err)
	}
	c := CorruptFile{SHA256: sum, ActualSHA256: actual, Size: size, Versions: []string{}, Quarantine: name}
	for id, e := range s.versions {
		for _, f := range e.v.Files {
			if f.SHA256 == sum {
				e.problem = fmt.Sprintf("file %s is corrupt", f.Name)
				c.Versions = append(c.Versions, id)
				break
			}
		}
	}
	s.mu.Unlock()
	sort.Strings(c.Versions)
	s.m.corrupt.Inc()
	s.log.Error("corrupt image file quarantined", "sha256", sum, "actual_sha256", actual, "versions", c.Versions, "quarantine", name)
	s.emit(events.TypeImageCorrupt, "store", events.ImageCorrupt{
		SHA256: sum, ActualSHA256: actual, Size: size, Versions: c.Versions, Quarantine: name, DetectedBy: by,
	})
	s.changed()
	return c, nil
}

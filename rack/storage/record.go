package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/rackplane/rackplane/events"
)

// Record is the rack's own account of a volume it acted on, and the reply
// of every action (events.VolumeRecord). It is written with Pending set
// before a script runs and again when it ends, so a crash or a killed
// script never leaves a volume changed with no trace on the rack; the
// file on disk has the same JSON form as the reply.
type Record = events.VolumeRecord

// Snapshot is a snapshot taken of a volume.
type Snapshot = events.VolumeSnapshot

// records keeps one JSON file per volume in dir.
type records struct {
	dir string
}

func (r records) path(volumeID string) string {
	return filepath.Join(r.dir, volumeID+".json")
}

// load returns the record of volumeID, or ok false when there is none.
func (r records) load(volumeID string) (Record, bool, error) {
	b, err := os.ReadFile(r.path(volumeID))
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("read volume record: %w", err)
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return Record{}, false, fmt.Errorf("decode volume record %s (move the file aside to start afresh): %w", r.path(volumeID), err)
	}
	return rec, true, nil
}

func (r records) save(rec Record) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encode volume record: %w", err)
	}
	if err := writeFileAtomic(r.path(rec.VolumeID), append(b, '\n'), 0o640); err != nil {
		return fmt.Errorf("write volume record: %w", err)
	}
	return nil
}

// all lists every record, skipping temporary files. A record that cannot
// be read is reported in bad and skipped, so that one damaged file does not
// keep the rack from starting.
func (r records) all() (recs []Record, bad []error, err error) {
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("list volume records: %w", err)
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(e.Name(), ".") || !isUUID(id) {
			continue
		}
		rec, found, err := r.load(id)
		if err != nil {
			bad = append(bad, err)
			continue
		}
		if found {
			recs = append(recs, rec)
		}
	}
	return recs, bad, nil
}

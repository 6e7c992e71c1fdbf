package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/schema"
)

// Store is a rack's boot image store. Safe for concurrent use.
type Store struct {
	cfg Config
	log *slog.Logger
	set *schema.Set

	root, blobDir, versionDir, sourceDir, tmpDir, quarantineDir string
	lockFile                                                    *os.File

	ctx    context.Context // ends at Close; background imports run under it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	versions map[string]*entry
	refs     map[string][]string // owner -> version ids
	pins     map[string]int      // sha256 -> imports that need the blob kept
	imports  []*importState      // oldest first
	active   map[string]*importState
	shared   map[string]*SharedFile // sha256 -> blob kept open (OpenShared)
	closed   bool

	m metrics
}

type entry struct {
	v          Version
	problem    string // why the version is unusable; "" when usable
	lastServed time.Time
}

type metrics struct {
	importBytes prometheus.Counter
	imports     *prometheus.CounterVec
	handedOut   prometheus.Counter
	corrupt     prometheus.Counter
	removed     prometheus.Counter
	blobsGone   prometheus.Counter
}

// Open opens (creating when needed) the store in cfg.DataDir/images. It
// takes an exclusive lock on the directory, removes the temp files a
// crashed process left, loads the versions (marking unusable those whose
// files are missing) and, with cfg.ScrubAtOpen, verifies every file.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, rackplane.WrapError(rackplane.EINVALID, err, "image store config: %v", err)
	}
	set, err := schema.Default()
	if err != nil {
		return nil, fmt.Errorf("load schemas: %w", err)
	}
	root := filepath.Join(cfg.DataDir, "images")
	s := &Store{
		cfg: cfg, log: cfg.Logger.With("component", "images"), set: set,
		root:          root,
		blobDir:       filepath.Join(root, "blobs"),
		versionDir:    filepath.Join(root, "versions"),
		sourceDir:     filepath.Join(root, "sources"),
		tmpDir:        filepath.Join(root, "tmp"),
		quarantineDir: filepath.Join(root, "quarantine"),
		versions:      map[string]*entry{},
		refs:          map[string][]string{},
		pins:          map[string]int{},
		active:        map[string]*importState{},
		shared:        map[string]*SharedFile{},
	}
	for _, d := range []string{s.blobDir, s.versionDir, s.sourceDir, s.tmpDir, s.quarantineDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.lockFile.Close()
		}
	}()
	if err := s.cleanTmp(); err != nil {
		return nil, err
	}
	if err := s.loadReferences(); err != nil {
		return nil, err
	}
	if err := s.loadVersions(); err != nil {
		return nil, err
	}
	s.initMetrics()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if cfg.ScrubAtOpen {
		if _, err := s.scrub(ctx, "open"); err != nil {
			s.cancel()
			return nil, fmt.Errorf("scrub at open: %w", err)
		}
	}
	ok = true
	return s, nil
}

// lock makes the store single-process: cleaning tmp/ at Open is safe only
// when nobody else is writing there.
func (s *Store) lock() error {
	f, err := os.OpenFile(filepath.Join(s.root, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return rackplane.WrapError(rackplane.ECONFLICT, err, "image store %s is in use by another process", s.root)
	}
	s.lockFile = f
	return nil
}

func (s *Store) cleanTmp() error {
	ents, err := os.ReadDir(s.tmpDir)
	if err != nil {
		return fmt.Errorf("list temp files: %w", err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(s.tmpDir, e.Name())); err != nil {
			return fmt.Errorf("remove temp file: %w", err)
		}
	}
	if len(ents) > 0 {
		s.log.Info("removed temp files of an interrupted import", "count", len(ents))
	}
	return nil
}

func (s *Store) loadVersions() error {
	ents, err := os.ReadDir(s.versionDir)
	if err != nil {
		return fmt.Errorf("list versions: %w", err)
	}
	// A process that was killed or restarted does not know which boots were
	// in flight, so every version counts as just handed out.
	now := s.cfg.Now()
	for _, e := range ents {
		p := filepath.Join(s.versionDir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("read version manifest: %w", err)
		}
		var v Version
		if err = json.Unmarshal(b, &v); err == nil {
			err = v.checkStored()
		}
		if err == nil && versionFileName(v.ID) != e.Name() {
			err = errors.New("stored under the wrong name")
		}
		if err != nil {
			s.log.Error("quarantining unreadable version manifest", "file", e.Name(), "err", err)
			if err := os.Rename(p, filepath.Join(s.quarantineDir, "version-"+e.Name())); err != nil {
				return fmt.Errorf("quarantine version manifest: %w", err)
			}
			continue
		}
		en := &entry{v: v, lastServed: now}
		for _, f := range v.Files {
			fi, err := os.Stat(s.blobPath(f.SHA256))
			switch {
			case err != nil:
				en.problem = fmt.Sprintf("file %s is missing", f.Name)
			case fi.Size() != f.Size:
				en.problem = fmt.Sprintf("file %s has the wrong size", f.Name)
			}
		}
		if en.problem != "" {
			s.log.Warn("image version unusable", "version_id", v.ID, "problem", en.problem)
		}
		s.versions[v.ID] = en
	}
	return nil
}

func (s *Store) initMetrics() {
	s.m = metrics{
		importBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "rackplane_images_import_bytes_total", Help: "Bytes downloaded into the image store."}),
		imports:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rackplane_images_imports_total", Help: "Finished imports by outcome."}, []string{"outcome"}),
		handedOut:   prometheus.NewCounter(prometheus.CounterOpts{Name: "rackplane_images_files_handed_out_total", Help: "Image files opened for a booting machine."}),
		corrupt:     prometheus.NewCounter(prometheus.CounterOpts{Name: "rackplane_images_corrupt_files_total", Help: "Stored files found corrupt and quarantined."}),
		removed:     prometheus.NewCounter(prometheus.CounterOpts{Name: "rackplane_images_versions_removed_total", Help: "Versions removed by GC or delete."}),
		blobsGone:   prometheus.NewCounter(prometheus.CounterOpts{Name: "rackplane_images_blobs_removed_total", Help: "Stored files removed because no version used them."}),
	}
	if r := s.cfg.Registerer; r != nil {
		r.MustRegister(s.m.importBytes, s.m.imports, s.m.handedOut, s.m.corrupt, s.m.removed, s.m.blobsGone,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rackplane_images_versions", Help: "Versions in the image store."},
				func() float64 { s.mu.Lock(); defer s.mu.Unlock(); return float64(len(s.versions)) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rackplane_images_stored_bytes", Help: "Bytes of the distinct files the versions use."},
				func() float64 {
					s.mu.Lock()
					defer s.mu.Unlock()
					seen := map[string]bool{}
					var n int64
					for _, e := range s.versions {
						for _, f := range e.v.Files {
							if !seen[f.SHA256] {
								seen[f.SHA256] = true
								n += f.Size
							}
						}
					}
					return float64(n)
				}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rackplane_images_unusable_versions", Help: "Versions with a missing or corrupt file."},
				func() float64 {
					s.mu.Lock()
					defer s.mu.Unlock()
					n := 0
					for _, e := range s.versions {
						if e.problem != "" {
							n++
						}
					}
					return float64(n)
				}),
		)
	}
}

// Close stops background imports, waits for them and releases the lock.
func (s *Store) Close() error {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.forgetAllShared()
	s.mu.Unlock()
	if already {
		return nil
	}
	s.cancel()
	s.wg.Wait()
	return s.lockFile.Close()
}

// blobPath is filepath.Join(s.blobDir, sum[:2], sum), without the
// cleaning: it is called on every boot request for an image's file.
func (s *Store) blobPath(sum string) string {
	return s.blobDir + string(filepath.Separator) + sum[:2] + string(filepath.Separator) + sum
}

func versionFileName(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:]) + ".json"
}

// writeFileAtomic writes a small file so that readers (and a restart after
// a crash) see either the old content or the new, never a part.
func (s *Store) writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(s.tmpDir, "meta-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// OpenedFile is a file of a version, open for a transfer. The descriptor
// stays valid even if GC later unlinks the blob.
type OpenedFile struct {
	*os.File
	Size      int64
	ModTime   time.Time
	VersionID string
	Name      string
	SHA256    string
}

// OpenFile opens a file by its versioned path for a booting machine and
// records the hand-out (see Touch). An unknown path is ENOTFOUND, a
// malformed one EINVALID, a file of an unusable version EUNAVAILABLE.
//
// Files are read straight from the blobs: a versioned path is resolved
// through the in-memory version table, never joined onto a directory, so
// no path can reach outside the store, and there is no second tree of hard
// links to keep consistent with the versions after a crash or a GC.
func (s *Store) OpenFile(ctx context.Context, path string) (*OpenedFile, error) {
	id, name, err := ParsePath(path)
	if err != nil {
		return nil, err
	}
	// The lock is held across the open so that GC cannot unlink the blob
	// between the check and the open; after it, the descriptor keeps the
	// content alive whatever happens to the name.
	s.mu.Lock()
	defer s.mu.Unlock()
	e, f, err := s.lookupLocked(id, name)
	if err != nil {
		return nil, err
	}
	fh, err := openBlob(s.blobPath(f.SHA256))
	if err != nil {
		return nil, s.vanishedLocked(e, id, name, err)
	}
	e.lastServed = s.cfg.Now()
	s.m.handedOut.Inc()
	return &OpenedFile{File: fh, Size: f.Size, ModTime: e.v.ImportedAt, VersionID: id, Name: name, SHA256: f.SHA256}, nil
}

// lookupLocked finds file name of version id, which must be usable.
func (s *Store) lookupLocked(id, name string) (*entry, File, error) {
	e, ok := s.versions[id]
	if !ok {
		return nil, File{}, rackplane.Errorf(rackplane.ENOTFOUND, "no image version %s", id)
	}
	i := slices.IndexFunc(e.v.Files, func(f File) bool { return f.Name == name })
	if i < 0 {
		return nil, File{}, rackplane.Errorf(rackplane.ENOTFOUND, "image version %s has no file %s", id, name)
	}
	if e.problem != "" {
		return nil, File{}, rackplane.Errorf(rackplane.EUNAVAILABLE, "image version %s is unusable: %s", id, e.problem)
	}
	return e, e.v.Files[i], nil
}

// vanishedLocked marks e unusable, its file name having failed to open
// with err, and returns the error for the request.
func (s *Store) vanishedLocked(e *entry, id, name string, err error) error {
	e.problem = fmt.Sprintf("file %s is missing", name)
	s.log.Error("stored image file vanished", "version_id", id, "file", name, "err", err)
	return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "image version %s is unusable: %s", id, e.problem)
}

// openBlob opens a stored file to be served. os.Open would also try to
// put it in the network poller, which a regular file never joins: on
// every boot request, two fcntl setting O_NONBLOCK, a failing epoll_ctl
// and two fcntl clearing it again. Here one fcntl (os.NewFile's) remains.
func openBlob(p string) (*os.File, error) {
	for {
		fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: p, Err: err}
		}
		return os.NewFile(uintptr(fd), p), nil
	}
}

// VersionInfo is a version with its state.
type VersionInfo struct {
	Version
	Size       int64    `json:"size"`
	Usable     bool     `json:"usable"`
	Problem    string   `json:"problem,omitempty"`
	References []string `json:"references"`
	// LastHandedOut is when a file of the version was last handed out, or
	// when the store last started or imported it, whichever is later: GC
	// counts from it.
	LastHandedOut *time.Time `json:"last_handed_out,omitempty"`
}

// Versions lists every version, sorted by id.
func (s *Store) Versions() []VersionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	owners := s.ownersLocked()
	out := make([]VersionInfo, 0, len(s.versions))
	for _, e := range s.versions {
		vi := VersionInfo{Version: e.v, Usable: e.problem == "", Problem: e.problem, References: owners[e.v.ID]}
		if vi.References == nil {
			vi.References = []string{}
		}
		for _, f := range e.v.Files {
			vi.Size += f.Size
		}
		if !e.lastServed.IsZero() {
			t := e.lastServed
			vi.LastHandedOut = &t
		}
		out = append(out, vi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Version returns one version.
func (s *Store) Version(id string) (VersionInfo, error) {
	for _, v := range s.Versions() {
		if v.ID == id {
			return v, nil
		}
	}
	return VersionInfo{}, rackplane.Errorf(rackplane.ENOTFOUND, "no image version %s", truncate(id))
}

// emit publishes an event; a failure to build one is a bug, logged.
func (s *Store) emit(typ, subject string, data any) {
	if s.cfg.Publisher == nil {
		return
	}
	ev, err := events.New(events.RackSource(s.cfg.RackID), typ, events.ImageStreamName(s.cfg.RackID, subject), s.cfg.Now(), data)
	if err != nil {
		s.log.Error("build event", "type", typ, "err", err)
		return
	}
	s.cfg.Publisher.Publish(ev)
}

func (s *Store) changed() {
	if s.cfg.OnChange != nil {
		s.cfg.OnChange()
	}
}

// listBlobs returns the stored blobs and their sizes.
func (s *Store) listBlobs() (map[string]int64, error) {
	out := map[string]int64{}
	err := filepath.WalkDir(s.blobDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		out[d.Name()] = fi.Size()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	return out, nil
}

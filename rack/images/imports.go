package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// Source says where to import from; exactly one field is set.
type Source struct {
	// URL of an HTTP(S) manifest (schema image_manifest.v1).
	URL string `json:"url,omitempty"`
	// Dir is a local directory holding manifest.json and the files.
	Dir string `json:"dir,omitempty"`
	// SystemBootloaders imports the bootloaders of the machine's own
	// Debian packages (pxelinux, syslinux-common, grub-efi-amd64-bin,
	// grub-efi-amd64-signed, ipxe, and for arm64
	// debian-installer-12-netboot-arm64).
	SystemBootloaders bool `json:"system_bootloaders,omitempty"`
	// DebianNetboot imports Debian's netboot installer from the machine's
	// debian-installer-12-netboot-<arch> packages.
	DebianNetboot *events.DebianNetbootSource `json:"debian_netboot,omitempty"`
	// Simplestreams imports the newest versions of a simplestreams
	// mirror's products (the layout of images.maas.io).
	Simplestreams *events.SimplestreamsSource `json:"simplestreams,omitempty"`
}

// Import states.
const (
	ImportRunning   = "running"
	ImportSucceeded = "succeeded"
	ImportFailed    = "failed"
)

// ImportStatus is the progress of one import.
type ImportStatus struct {
	ID          string     `json:"id"`
	Source      string     `json:"source"`
	State       string     `json:"state"`
	BytesDone   int64      `json:"bytes_done"`
	BytesTotal  int64      `json:"bytes_total"`
	FilesDone   int64      `json:"files_done"`
	FilesTotal  int64      `json:"files_total"`
	Unchanged   bool       `json:"unchanged"` // the source answered "not modified"
	Versions    []string   `json:"versions"`  // versions imported (or already present)
	Code        string     `json:"code,omitempty"`
	Error       string     `json:"error,omitempty"`
	StartedAt   time.Time  `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	BytesPerSec float64    `json:"bytes_per_sec,omitempty"`
}

type importState struct {
	id, key   string
	src       source
	startedAt time.Time
	done      chan struct{}

	bytesDone, bytesTotal, filesDone, filesTotal atomic.Int64
	lastLog                                      atomic.Int64 // unix nanoseconds of the last progress line

	mu        sync.Mutex
	state     string
	unchanged bool
	versions  []string
	err       error
	finished  time.Time
}

func (st *importState) status() ImportStatus {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := ImportStatus{
		ID: st.id, Source: st.key, State: st.state, Unchanged: st.unchanged,
		BytesDone: st.bytesDone.Load(), BytesTotal: st.bytesTotal.Load(),
		FilesDone: st.filesDone.Load(), FilesTotal: st.filesTotal.Load(),
		Versions: append([]string{}, st.versions...), StartedAt: st.startedAt,
	}
	if st.err != nil {
		out.Code = rackplane.ErrorCode(st.err)
		out.Error = rackplane.ErrorMessage(st.err)
	}
	if !st.finished.IsZero() {
		t := st.finished
		out.FinishedAt = &t
		if d := t.Sub(st.startedAt).Seconds(); d > 0 {
			out.BytesPerSec = float64(out.BytesDone) / d
		}
	}
	return out
}

// source is where an import reads a manifest and files from.
type source interface {
	key() string
	// manifest returns the source's manifest; unchanged says the source
	// answered a conditional request with "not modified" (the manifest is
	// then the one remembered from the last successful import).
	manifest(ctx context.Context) (m *Manifest, unchanged bool, err error)
	open(ctx context.Context, f SourceFile) (io.ReadCloser, error)
	// succeeded is called after every version is in; an HTTP source
	// remembers its validators then, so a failed import is retried in full.
	succeeded() error
}

func (s *Store) newSource(src Source) (source, error) {
	n := 0
	for _, set := range []bool{src.URL != "", src.Dir != "", src.SystemBootloaders, src.DebianNetboot != nil, src.Simplestreams != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, rackplane.Errorf(rackplane.EINVALID, "an import source needs exactly one of url, dir, system_bootloaders, debian_netboot and simplestreams")
	}
	switch {
	case src.URL != "":
		u, err := url.Parse(src.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(src.URL) > 2048 {
			return nil, rackplane.Errorf(rackplane.EINVALID, "source url %q is not an http(s) URL", truncate(src.URL))
		}
		u.Fragment = ""
		return &httpSource{store: s, url: u}, nil
	case src.Dir != "":
		if !filepath.IsAbs(src.Dir) {
			return nil, rackplane.Errorf(rackplane.EINVALID, "source dir %q is not an absolute path", truncate(src.Dir))
		}
		return &dirSource{store: s, dir: filepath.Clean(src.Dir)}, nil
	case src.DebianNetboot != nil:
		return s.newDebianNetbootSource(*src.DebianNetboot)
	case src.Simplestreams != nil:
		return s.newSimplestreamsSource(*src.Simplestreams)
	default:
		return &systemSource{store: s, root: s.cfg.SystemRoot}, nil
	}
}

// StartImport starts an import in the background and returns at once with
// its id. A second import of a source whose import is running is
// ECONFLICT.
func (s *Store) StartImport(src Source) (ImportStatus, error) {
	st, err := s.beginImport(src)
	if err != nil {
		return ImportStatus{}, err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.runImport(s.ctx, st)
	}()
	return st.status(), nil
}

// Import runs an import to its end and returns its final status; the error
// is the import's failure, if any.
func (s *Store) Import(ctx context.Context, src Source) (ImportStatus, error) {
	st, err := s.beginImport(src)
	if err != nil {
		return ImportStatus{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	s.runImport(ctx, st)
	status := st.status()
	return status, st.err
}

// Imports lists running imports and the last finished ones, oldest first.
func (s *Store) Imports() []ImportStatus {
	s.mu.Lock()
	list := append([]*importState{}, s.imports...)
	s.mu.Unlock()
	out := make([]ImportStatus, len(list))
	for i, st := range list {
		out[i] = st.status()
	}
	return out
}

// WaitImport waits for an import to finish and returns its status.
func (s *Store) WaitImport(ctx context.Context, id string) (ImportStatus, error) {
	s.mu.Lock()
	var st *importState
	for _, x := range s.imports {
		if x.id == id {
			st = x
		}
	}
	s.mu.Unlock()
	if st == nil {
		return ImportStatus{}, rackplane.Errorf(rackplane.ENOTFOUND, "no import %s", truncate(id))
	}
	select {
	case <-st.done:
		return st.status(), nil
	case <-ctx.Done():
		return st.status(), rackplane.WrapError(rackplane.ETIMEOUT, ctx.Err(), "import %s still running", id)
	}
}

func (s *Store) beginImport(src Source) (*importState, error) {
	so, err := s.newSource(src)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, rackplane.Errorf(rackplane.EUNAVAILABLE, "image store is closing")
	}
	if cur, ok := s.active[so.key()]; ok {
		return nil, rackplane.Errorf(rackplane.ECONFLICT, "an import of %s is already running (import %s)", so.key(), cur.id)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("import id: %w", err)
	}
	st := &importState{id: id.String(), key: so.key(), src: so, startedAt: s.cfg.Now().UTC(), state: ImportRunning, done: make(chan struct{})}
	st.lastLog.Store(time.Now().UnixNano())
	s.active[st.key] = st
	s.imports = append(s.imports, st)
	// Forget the oldest finished imports beyond the limit.
	for over := len(s.imports) - s.cfg.KeepImports; over > 0; over-- {
		i := slices.IndexFunc(s.imports, isDone)
		if i < 0 {
			break
		}
		s.imports = slices.Delete(s.imports, i, i+1)
	}
	return st, nil
}

func isDone(st *importState) bool {
	select {
	case <-st.done:
		return true
	default:
		return false
	}
}

func (s *Store) runImport(ctx context.Context, st *importState) {
	log := s.log.With("import_id", st.id, "source", st.key)
	log.Info("image import started")
	created := map[string]bool{}
	err := s.importAll(ctx, st, created)
	if err != nil {
		s.dropCreatedBlobs(created)
	}
	s.mu.Lock()
	delete(s.active, st.key)
	s.mu.Unlock()
	st.mu.Lock()
	st.finished = s.cfg.Now().UTC()
	st.err = err
	if err != nil {
		st.state = ImportFailed
	} else {
		st.state = ImportSucceeded
	}
	st.mu.Unlock()
	close(st.done)
	status := st.status()
	if err != nil {
		s.m.imports.WithLabelValues("failed").Inc()
		log.Error("image import failed", "err", err, "bytes_done", status.BytesDone)
		s.emit(events.TypeImageImportFailed, "store", events.ImageImportFailed{
			ImportID: st.id, Source: st.key, Code: status.Code, Error: status.Error,
		})
		return
	}
	s.m.imports.WithLabelValues("succeeded").Inc()
	log.Info("image import finished", "unchanged", status.Unchanged, "versions", len(status.Versions),
		"bytes", status.BytesDone, "files", status.FilesDone, "mb_per_sec", status.BytesPerSec/1e6)
}

func (s *Store) importAll(ctx context.Context, st *importState, created map[string]bool) error {
	m, unchanged, err := st.src.manifest(ctx)
	if err != nil {
		return err
	}
	st.mu.Lock()
	st.unchanged = unchanged
	st.mu.Unlock()

	// Check every version before fetching anything, so that progress has
	// a total and an immutable version changed by the source fails the
	// import before any byte moves.
	counted := map[string]bool{}
	s.mu.Lock()
	for _, v := range m.Versions {
		if e, ok := s.versions[v.ID()]; ok && !sameFiles(e.v.Files, v.Files) {
			s.mu.Unlock()
			return rackplane.Errorf(rackplane.ECONFLICT, "source changed version %s, which is immutable; publish it under a new version", v.ID())
		}
		for _, f := range v.Files {
			if !s.hasBlob(f) {
				st.count(f, counted)
			}
		}
	}
	s.mu.Unlock()
	if err := s.checkSpace(st.bytesTotal.Load()); err != nil {
		return err
	}

	for _, v := range m.Versions {
		sums := make([]string, len(v.Files))
		for i, f := range v.Files {
			sums[i] = f.SHA256
		}
		// Pinned blobs survive a concurrent GC (or another import's
		// failure) while the version they belong to is not written yet.
		s.pin(sums, 1)
		err := s.importVersion(ctx, st, v, counted, created)
		s.pin(sums, -1)
		if err != nil {
			return fmt.Errorf("version %s: %w", v.ID(), err)
		}
		st.mu.Lock()
		st.versions = append(st.versions, v.ID())
		st.mu.Unlock()
	}
	return st.src.succeeded()
}

// spaceReserve is what an import leaves free on the image store's file
// system, for the rack's journal, caches and the imports beside it.
const spaceReserve = 512 << 20

// checkSpace refuses an import of need bytes that would fill the image
// store's file system: a source (a remote mirror) says how large its
// files are, and the store holds it to that before it fetches a byte.
func (s *Store) checkSpace(need int64) error {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(s.blobDir, &fs); err != nil {
		return nil // unknown: the fetch's own errors say what happens
	}
	free := int64(fs.Bavail) * int64(fs.Bsize)
	if need > free-spaceReserve {
		return rackplane.Errorf(rackplane.ECONFLICT, "the import needs %d bytes; the image store's file system has %d free, of which %d stay free for the rack: "+
			"delete old versions (or run GC) or narrow the import", need, max(free, 0), int64(spaceReserve))
	}
	return nil
}

func (st *importState) count(f SourceFile, counted map[string]bool) {
	if !counted[f.SHA256] {
		counted[f.SHA256] = true
		st.bytesTotal.Add(f.Size)
		st.filesTotal.Add(1)
	}
}

func (s *Store) hasBlob(f SourceFile) bool {
	fi, err := os.Stat(s.blobPath(f.SHA256))
	return err == nil && fi.Size() == f.Size
}

func (s *Store) pin(sums []string, d int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sum := range sums {
		s.pins[sum] += d
		if s.pins[sum] <= 0 {
			delete(s.pins, sum)
		}
	}
}

func (s *Store) importVersion(ctx context.Context, st *importState, sv SourceVersion, counted, created map[string]bool) error {
	var downloaded int64
	for _, f := range sv.Files {
		if s.hasBlob(f) {
			continue
		}
		st.count(f, counted)
		n, err := s.fetchBlob(ctx, st, f)
		if err != nil {
			return err
		}
		created[f.SHA256] = true
		downloaded += n
	}
	v := sv.toVersion(st.key, s.cfg.Now())
	s.mu.Lock()
	for _, f := range sv.Files {
		if !s.hasBlob(f) {
			s.mu.Unlock()
			return rackplane.Errorf(rackplane.EUNAVAILABLE, "file %s vanished from the store during the import", f.Name)
		}
	}
	cur, exists := s.versions[v.ID]
	if exists && cur.problem == "" {
		s.mu.Unlock()
		return nil // present and complete: nothing to do
	}
	if exists {
		v = cur.v // repaired: the manifest stays as it was
	} else {
		b, err := marshalIndent(v)
		if err == nil {
			err = s.writeFileAtomic(filepath.Join(s.versionDir, versionFileName(v.ID)), b)
		}
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("write version manifest: %w", err)
		}
	}
	s.versions[v.ID] = &entry{v: v, lastServed: s.cfg.Now()}
	s.mu.Unlock()
	s.log.Info("image version imported", "import_id", st.id, "version_id", v.ID, "bytes", downloaded, "repaired", exists)
	s.emit(events.TypeImageImported, v.ID, events.ImageImported{
		ImportID: st.id, VersionID: v.ID, Kind: v.Kind, OS: v.OS, Release: v.Release, Arch: v.Arch,
		Subarch: v.Subarch, Label: v.Label, Bootloader: v.Bootloader, Version: v.Version,
		Files: v.Files, Source: st.key, BytesDownloaded: downloaded,
	})
	s.changed()
	return nil
}

// fetchBlob streams one file into tmp/, checks its size and sha256, and
// renames it into blobs/. It returns the bytes read.
func (s *Store) fetchBlob(ctx context.Context, st *importState, f SourceFile) (int64, error) {
	rc, err := st.src.open(ctx, f)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(s.tmpDir, "blob-*")
	if err != nil {
		return 0, fmt.Errorf("create temp file: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	// One byte past the announced size is enough to tell it is too long.
	n, err := io.Copy(io.MultiWriter(tmp, h, progress{st, s}), io.LimitReader(rc, f.Size+1))
	if err != nil {
		return n, sourceReadError(ctx, st.key, err)
	}
	if n != f.Size {
		return n, rackplane.Errorf(rackplane.EINVALID, "file %s: source sent %s bytes, manifest says %d", f.Name, sizeWord(n, f.Size), f.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return n, rackplane.Errorf(rackplane.EINVALID, "file %s: sha256 is %s, manifest says %s", f.Name, got, f.SHA256)
	}
	if err := tmp.Chmod(0o444); err != nil {
		return n, fmt.Errorf("protect blob: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return n, fmt.Errorf("sync blob: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return n, fmt.Errorf("close blob: %w", err)
	}
	dst := s.blobPath(f.SHA256)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return n, fmt.Errorf("create blob dir: %w", err)
	}
	err = os.Rename(tmp.Name(), dst)
	// A descriptor kept of what the path held before (a blob of the
	// wrong size) must not outlive it.
	s.mu.Lock()
	s.forgetShared(f.SHA256)
	s.mu.Unlock()
	if err != nil {
		return n, fmt.Errorf("store blob: %w", err)
	}
	ok = true
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return n, fmt.Errorf("sync blob dir: %w", err)
	}
	st.filesDone.Add(1)
	return n, nil
}

func sizeWord(n, want int64) string {
	if n > want {
		return "more than the"
	}
	return fmt.Sprint(n)
}

type progress struct {
	st *importState
	s  *Store
}

// progressLogEvery spaces the progress lines of a long download.
const progressLogEvery = 10 * time.Second

func (p progress) Write(b []byte) (int, error) {
	done := p.st.bytesDone.Add(int64(len(b)))
	p.s.m.importBytes.Add(float64(len(b)))
	now := time.Now().UnixNano()
	if last := p.st.lastLog.Load(); now-last >= int64(progressLogEvery) && p.st.lastLog.CompareAndSwap(last, now) {
		p.s.log.Info("image import progress", "import_id", p.st.id, "source", p.st.key,
			"bytes_done", done, "bytes_total", p.st.bytesTotal.Load(),
			"files_done", p.st.filesDone.Load(), "files_total", p.st.filesTotal.Load())
	}
	return len(b), nil
}

// dropCreatedBlobs removes the blobs a failed import stored that no
// version uses, so a failure leaves the store as it found it.
func (s *Store) dropCreatedBlobs(created map[string]bool) {
	if len(created) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	used := s.usedBlobsLocked(nil)
	for sum := range created {
		if used[sum] {
			continue
		}
		err := os.Remove(s.blobPath(sum))
		s.forgetShared(sum)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("remove blob of failed import", "sha256", sum, "err", err)
		}
	}
}

func marshalIndent(v any) ([]byte, error) { return json.MarshalIndent(v, "", "  ") }

// holdsAll reports whether every version of m is in the store, complete
// and with m's files. A source whose versions are named by what they are
// (a package version, a stream's serial) is then unchanged: versions are
// immutable, so there is nothing to fetch.
func (s *Store) holdsAll(m *Manifest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range m.Versions {
		e, ok := s.versions[v.ID()]
		if !ok || e.problem != "" || !sameFiles(e.v.Files, v.Files) {
			return false
		}
	}
	return len(m.Versions) > 0
}

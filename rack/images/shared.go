package images

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/rackplane/rackplane"
)

// SharedFile is a stored file held open for many transfers at once
// (OpenShared). They read it only at explicit offsets (pread, sendfile
// with an offset), never seek or close it, and Release it when done.
type SharedFile struct {
	File    *os.File
	Size    int64     // of the blob, as fstat gave it when it was opened
	ModTime time.Time // likewise

	s    *Store
	sum  string
	refs int // transfers holding it, under s.mu
	// kept: in s.shared, to be handed out again; a file no longer kept is
	// closed by the last Release.
	kept bool
}

// maxShared bounds the blobs kept open: a rack boots from a handful of
// files (a kernel, an initrd, a squashfs per version, the boot loaders).
// Past it, a file is opened for its transfer alone.
const maxShared = 64

// OpenShared is OpenFile for a transfer that reads only at explicit
// offsets: the version table is looked up and the hand-out recorded on
// every call, as OpenFile does, but the descriptor is the store's, kept
// open across requests, which saves the open, fstat and close of each.
//
// A kept descriptor is never stale: a blob's content is its name (its
// SHA-256), and every change to the file at a blob's path (removed by GC
// or a failed import, moved to quarantine, stored by an import) drops the
// descriptor kept for it (forgetShared) under the store's lock, after the
// change, so the next request opens what the path holds then. A blob
// whose size is not the manifest's is not served from here at all.
func (s *Store) OpenShared(ctx context.Context, path string) (*SharedFile, string, error) {
	id, name, err := ParsePath(path)
	if err != nil {
		return nil, "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, f, err := s.lookupLocked(id, name)
	if err != nil {
		return nil, "", err
	}
	sf := s.shared[f.SHA256]
	if sf == nil {
		fh, err := openBlob(s.blobPath(f.SHA256))
		if err != nil {
			return nil, "", s.vanishedLocked(e, id, name, err)
		}
		fi, err := fh.Stat()
		if err == nil && (!fi.Mode().IsRegular() || fi.Size() != f.Size) {
			err = fmt.Errorf("%d bytes (mode %s), the manifest says %d", fi.Size(), fi.Mode(), f.Size)
		}
		if err != nil {
			fh.Close()
			s.log.Error("stored image file is not as imported", "version_id", id, "file", name, "err", err)
			return nil, "", rackplane.WrapError(rackplane.EUNAVAILABLE, err, "image version %s: file %s is not as imported", id, name)
		}
		sf = &SharedFile{File: fh, Size: fi.Size(), ModTime: fi.ModTime(), s: s, sum: f.SHA256}
		if len(s.shared) < maxShared && !s.closed {
			sf.kept = true
			s.shared[f.SHA256] = sf
		}
	}
	sf.refs++
	e.lastServed = s.cfg.Now()
	s.m.handedOut.Inc()
	return sf, id, nil
}

// Release ends a transfer's use of the file.
func (sf *SharedFile) Release() {
	s := sf.s
	s.mu.Lock()
	sf.refs--
	done := sf.refs == 0 && !sf.kept
	s.mu.Unlock()
	if done {
		sf.File.Close()
	}
}

// forgetShared drops the descriptor kept for blob sum, if any: called,
// under s.mu, after any change to the file at its path. Transfers using
// it finish with it.
func (s *Store) forgetShared(sum string) {
	sf := s.shared[sum]
	if sf == nil {
		return
	}
	delete(s.shared, sum)
	sf.kept = false
	if sf.refs == 0 {
		sf.File.Close()
	}
}

// forgetAllShared drops every kept descriptor (at Close).
func (s *Store) forgetAllShared() {
	for sum := range s.shared {
		s.forgetShared(sum)
	}
}

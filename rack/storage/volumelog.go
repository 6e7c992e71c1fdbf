package storage

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// volumeLog is the one log file of a volume, shared by all its actions (a
// file per operation piles up: attach runs at every machine start). When
// it passes max bytes it is cut down to its newest half, at a line
// boundary, so the latest failures are always there to read. One action
// at a time writes it (the caller holds the volume's lock); the stdout and
// stderr copiers are serialised by syncWriter.
type volumeLog struct {
	path string
	max  int64
	f    *os.File
	size int64
	err  error // first write failure, reported once the action ends
}

func openVolumeLog(path string, max int64) (*volumeLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open volume log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat volume log: %w", err)
	}
	l := &volumeLog{path: path, max: max, f: f, size: st.Size()}
	if l.size > max {
		l.compact()
	}
	return l, nil
}

func (l *volumeLog) Write(p []byte) (int, error) {
	if l.f == nil {
		return len(p), nil
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	if err != nil {
		if l.err == nil {
			l.err = fmt.Errorf("write volume log: %w", err)
		}
		return n, err
	}
	if l.size > l.max {
		l.compact()
	}
	return n, nil
}

// compact rewrites the file with its newest max/2 bytes. The rewrite goes
// through a temporary file and a rename so that a crash leaves either the
// old log or the cut one.
func (l *volumeLog) compact() {
	keep := l.max / 2
	if err := l.f.Close(); err != nil && l.err == nil {
		l.err = fmt.Errorf("close volume log: %w", err)
	}
	l.f = nil
	b, err := readTail(l.path, keep)
	if err == nil {
		if i := bytes.IndexByte(b, '\n'); i >= 0 && int64(len(b)) == keep {
			b = b[i+1:]
		}
		b = append([]byte("[earlier output dropped: log size limit]\n"), b...)
		err = writeFileAtomic(l.path, b, 0o640)
	}
	if err != nil && l.err == nil {
		l.err = fmt.Errorf("cut volume log: %w", err)
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		if l.err == nil {
			l.err = fmt.Errorf("reopen volume log: %w", err)
		}
		return
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		if l.err == nil {
			l.err = fmt.Errorf("stat volume log: %w", err)
		}
		return
	}
	l.f, l.size = f, st.Size()
}

func (l *volumeLog) Close() error {
	if l.f != nil {
		if err := l.f.Close(); err != nil && l.err == nil {
			l.err = fmt.Errorf("close volume log: %w", err)
		}
		l.f = nil
	}
	return l.err
}

func readTail(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(st.Size()-n, 0)
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(f, n))
}

// writeFileAtomic replaces path with b: temporary file in the same
// directory, fsync, rename, fsync of the directory.
func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly after the rename
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

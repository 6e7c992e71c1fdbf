package ephemeral

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"path"
	"sort"
	"strings"
)

// Modes of entries.
const (
	ModeDir     = 0o040755
	ModeFile    = 0o100644
	ModeExec    = 0o100755
	ModeSymlink = 0o120777
	ModeCharDev = 0o020600
)

// Entry is a file of a tree.
type Entry struct {
	Mode uint32
	Rdev uint32 // major<<8 | minor, for device nodes
	Data []byte // a symlink's target
}

// Tree is a file tree being built (an initramfs), by path (no leading
// slash); files are owned by root.
type Tree map[string]Entry

// Add puts an entry in, with its parent directories.
func (t Tree) Add(name string, e Entry) {
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		if _, ok := t[d]; !ok {
			t[d] = Entry{Mode: ModeDir}
		}
	}
	t[name] = e
}

// Names returns the tree's paths, sorted (so each directory precedes
// what it holds).
func (t Tree) Names() []string {
	names := make([]string, 0, len(t))
	for n := range t {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Archive returns the tree as a gzip'd "newc" cpio archive, the format
// the kernel unpacks into its initramfs. It is a function of the tree
// alone: entries sorted by path (so each directory precedes what it
// holds), inode numbers in that order, owner root, mtime 0, and a gzip
// header with no name and no time.
func (t Tree) Archive() ([]byte, error) {
	names := t.Names()
	var b bytes.Buffer
	pad := func() {
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	write := func(ino int, name string, e Entry) error {
		if strings.HasPrefix(name, "/") || len(name) > 4096 {
			return fmt.Errorf("initramfs: bad path %q", name)
		}
		nlink := 1
		if e.Mode&0o170000 == 0o040000 {
			nlink = 2
		}
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, e.Mode, 0, 0, nlink, 0, len(e.Data), 0, 0, e.Rdev>>8, e.Rdev&0xff, len(name)+1, 0)
		b.WriteString(name)
		b.WriteByte(0)
		pad()
		b.Write(e.Data)
		pad()
		return nil
	}
	for i, n := range names {
		if err := write(i+1, n, t[n]); err != nil {
			return nil, err
		}
	}
	if err := write(0, "TRAILER!!!", Entry{}); err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	// The zero header: no name, mtime 0.
	if _, err := zw.Write(b.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return gz.Bytes(), nil
}

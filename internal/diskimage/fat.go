package diskimage

import (
	"encoding/binary"
	"fmt"
	"path"
	"slices"
	"strings"
)

// fat16 returns a FAT16 file system of size bytes holding files (by
// path, such as EFI/BOOT/BOOTX64.EFI) and the directories they are in:
// the EFI system partition. It is written here rather than by mtools so
// that it is a function of its arguments alone: every time stamp is
// 1980-01-01 00:00, the volume id is fixed, and clusters are given in
// the order of sorted paths. hidden is the partition's first sector,
// which the boot sector records. Names must be 8.3 and upper case.
func fat16(size int64, hidden uint32, label string, files map[string][]byte) ([]byte, error) {
	const (
		sector     = 512
		perCluster = 4 // 2 KiB clusters
		reserved   = 4
		rootDirs   = 512 // root directory entries
		rootSecs   = rootDirs * 32 / sector
	)
	total := int(size / sector)
	// The FAT's size depends on the clusters it maps and they on it:
	// take the FAT for all the sectors, which is a few sectors too big.
	fatSecs := ((total/perCluster+2)*2 + sector - 1) / sector
	dataStart := reserved + 2*fatSecs + rootSecs
	clusters := (total - dataStart) / perCluster
	if clusters < 4085 || clusters >= 65525 {
		return nil, fmt.Errorf("ESP of %d bytes: %d clusters is no FAT16", size, clusters)
	}
	img := make([]byte, size)
	b := img[:sector]
	copy(b, []byte{0xeb, 0x3c, 0x90})
	copy(b[3:], "RACKPLN ")
	binary.LittleEndian.PutUint16(b[11:], sector)
	b[13] = perCluster
	binary.LittleEndian.PutUint16(b[14:], reserved)
	b[16] = 2 // FATs
	binary.LittleEndian.PutUint16(b[17:], rootDirs)
	if total < 65536 {
		binary.LittleEndian.PutUint16(b[19:], uint16(total))
	} else {
		binary.LittleEndian.PutUint32(b[32:], uint32(total))
	}
	b[21] = 0xf8 // fixed disk
	binary.LittleEndian.PutUint16(b[22:], uint16(fatSecs))
	binary.LittleEndian.PutUint16(b[24:], 32) // sectors per track
	binary.LittleEndian.PutUint16(b[26:], 64) // heads
	binary.LittleEndian.PutUint32(b[28:], hidden)
	b[36] = 0x80
	b[38] = 0x29 // extended boot signature: id, label and type follow
	binary.LittleEndian.PutUint32(b[39:], 0x52504c4e)
	copy(b[43:54], fmt.Sprintf("%-11s", label))
	copy(b[54:62], "FAT16   ")
	b[510], b[511] = 0x55, 0xaa

	// The directories, each a list of entries.
	type dirent struct {
		name    string
		dir     bool
		cluster int
		size    int
	}
	dirs := map[string][]*dirent{"": nil}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	byPath := map[string]*dirent{}
	for _, p := range paths {
		// Parents first.
		parts := strings.Split(p, "/")
		for i := range parts {
			sub := strings.Join(parts[:i+1], "/")
			if byPath[sub] != nil {
				continue
			}
			e := &dirent{name: parts[i], dir: i < len(parts)-1}
			if !e.dir {
				e.size = len(files[p])
			}
			byPath[sub] = e
			parent := strings.Join(parts[:i], "/")
			dirs[parent] = append(dirs[parent], e)
			if e.dir {
				dirs[sub] = nil
			}
		}
	}
	// Clusters, in path order: a directory takes one (64 entries is
	// plenty), a file as many as it needs, contiguous.
	fat := make([]uint16, clusters+2)
	fat[0], fat[1] = 0xfff8, 0xffff
	next := 2
	alloc := func(n int) (int, error) {
		if n == 0 {
			return 0, nil
		}
		if next+n > len(fat) {
			return 0, fmt.Errorf("ESP of %d bytes is too small", size)
		}
		first := next
		for i := 0; i < n; i++ {
			fat[next+i] = uint16(next + i + 1)
		}
		fat[next+n-1] = 0xffff
		next += n
		return first, nil
	}
	subs := make([]string, 0, len(byPath))
	for p := range byPath {
		subs = append(subs, p)
	}
	slices.Sort(subs)
	clusterBytes := perCluster * sector
	offset := func(c int) int { return (dataStart + (c-2)*perCluster) * sector }
	for _, p := range subs {
		e := byPath[p]
		n := 1
		if !e.dir {
			n = (e.size + clusterBytes - 1) / clusterBytes
		}
		c, err := alloc(n)
		if err != nil {
			return nil, err
		}
		e.cluster = c
		if !e.dir && c != 0 {
			copy(img[offset(c):], files[p])
		}
	}
	entry := func(dst []byte, name string, dir bool, cluster, size int) error {
		base, ext, _ := strings.Cut(name, ".")
		if name != "." && name != ".." && (len(base) == 0 || len(base) > 8 || len(ext) > 3 || strings.ToUpper(name) != name ||
			strings.ContainsFunc(base+ext, func(r rune) bool { return !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') })) {
			return fmt.Errorf("ESP: %q is no upper case 8.3 name", name)
		}
		if name == "." || name == ".." {
			base, ext = name, ""
		}
		copy(dst[0:8], fmt.Sprintf("%-8s", base))
		copy(dst[8:11], fmt.Sprintf("%-3s", ext))
		dst[11] = 0x20 // archive
		if dir {
			dst[11] = 0x10
		}
		const date = 1<<5 | 1                 // 1980-01-01
		for _, o := range []int{16, 18, 24} { // created, accessed, written
			binary.LittleEndian.PutUint16(dst[o:], date)
		}
		binary.LittleEndian.PutUint16(dst[26:], uint16(cluster))
		binary.LittleEndian.PutUint32(dst[28:], uint32(size))
		return nil
	}
	for _, p := range append([]string{""}, subs...) {
		if p != "" && !byPath[p].dir {
			continue
		}
		var at []byte
		if p == "" {
			at = img[(reserved+2*fatSecs)*sector : dataStart*sector]
			// The volume label, as the boot sector says it.
			copy(at[0:11], fmt.Sprintf("%-11s", label))
			at[11] = 0x08
			at = at[32:]
		} else {
			c := byPath[p].cluster
			at = img[offset(c) : offset(c)+clusterBytes]
			parent := 0 // the root
			if d := path.Dir(p); d != "." {
				parent = byPath[d].cluster
			}
			if err := entry(at[0:], ".", true, c, 0); err != nil {
				return nil, err
			}
			if err := entry(at[32:], "..", true, parent, 0); err != nil {
				return nil, err
			}
			at = at[64:]
		}
		if len(dirs[p])*32 > len(at) {
			return nil, fmt.Errorf("ESP: directory %q has too many entries", p)
		}
		for i, e := range dirs[p] {
			if err := entry(at[i*32:], e.name, e.dir, e.cluster, e.size); err != nil {
				return nil, err
			}
		}
	}
	for i := 0; i < 2; i++ {
		f := img[(reserved+i*fatSecs)*sector:]
		for c, v := range fat {
			binary.LittleEndian.PutUint16(f[c*2:], v)
		}
	}
	return img, nil
}

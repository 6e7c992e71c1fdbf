package diskimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// Decompress writes the raw image of the zstd-compressed image at src to
// dst, leaving holes where the image is zeros, and returns its sha256
// and size: what a manifest's disk says.
func Decompress(src, dst string) (sum string, size int64, err error) {
	in, err := os.Open(src)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	zr, err := zstd.NewReader(in)
	if err != nil {
		return "", 0, err
	}
	defer zr.Close()
	out, err := os.Create(dst)
	if err != nil {
		return "", 0, err
	}
	defer out.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	zero := make([]byte, 4096)
	for {
		n, rerr := io.ReadFull(zr, buf)
		h.Write(buf[:n])
		for off := 0; off < n; off += len(zero) {
			b := buf[off:min(off+len(zero), n)]
			if !bytes.Equal(b, zero[:len(b)]) {
				if _, err := out.WriteAt(b, size+int64(off)); err != nil {
					return "", 0, err
				}
			}
		}
		size += int64(n)
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return "", 0, fmt.Errorf("decompress %s: %w", filepath.Base(src), rerr)
		}
	}
	if err := out.Truncate(size); err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), size, out.Close()
}

// WriteSeed writes a NoCloud seed into the root file system of the raw
// image at raw, as the deploying agent does: files (meta-data,
// user-data, ...) into /var/lib/cloud/seed/<dir>, dir nocloud-net or
// nocloud, replacing files of those names. It uses debugfs (no mount),
// and finds the root file system by the partition table.
func WriteSeed(ctx context.Context, raw, dir string, files map[string][]byte) error {
	if dir != "nocloud-net" && dir != "nocloud" {
		return fmt.Errorf("seed directory %q: nocloud-net or nocloud", dir)
	}
	f, err := os.Open(raw)
	if err != nil {
		return err
	}
	mbr := make([]byte, sector)
	_, err = io.ReadFull(f, mbr)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", raw, err)
	}
	p := mbr[446+16*(RootPartition-1):]
	if mbr[510] != 0x55 || mbr[511] != 0xaa || p[4] != 0x83 {
		return fmt.Errorf("%s has no Linux partition %d in an msdos table", raw, RootPartition)
	}
	offset := int64(binary.LittleEndian.Uint32(p[8:])) * sector
	tmp, err := os.MkdirTemp("", "rackplane-seed-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	seed := "/var/lib/cloud/seed/" + dir
	var script strings.Builder
	fmt.Fprintf(&script, "mkdir /var/lib/cloud/seed\nmkdir %s\ncd %s\n", seed, seed)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for i, n := range names {
		if strings.ContainsAny(n, "/ \n") || n == "" {
			return fmt.Errorf("seed file name %q", n)
		}
		local := filepath.Join(tmp, strconv.Itoa(i))
		if err := os.WriteFile(local, files[n], 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&script, "rm %s\nwrite %s %s\nsif %s uid 0\nsif %s gid 0\n", n, local, n, n, n)
	}
	cmds := filepath.Join(tmp, "cmds")
	if err := os.WriteFile(cmds, []byte(script.String()), 0o644); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "debugfs", "-w", "-f", cmds, raw+"?offset="+strconv.FormatInt(offset, 10))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("debugfs: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		// What is there already, and a file not there to replace, are
		// no failures.
		if l == "" || strings.HasPrefix(l, "debugfs ") || strings.Contains(l, "already exists") ||
			strings.Contains(l, "File not found") || strings.HasPrefix(l, "rm: ") {
			continue
		}
		return fmt.Errorf("debugfs writing the seed: %s", l)
	}
	return nil
}

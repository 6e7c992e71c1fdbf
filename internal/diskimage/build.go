package diskimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/ephemeral"
	"github.com/rackplane/rackplane/rack/images"
	"github.com/rackplane/rackplane/schema"
)

// The image's identity in the store: VersionID
// debian-busybox/<arch>/generic/demo/stable/<version>.
const (
	OS      = "debian-busybox"
	Release = "demo"
	Subarch = "generic"
	Label   = "stable"

	// DiskFile and InfoFile are the names of the version's files (and
	// of the files in the output directory).
	DiskFile = "disk.img.zst"
	InfoFile = "diskimage.json"

	// RootLabel is the root file system's label, which GRUB and the
	// initramfs find it by.
	RootLabel = "rootfs"
	// RootPartition is the root partition's number, the last one.
	RootPartition = 2
)

// Arches are the architectures the image is built for.
var Arches = []string{"amd64", "arm64"}

// Modules are the kernel modules of the initramfs, by module name: the
// drivers of the disks and NICs of QEMU VMs and common servers, and
// ext4 with the checksum it needs (the modules they depend on come too).
var Modules = []string{
	"virtio_pci", "virtio_mmio", "virtio_blk", "virtio_scsi", "virtio_net",
	"nvme", "ahci", "sd_mod",
	"e1000", "e1000e", "igb",
	"ext4", "crc32c_generic",
}

//go:embed initramfs.sh
var initramfsScript []byte

//go:embed init.sh
var initScript []byte

// Options say what to build.
type Options struct {
	// Arch is amd64 (UEFI and BIOS) or arm64 (UEFI).
	Arch string
	// OutDir is the directory to write manifest.json and the files to.
	OutDir string
	// CacheDir keeps apt's package lists and the downloaded packages
	// between builds; empty means rackplane/diskimage in the user's cache
	// directory.
	CacheDir string
	// ListsMaxAge is how old the package lists may be before they are
	// fetched again (default 24h); a negative value always fetches them.
	ListsMaxAge time.Duration
	// Version is the image's version; empty derives it from the kernel
	// package's version and the image's hash, so it changes whenever
	// the image does.
	Version string
	Log     *slog.Logger
}

// Info is what InfoFile records: where the image's contents come from.
type Info struct {
	Arch     string            `json:"arch"`
	Version  string            `json:"version"`
	Kernel   string            `json:"kernel"` // the kernel release, as uname -r says it
	Packages map[string]string `json:"packages"`
	// Tools are the host's tools that wrote part of the image, with
	// their versions: another version may write other bytes.
	Tools   map[string]string `json:"tools"`
	Modules []string          `json:"modules"`
	// Disk is the raw image's size and sha256.
	Disk struct {
		Size   int64  `json:"size"`
		SHA256 string `json:"sha256"`
	} `json:"disk"`
}

// Result is what Build wrote.
type Result struct {
	Dir          string
	ManifestPath string
	VersionID    string
	Version      string
	// DiskSize and DiskSHA256 are the raw image's; CompressedSize is
	// DiskFile's.
	DiskSize       int64
	DiskSHA256     string
	CompressedSize int64
	Info           Info
}

// Build writes the image for o.Arch to o.OutDir: manifest.json, DiskFile
// and InfoFile. It needs apt-get and dpkg-deb (to download and unpack
// the packages), grub-mkimage (grub-common) and mke2fs and debugfs
// (e2fsprogs); it mounts nothing and needs no privileges.
func Build(ctx context.Context, o Options) (*Result, error) {
	if !slices.Contains(Arches, o.Arch) {
		return nil, fmt.Errorf("arch %q: the disk image is built for %s", o.Arch, strings.Join(Arches, " and "))
	}
	if o.OutDir == "" {
		return nil, errors.New("no output directory")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tools, err := toolVersions(ctx)
	if err != nil {
		return nil, err
	}
	a, unlock, err := ephemeral.OpenAPT(ctx, o.CacheDir, "diskimage", o.Arch, o.ListsMaxAge, log)
	if err != nil {
		return nil, err
	}
	defer unlock()
	info := Info{Arch: o.Arch, Packages: map[string]string{}, Tools: tools}
	k, err := a.Kernel(ctx, Modules)
	if err != nil {
		return nil, err
	}
	info.Kernel, info.Packages[k.Package], info.Modules = k.Release, k.Version, k.ModuleNames()
	busybox, bver, err := a.Busybox(ctx)
	if err != nil {
		return nil, err
	}
	info.Packages["busybox-static"] = bver

	tmp, err := os.MkdirTemp("", "rackplane-diskimage-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	grubDir := filepath.Join(tmp, "grub")
	plat := platforms[o.Arch]
	for _, pkg := range plat.grubPackages {
		v, err := unpackGRUB(ctx, a, pkg, grubDir)
		if err != nil {
			return nil, err
		}
		info.Packages[pkg] = v
	}
	for p, v := range info.Packages {
		log.Info("package", "name", p, "version", v)
	}

	// The initramfs: busybox and the modules, enough to mount the root.
	t := ephemeral.Tree{}
	for _, d := range []string{"bin", "dev", "proc", "root", "sys"} {
		t.Add(d, ephemeral.Entry{Mode: ephemeral.ModeDir})
	}
	t.Add("dev/console", ephemeral.Entry{Mode: ephemeral.ModeCharDev, Rdev: 5<<8 | 1})
	t.Add("bin/busybox", ephemeral.Entry{Mode: ephemeral.ModeExec, Data: busybox})
	t.Add("bin/sh", ephemeral.Entry{Mode: ephemeral.ModeSymlink, Data: []byte("busybox")})
	t.Add("init", ephemeral.Entry{Mode: ephemeral.ModeExec, Data: initramfsScript})
	k.AddModules(t)
	initrd, err := t.Archive()
	if err != nil {
		return nil, err
	}

	// The root file system.
	root := rootTree(o.Arch, plat, info.Packages, busybox, k.Image, initrd)
	raw := filepath.Join(tmp, "disk.img")
	if err := assemble(ctx, raw, grubDir, plat, root, log); err != nil {
		return nil, err
	}

	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	log.Info("compress", "file", DiskFile)
	zsum, zsize, rsum, rsize, err := compress(raw, filepath.Join(o.OutDir, DiskFile))
	if err != nil {
		return nil, err
	}
	info.Disk.Size, info.Disk.SHA256 = rsize, rsum
	info.Version = o.Version
	if info.Version == "" {
		// A store refuses a version whose files change, so any change
		// of the image must make a new version.
		b, err := json.Marshal(info)
		if err != nil {
			return nil, err
		}
		h := sha256.Sum256(b)
		info.Version = k.Version + "-" + hex.EncodeToString(h[:])[:12]
	}
	infoJSON, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return nil, err
	}
	infoJSON = append(infoJSON, '\n')
	if err := ephemeral.WriteFile(filepath.Join(o.OutDir, InfoFile), infoJSON); err != nil {
		return nil, err
	}
	isum := sha256.Sum256(infoJSON)
	v := images.SourceVersion{Kind: "image", OS: OS, Release: Release, Arch: o.Arch, Subarch: Subarch, Label: Label,
		Version: info.Version, Installer: events.InstallerAgent,
		Files: []images.SourceFile{
			{Name: DiskFile, SHA256: zsum, Size: zsize},
			{Name: InfoFile, SHA256: hex.EncodeToString(isum[:]), Size: int64(len(infoJSON))},
		},
		Disk: &events.DiskImage{File: DiskFile, Compression: events.DiskCompressionZstd, Size: rsize, SHA256: rsum,
			Table: "msdos", RootPartition: RootPartition, GrowRoot: true},
	}
	m, err := json.MarshalIndent(images.Manifest{Format: images.ManifestFormat, Versions: []images.SourceVersion{v}}, "", "  ")
	if err != nil {
		return nil, err
	}
	m = append(m, '\n')
	// What a rack will check on import, checked here.
	set, err := schema.Default()
	if err != nil {
		return nil, err
	}
	if _, err := images.ParseManifest(set, m); err != nil {
		return nil, fmt.Errorf("the manifest built: %w", err)
	}
	// The manifest last, so that a directory with a manifest is a whole
	// source.
	mpath := filepath.Join(o.OutDir, "manifest.json")
	if err := ephemeral.WriteFile(mpath, m); err != nil {
		return nil, err
	}
	return &Result{Dir: o.OutDir, ManifestPath: mpath, Version: info.Version, VersionID: v.ID(),
		DiskSize: rsize, DiskSHA256: rsum, CompressedSize: zsize, Info: info}, nil
}

// rootTree is the root file system: busybox, /sbin/init, the kernel,
// the initramfs and GRUB's configuration.
func rootTree(arch string, plat platform, packages map[string]string, busybox, kernel, initrd []byte) ephemeral.Tree {
	t := ephemeral.Tree{}
	for _, d := range []string{"bin", "dev", "etc", "proc", "root", "run", "sbin", "sys", "tmp", "var/lib/cloud/seed"} {
		t.Add(d, ephemeral.Entry{Mode: ephemeral.ModeDir})
	}
	t.Add("bin/busybox", ephemeral.Entry{Mode: ephemeral.ModeExec, Data: busybox})
	t.Add("bin/sh", ephemeral.Entry{Mode: ephemeral.ModeSymlink, Data: []byte("busybox")})
	t.Add("sbin/init", ephemeral.Entry{Mode: ephemeral.ModeExec, Data: initScript})
	t.Add("usr/share/udhcpc/default.script", ephemeral.Entry{Mode: ephemeral.ModeExec, Data: ephemeral.UDHCPCScript})
	t.Add("etc/hostname", ephemeral.Entry{Mode: ephemeral.ModeFile, Data: []byte("localhost\n")})
	pkgs := make([]string, 0, len(packages))
	for p, v := range packages {
		pkgs = append(pkgs, p+"="+v)
	}
	slices.Sort(pkgs)
	t.Add("etc/rackplane-image", ephemeral.Entry{Mode: ephemeral.ModeFile, Data: []byte(OS + " " + Release + " " + arch + " " + strings.Join(pkgs, " ") + "\n")})
	t.Add("boot/vmlinuz", ephemeral.Entry{Mode: ephemeral.ModeFile, Data: kernel})
	t.Add("boot/initrd.img", ephemeral.Entry{Mode: ephemeral.ModeFile, Data: initrd})
	t.Add("boot/grub/grub.cfg", ephemeral.Entry{Mode: ephemeral.ModeFile, Data: []byte(grubConfig(plat))})
	return t
}

// compress writes the raw image at raw to out with zstd and returns the
// sha256 and size of both. One encoder goroutine: the same input gives
// the same frames.
func compress(raw, out string) (zsum string, zsize int64, rsum string, rsize int64, err error) {
	in, err := os.Open(raw)
	if err != nil {
		return "", 0, "", 0, err
	}
	defer in.Close()
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", 0, "", 0, fmt.Errorf("write %s: %w", filepath.Base(out), err)
	}
	defer os.Remove(tmp)
	defer f.Close()
	zh, rh := sha256.New(), sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, zh)}
	zw, err := zstd.NewWriter(cw, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
	if err != nil {
		return "", 0, "", 0, err
	}
	rsize, err = io.Copy(io.MultiWriter(zw, rh), in)
	if err != nil {
		return "", 0, "", 0, fmt.Errorf("compress: %w", err)
	}
	if err := zw.Close(); err != nil {
		return "", 0, "", 0, fmt.Errorf("compress: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", 0, "", 0, fmt.Errorf("write %s: %w", filepath.Base(out), err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", 0, "", 0, fmt.Errorf("write %s: %w", filepath.Base(out), err)
	}
	return hex.EncodeToString(zh.Sum(nil)), cw.n, hex.EncodeToString(rh.Sum(nil)), rsize, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// toolVersions returns the versions of the host's tools that write the
// image, or says which one is missing.
func toolVersions(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	for _, tool := range []struct{ name, pkg string }{
		{"grub-mkimage", "grub-common"}, {"mke2fs", "e2fsprogs"}, {"debugfs", "e2fsprogs"},
	} {
		arg := "--version"
		if tool.name != "grub-mkimage" {
			arg = "-V"
		}
		b, err := exec.CommandContext(ctx, tool.name, arg).CombinedOutput()
		if err != nil {
			var ee *exec.Error
			if errors.As(err, &ee) {
				return nil, fmt.Errorf("%s missing: install Debian package %s: %w", tool.name, tool.pkg, err)
			}
			return nil, fmt.Errorf("%s %s: %w: %s", tool.name, arg, err, bytes.TrimSpace(b))
		}
		out[tool.name] = strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
	}
	return out, nil
}

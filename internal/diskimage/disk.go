package diskimage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rackplane/rackplane/internal/ephemeral"
)

// The disk's layout, in 512-byte sectors: the MBR, GRUB's core image in
// the gap before the first partition (BIOS), the EFI system partition at
// 1 MiB, and the root file system after it up to the end of the disk.
const (
	sector    = 512
	diskSize  = 256 << 20
	espStart  = 2048
	espSize   = 32 << 20 / sector
	rootStart = espStart + espSize
	rootSize  = diskSize/sector - rootStart

	// diskSignature is the MBR's disk identifier; volumeUUID is the root
	// file system's UUID and directory hash seed. Fixed, so that builds
	// are alike.
	diskSignature = 0x52504c4e
	volumeUUID    = "5250504c-414e-4544-4953-4b494d414745"
	// fsTime is every time stamp of the root file system.
	fsTime = 1
)

// grubEarly is the configuration built into both GRUB images: find the
// root file system by its label and read grub.cfg from it.
const grubEarly = `search --no-floppy --set=root --label ` + RootLabel + `
set prefix=($root)/boot/grub
`

// platform is how the image boots on an architecture.
type platform struct {
	grubPackages []string // GRUB's Debian packages
	efi          string   // GRUB's UEFI platform
	efiFile      string   // its path on the ESP, the removable media path firmware boots
	bios         bool     // GRUB i386-pc in the MBR too
	console      string   // the serial console, as the kernel names it
}

var platforms = map[string]platform{
	"amd64": {[]string{"grub-efi-amd64-bin", "grub-pc-bin"}, "x86_64-efi", "EFI/BOOT/BOOTX64.EFI", true, "ttyS0,115200n8"},
	"arm64": {[]string{"grub-efi-arm64-bin"}, "arm64-efi", "EFI/BOOT/BOOTAA64.EFI", false, "ttyAMA0,115200n8"},
}

// grubConfig is /boot/grub/grub.cfg: boot the kernel at once, with its
// console on the serial port as well as the screen. Under BIOS, GRUB's
// own console is the screen alone unless told of the serial port (UEFI
// firmware gives it theirs).
func grubConfig(p platform) string {
	var b strings.Builder
	if p.bios {
		b.WriteString("serial --unit=0 --speed=115200\nterminal_input console serial\nterminal_output console serial\n")
	}
	fmt.Fprintf(&b, `set timeout=0
menuentry "Rackplane demo (%s)" {
	linux /boot/vmlinuz root=LABEL=%s rw console=tty0 console=%s
	initrd /boot/initrd.img
}
`, OS, RootLabel, p.console)
	return b.String()
}

// grubModules are the GRUB modules built into both images: enough to
// find and read the root file system and boot Linux from it.
var grubModules = []string{"part_msdos", "ext2", "search", "search_label", "normal", "configfile",
	"linux", "echo", "test", "serial", "terminal"}

// unpackGRUB downloads GRUB package pkg (grub-efi-amd64-bin,
// grub-pc-bin, grub-efi-arm64-bin) and unpacks its usr/lib/grub/<platform> directories into
// dir/<platform>, where grub-mkimage takes its modules from.
func unpackGRUB(ctx context.Context, a *ephemeral.APT, pkg, dir string) (string, error) {
	deb, ver, err := a.Download(ctx, pkg)
	if err != nil {
		return "", err
	}
	n := 0
	err = ephemeral.DebFiles(ctx, deb, func(name string) bool { return strings.HasPrefix(name, "usr/lib/grub/") },
		func(name string, body []byte) error {
			p := filepath.Join(dir, strings.TrimPrefix(name, "usr/lib/grub/"))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			n++
			return os.WriteFile(p, body, 0o644)
		})
	if err != nil {
		return "", err
	}
	if n == 0 {
		return "", fmt.Errorf("package %s has no /usr/lib/grub", pkg)
	}
	return ver, nil
}

// grubImage runs grub-mkimage for platform with the modules of dir.
func grubImage(ctx context.Context, dir, platform, out string, extra ...string) error {
	early := filepath.Join(dir, "early.cfg")
	if err := os.WriteFile(early, []byte(grubEarly), 0o644); err != nil {
		return err
	}
	args := append([]string{"-d", filepath.Join(dir, platform), "-O", platform, "-o", out, "-c", early, "-p", "/boot/grub"},
		append(grubModules, extra...)...)
	return run(ctx, nil, "grub-mkimage", args...)
}

// assemble writes the raw disk image to raw.
func assemble(ctx context.Context, raw, grubDir string, p platform, root ephemeral.Tree, log *slog.Logger) error {
	// GRUB for UEFI, the ESP's removable-media path.
	efi := filepath.Join(grubDir, "grub.efi")
	if err := grubImage(ctx, grubDir, p.efi, efi, "fat", "part_gpt", "efi_gop"); err != nil {
		return err
	}
	efiImg, err := os.ReadFile(efi)
	if err != nil {
		return err
	}
	esp, err := fat16(espSize*sector, espStart, "ESP", map[string][]byte{p.efiFile: efiImg})
	if err != nil {
		return err
	}
	log.Info("disk", "size", diskSize, "esp_bytes", len(esp), "efi_bytes", len(efiImg))
	f, err := os.Create(raw)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(diskSize); err != nil {
		return err
	}
	var bootImg []byte
	if p.bios {
		if bootImg, err = biosGRUB(ctx, f, grubDir); err != nil {
			return err
		}
	}
	if _, err := f.WriteAt(mbr(bootImg), 0); err != nil {
		return err
	}
	if _, err := f.WriteAt(esp, espStart*sector); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return ext4(ctx, raw, root)
}

// biosGRUB writes GRUB's core.img for BIOS right after the MBR of f and
// returns boot.img, whose code goes in the MBR.
func biosGRUB(ctx context.Context, f *os.File, grubDir string) ([]byte, error) {
	core := filepath.Join(grubDir, "core.img")
	if err := grubImage(ctx, grubDir, "i386-pc", core, "biosdisk"); err != nil {
		return nil, err
	}
	coreImg, err := os.ReadFile(core)
	if err != nil {
		return nil, err
	}
	bootImg, err := os.ReadFile(filepath.Join(grubDir, "i386-pc", "boot.img"))
	if err != nil {
		return nil, fmt.Errorf("grub-pc-bin: %w", err)
	}
	if len(bootImg) != sector {
		return nil, fmt.Errorf("grub-pc-bin: boot.img is %d bytes, not %d", len(bootImg), sector)
	}
	if len(coreImg) > (espStart-1)*sector {
		return nil, fmt.Errorf("GRUB's core.img is %d bytes: more than the %d before the first partition", len(coreImg), (espStart-1)*sector)
	}
	// boot.img loads the sector its kernel_sector names (1 as built) and
	// core.img's first sector, diskboot, the rest from sector 2 on: the
	// blocklist grub-mkimage leaves in it, which grub-bios-setup would
	// otherwise rewrite.
	if _, err := f.WriteAt(coreImg, sector); err != nil {
		return nil, err
	}
	return bootImg, nil
}

// mbr returns the MBR: boot.img's code (none without BIOS), the disk
// signature and the two partitions.
func mbr(bootImg []byte) []byte {
	b := make([]byte, sector)
	copy(b[:440], bootImg)
	binary.LittleEndian.PutUint32(b[440:], diskSignature)
	part := func(i int, active bool, typ byte, start, size uint32) {
		p := b[446+16*i:]
		if active {
			p[0] = 0x80
		}
		// CHS addresses past what CHS can say: firmware uses the LBAs.
		copy(p[1:4], []byte{0xfe, 0xff, 0xff})
		p[4] = typ
		copy(p[5:8], []byte{0xfe, 0xff, 0xff})
		binary.LittleEndian.PutUint32(p[8:], start)
		binary.LittleEndian.PutUint32(p[12:], size)
	}
	part(0, false, 0xef, espStart, espSize)  // EFI system partition
	part(1, true, 0x83, rootStart, rootSize) // Linux, active for BIOSes that look for one
	b[510], b[511] = 0x55, 0xaa
	return b
}

// mke2fsConfig gives mke2fs its features rather than the host's
// /etc/mke2fs.conf: ones GRUB 2.06 reads and Debian's kernels mount.
const mke2fsConfig = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384
[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
`

// ext4 makes the root file system in the root partition of the disk at
// raw and puts root's files in, with mke2fs and debugfs (no mount). The
// files go in in path order, and each inode's times, owner and mode are
// set after, so the file system depends on root alone, not on the host's
// directory order, time or user.
func ext4(ctx context.Context, raw string, root ephemeral.Tree) error {
	tmp, err := os.MkdirTemp(filepath.Dir(raw), "rootfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	conf := filepath.Join(tmp, "mke2fs.conf")
	if err := os.WriteFile(conf, []byte(mke2fsConfig), 0o644); err != nil {
		return err
	}
	env := []string{"MKE2FS_CONFIG=" + conf, "E2FSPROGS_FAKE_TIME=" + strconv.Itoa(fsTime)}
	offset := strconv.Itoa(rootStart * sector)
	if err := run(ctx, env, "mke2fs", "-q", "-F", "-t", "ext4", "-L", RootLabel, "-U", volumeUUID,
		"-E", "offset="+offset+",hash_seed="+volumeUUID+",root_owner=0:0,nodiscard",
		raw, strconv.Itoa(rootSize*sector/4096)); err != nil {
		return err
	}
	var script bytes.Buffer
	fix := func(p string, mode uint32) {
		for _, f := range []string{"atime", "mtime", "ctime", "crtime"} {
			fmt.Fprintf(&script, "sif %s %s %d\n", p, f, fsTime)
		}
		fmt.Fprintf(&script, "sif %s uid 0\nsif %s gid 0\nsif %s mode 0%o\n", p, p, p, mode)
	}
	fix("/", ephemeral.ModeDir)
	fix("/lost+found", 0o040700)
	for i, name := range root.Names() {
		e := root[name]
		p := "/" + name
		switch e.Mode &^ 0o7777 {
		case ephemeral.ModeDir &^ 0o7777:
			fmt.Fprintf(&script, "mkdir %s\n", p)
		case ephemeral.ModeSymlink &^ 0o7777:
			fmt.Fprintf(&script, "symlink %s %s\n", p, e.Data)
		case ephemeral.ModeFile &^ 0o7777:
			local := filepath.Join(tmp, strconv.Itoa(i))
			if err := os.WriteFile(local, e.Data, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(&script, "cd %s\nwrite %s %s\ncd /\n", path.Dir(p), local, path.Base(p))
		default:
			return fmt.Errorf("root file system: %s has mode %o, which is not made here", name, e.Mode)
		}
		fix(p, e.Mode)
	}
	cmds := filepath.Join(tmp, "debugfs.cmds")
	if err := os.WriteFile(cmds, script.Bytes(), 0o644); err != nil {
		return err
	}
	dev := raw + "?offset=" + offset
	cmd := exec.CommandContext(ctx, "debugfs", "-w", "-f", cmds, dev)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("debugfs: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	// debugfs goes on past a command that fails, and says so only on
	// stderr, after its banner.
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if l != "" && !strings.HasPrefix(l, "debugfs ") {
			return fmt.Errorf("debugfs populating the root file system: %s", l)
		}
	}
	if err := run(ctx, nil, "e2fsck", "-f", "-n", dev); err != nil {
		return fmt.Errorf("the root file system built: %w", err)
	}
	return nil
}

// run runs tool; its output is in the error it fails with.
func run(ctx context.Context, env []string, tool string, args ...string) error {
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

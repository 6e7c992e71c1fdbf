package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/inventory"
)

// Kernel parameters of an erase boot: rackplane.purpose=erase and
// rackplane.erase=quick|full (the region's boot decision puts both).
const (
	PurposeParam = "rackplane.purpose"
	EraseParam   = "rackplane.erase"
)

// The extents a quick erase zeroes: the first and last edge bytes of each
// partition and of the disk, where partition tables (MBR, GPT and its
// backup) and the signatures of filesystems, LVM, RAID and bcache are;
// and btrfs' first mirror superblock (4 KiB at 64 MiB), which lies past
// the edge.
const (
	quickEdge       = 2 << 20
	btrfsMirrorAt   = 64 << 20
	btrfsMirrorSize = 4 << 10
)

// fullBlock is the size of a full erase's writes.
const fullBlock = 4 << 20

// Extent is a byte range of a device.
type Extent struct{ Start, Size int64 }

// cmdlineValue returns the value of the last key= of a kernel command
// line, or "".
func cmdlineValue(cmdline, key string) string {
	var out string
	for w := range strings.FieldsSeq(cmdline) {
		if v, ok := strings.CutPrefix(w, key+"="); ok {
			out = v
		}
	}
	return out
}

// EraseTargets lists the disks of the system under root an erase wipes:
// inventory's disks, without removable or read-only ones (a USB stick or
// a virtual CD the operator left in is not the machine's to wipe), and
// never a loop, RAM, zram or optical device.
func EraseTargets(root string) ([]string, error) {
	disks, err := inventory.Disks(root)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range disks {
		if d.Removable || slices.ContainsFunc([]string{"loop", "ram", "zram", "sr"}, func(p string) bool { return strings.HasPrefix(d.Name, p) }) {
			continue
		}
		if ro, _ := os.ReadFile(filepath.Join(root, "sys/block", d.Name, "ro")); strings.TrimSpace(string(ro)) == "1" {
			continue
		}
		out = append(out, d.Name)
	}
	return out, nil
}

// Partitions reads the partitions of disk from sysfs under root
// (/sys/block/<disk>/<partition>/{start,size}, in 512-byte sectors
// whatever the device's own), as the kernel knows them now.
func Partitions(root, disk string) ([]Extent, error) {
	dir := filepath.Join(root, "sys/block", disk)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("partitions of %s: %w", disk, err)
	}
	var out []Extent
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), disk) {
			continue
		}
		start, err1 := readSectors(filepath.Join(dir, e.Name(), "start"))
		size, err2 := readSectors(filepath.Join(dir, e.Name(), "size"))
		if err1 != nil || err2 != nil {
			continue // not a partition
		}
		out = append(out, Extent{Start: start * 512, Size: size * 512})
	}
	return out, nil
}

func readSectors(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// quickExtents are the extents a quick erase of a device of size bytes
// with parts zeroes, each within the device, partitions first.
func quickExtents(size int64, parts []Extent) []Extent {
	var out []Extent
	clip := func(e Extent, within Extent) {
		end := min(e.Start+e.Size, within.Start+within.Size, size)
		start := max(e.Start, within.Start, 0)
		if end > start {
			out = append(out, Extent{Start: start, Size: end - start})
		}
	}
	for _, p := range append(slices.Clone(parts), Extent{0, size}) {
		clip(Extent{p.Start, quickEdge}, p)
		clip(Extent{p.Start + p.Size - quickEdge, quickEdge}, p)
		if p.Size > btrfsMirrorAt+btrfsMirrorSize {
			clip(Extent{p.Start + btrfsMirrorAt, btrfsMirrorSize}, p)
		}
	}
	return out
}

// EraseDevice erases the device at path, a block device or a file
// standing in for one: quick zeroes quickExtents (parts are its
// partitions, read before, as the partition table that is wiped said
// them); full overwrites every byte with zeros, calling progress with the
// bytes written and the total as it goes. It syncs what it wrote and asks
// the kernel to read a block device's partition table again, so that the
// partitions it wiped are gone.
func EraseDevice(ctx context.Context, path, mode string, parts []Extent, progress func(done, total int64)) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("size of %s: %w", path, err)
	}
	var extents []Extent
	switch mode {
	case events.EraseQuick:
		extents = quickExtents(size, parts)
	case events.EraseFull:
		extents = []Extent{{0, size}}
	default:
		return fmt.Errorf("erase mode %q: want quick or full", mode)
	}
	zeros := make([]byte, fullBlock)
	var done, total int64
	for _, e := range extents {
		total += e.Size
	}
	for _, e := range extents {
		for off := e.Start; off < e.Start+e.Size; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(int64(len(zeros)), e.Start+e.Size-off)
			if _, err := f.WriteAt(zeros[:n], off); err != nil {
				return fmt.Errorf("write %s at %d: %w", path, off, err)
			}
			off += n
			done += n
			if progress != nil {
				progress(done, total)
			}
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeDevice != 0 {
		// A disk that has no partition table support (a loop device
		// without partscan) says EINVAL: nothing to re-read there.
		if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("re-read the partition table of %s: %w", path, err)
		}
	}
	return f.Close()
}

// progressEvery reports progress in steps of at least 5%, or after 10s
// without one.
type progressEvery struct {
	last    int
	lastAt  time.Time
	report  func(pct int)
	nowFunc func() time.Time
}

func (p *progressEvery) update(done, total int64) {
	if total <= 0 {
		return
	}
	pct := int(done * 100 / total)
	now := p.nowFunc()
	if pct >= 100 || pct-p.last < 5 && now.Sub(p.lastAt) < 10*time.Second {
		return // 100 is the step's done
	}
	p.last, p.lastAt = pct, now
	p.report(pct)
}

// runErase erases the machine's disks as rackplane.erase= says, reporting
// a step erase:<disk> for each with its progress, then the outcome: a
// success only when every disk was erased.
func runErase(ctx context.Context, c *client, cmdline string, log *slog.Logger) error {
	mode := cmdlineValue(cmdline, EraseParam)
	fail := func(step string, err error) error {
		log.Error("erase failed", "step", step, "err", err)
		c.step(ctx, step, events.AgentStepFailed, err.Error(), 0)
		if derr := c.done(ctx, false, err.Error()); derr != nil {
			return errors.Join(err, derr)
		}
		return err
	}
	if mode != events.EraseQuick && mode != events.EraseFull {
		return fail("erase", fmt.Errorf("%s=%q on the kernel command line: want quick or full", EraseParam, mode))
	}
	disks, err := EraseTargets(c.cfg.Root)
	if err != nil {
		return fail("erase", fmt.Errorf("list the disks: %w", err))
	}
	if len(disks) == 0 {
		// An environment without the driver of the machine's disk
		// controller sees no disk: a success would make the machine
		// ready with its disks as they were.
		return fail("erase", errors.New("no disk to erase: none the kernel found is fixed and writable (is the disk controller's driver in the ephemeral environment?)"))
	}
	log.Info("erasing", "mode", mode, "disks", disks)
	var failed []string
	for _, d := range disks {
		step := "erase:" + d
		c.step(ctx, step, events.AgentStepStarted, mode, 0)
		parts, err := Partitions(c.cfg.Root, d)
		if err == nil {
			p := &progressEvery{lastAt: time.Now(), nowFunc: time.Now, report: func(pct int) {
				c.step(ctx, step, events.AgentStepStarted, mode, pct)
			}}
			err = EraseDevice(ctx, filepath.Join(c.cfg.Root, "dev", d), mode, parts, p.update)
		}
		if err != nil {
			log.Error("disk not erased", "disk", d, "err", err)
			c.step(ctx, step, events.AgentStepFailed, err.Error(), 0)
			failed = append(failed, d+": "+err.Error())
			continue
		}
		c.step(ctx, step, events.AgentStepDone, fmt.Sprintf("%s erase, %d partitions", mode, len(parts)), 100)
	}
	if len(failed) > 0 {
		msg := strings.Join(failed, "; ")
		if derr := c.done(ctx, false, msg); derr != nil {
			return errors.Join(errors.New(msg), derr)
		}
		return errors.New(msg)
	}
	msg := fmt.Sprintf("%s erase of %d disks", mode, len(disks))
	if err := c.done(ctx, true, msg); err != nil {
		return err
	}
	log.Info("erase reported")
	return nil
}

package agent

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/inventory"
)

// Where the agent leaves the installed system's NoCloud seed and the
// cloud-init setting that makes it the only datasource, under the root
// partition's mount.
const (
	SeedMetaData   = "var/lib/cloud/seed/nocloud-net/meta-data"
	CloudInitDrop  = "etc/cloud/cloud.cfg.d/90_rackplane.cfg"
	cloudInitLocal = "datasource_list: [ NoCloud ]\n"
)

// markSize is what a failed write zeroes at each end of the disk: the
// partition tables (MBR, GPT and its backup) and the boot code, so that
// the machine cannot boot half an image.
const markSize = 1 << 20

// ErrChecksum is the error of an image whose bytes are not the ones its
// description names.
var ErrChecksum = errors.New("checksum mismatch")

var safeWord = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)

// ParseDeployTask reads and checks the task a rack gives a deploy boot's
// agent. Everything in it ends up in a URL the agent fetches, a device
// it writes or a file of the installed system, so each value is held to
// its form.
func ParseDeployTask(b []byte) (events.DeployTask, error) {
	var t events.DeployTask
	if err := decodeStrict(b, &t); err != nil {
		return t, fmt.Errorf("deploy task: %w", err)
	}
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(httpURL(t.ImageURL), "image_url is not an http(s) URL")
	check(httpURL(t.MetadataURL) && strings.HasSuffix(t.MetadataURL, "/"), "metadata_url is not an http(s) URL ending in /")
	check(isSHA256(t.File.SHA256) && t.File.Size > 0, "file: want its sha256 and size")
	check(isSHA256(t.Disk.SHA256) && t.Disk.Size > 0, "disk: want the image's sha256 and size")
	switch t.Disk.Compression {
	case events.DiskCompressionNone, events.DiskCompressionGzip, events.DiskCompressionZstd:
	default:
		errs = append(errs, fmt.Errorf("disk: compression %.20q: want none, gzip or zstd", t.Disk.Compression))
	}
	check(t.Disk.Table == "" || t.Disk.Table == TableMSDOS || t.Disk.Table == TableGPT, "disk: table %.20q: want msdos or gpt", t.Disk.Table)
	check(t.Disk.RootPartition >= 0 && t.Disk.RootPartition <= 128, "disk: root_partition %d: want 1 to 128", t.Disk.RootPartition)
	check(!t.Disk.GrowRoot || t.Disk.RootPartition > 0 && t.Disk.Table != "", "disk: grow_root needs table and root_partition")
	target := strings.TrimPrefix(t.TargetDisk, "/dev/disk/by-id/")
	check(safeWord.MatchString(target) || safeWord.MatchString(strings.TrimPrefix(target, "/dev/")), "target_disk %.64q is not a disk name, serial or by-id path", t.TargetDisk)
	check(safeWord.MatchString(t.InstanceID), "instance_id %.64q: want letters, digits, '.', '-', '_'", t.InstanceID)
	check(safeWord.MatchString(t.Hostname), "hostname %.64q: want letters, digits, '.', '-', '_'", t.Hostname)
	if len(errs) > 0 {
		return events.DeployTask{}, fmt.Errorf("deploy task: %w", errors.Join(errs...))
	}
	return t, nil
}

func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && !strings.ContainsAny(s, " \n\r\t")
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// decodeStrict decodes one JSON object into v, refusing anything after it.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("more than one JSON value")
	}
	return nil
}

// ResolveDisk finds the disk target names under root: a kernel name
// (vda, /dev/vda), a serial, a WWID or a /dev/disk/by-id path of the
// inventory's disks. It returns the kernel name.
func ResolveDisk(root, target string) (string, error) {
	disks, err := inventory.Disks(root)
	if err != nil {
		return "", fmt.Errorf("list the disks: %w", err)
	}
	name := strings.TrimPrefix(target, "/dev/")
	short := strings.TrimPrefix(target, "/dev/disk/by-id/")
	var names []string
	for _, d := range disks {
		if d.Name == name || d.Serial != "" && d.Serial == target || d.WWID != "" && d.WWID == target {
			return d.Name, nil
		}
		for _, p := range d.ByID {
			if p == target || strings.TrimPrefix(p, "/dev/disk/by-id/") == short {
				return d.Name, nil
			}
		}
		names = append(names, d.Name)
	}
	return "", fmt.Errorf("disk %s is not among the machine's disks (%s): is its controller's driver in the ephemeral environment?",
		target, strings.Join(names, ", "))
}

// Stream is a disk image file fetched over HTTP that resumes with a Range
// request where a broken connection left it: Read never returns what a
// failed connection lost, only the next bytes, from whichever connection.
type Stream struct {
	URL  string
	Size int64 // the file's, from the task
	// Attempts bounds the connections tried in a row without a byte
	// read; Backoff is the wait after the first failed one, doubled up
	// to MaxBackoff; Idle is how long a connection may read nothing.
	Attempts   int
	Backoff    time.Duration
	MaxBackoff time.Duration
	Idle       time.Duration
	Client     *http.Client
	Log        *slog.Logger

	ctx     context.Context
	off     int64
	body    io.ReadCloser
	cancel  context.CancelFunc
	idle    *time.Timer
	failed  int
	resumed int
}

// Resumed is how many times the stream reconnected.
func (s *Stream) Resumed() int { return s.resumed }

// Open makes the stream read within ctx.
func (s *Stream) Open(ctx context.Context) {
	s.ctx = ctx
	if s.Attempts <= 0 {
		s.Attempts = 8
	}
	if s.Backoff <= 0 {
		s.Backoff = time.Second
	}
	if s.MaxBackoff <= 0 {
		s.MaxBackoff = 30 * time.Second
	}
	if s.Idle <= 0 {
		s.Idle = 60 * time.Second
	}
	if s.Client == nil {
		s.Client = &http.Client{}
	}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
}

func (s *Stream) Read(p []byte) (int, error) {
	if s.off >= s.Size {
		return 0, io.EOF
	}
	for {
		if s.body == nil {
			if err := s.connect(); err != nil {
				if s.failed++; s.failed >= s.Attempts || s.ctx.Err() != nil {
					return 0, fmt.Errorf("fetch the image at byte %d after %d tries: %w", s.off, s.failed, err)
				}
				if err := s.wait(); err != nil {
					return 0, err
				}
				continue
			}
		}
		if len(p) > int(s.Size-s.off) {
			p = p[:s.Size-s.off]
		}
		n, err := s.body.Read(p)
		if n > 0 {
			s.idle.Reset(s.Idle)
			s.off += n64(n)
			s.failed = 0
			return n, nil
		}
		if err == nil {
			continue
		}
		s.close()
		if s.off >= s.Size {
			return 0, io.EOF
		}
		// EOF before Size, a reset, an idle timeout: resume.
		s.Log.Warn("image download broke off, resuming", "at", s.off, "of", s.Size, "err", err)
		if s.failed++; s.failed >= s.Attempts || s.ctx.Err() != nil {
			return 0, fmt.Errorf("fetch the image at byte %d after %d tries: %w", s.off, s.failed, err)
		}
		if err := s.wait(); err != nil {
			return 0, err
		}
	}
}

func n64(n int) int64 { return int64(n) }

func (s *Stream) wait() error {
	d := min(s.Backoff<<min(s.failed-1, 16), s.MaxBackoff)
	t := time.NewTimer(d/2 + rand.N(d/2+1))
	defer t.Stop()
	select {
	case <-s.ctx.Done():
		return s.ctx.Err()
	case <-t.C:
		return nil
	}
}

func (s *Stream) connect() error {
	ctx, cancel := context.WithCancel(s.ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		cancel()
		return err
	}
	if s.off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", s.off))
		s.resumed++
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		cancel()
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return err
	}
	skip := int64(0)
	switch {
	case resp.StatusCode == http.StatusPartialContent && s.off > 0:
		var start int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-", &start); err != nil || start != s.off {
			resp.Body.Close()
			cancel()
			return fmt.Errorf("the rack answered range %q for bytes from %d", resp.Header.Get("Content-Range"), s.off)
		}
	case resp.StatusCode == http.StatusOK:
		// A server that ignores Range sends it all again: skip what was
		// read.
		skip = s.off
	default:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		cancel()
		return fmt.Errorf("GET the image: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	s.body, s.cancel = resp.Body, cancel
	s.idle = time.AfterFunc(s.Idle, cancel)
	if skip > 0 {
		if _, err := io.CopyN(io.Discard, s.body, skip); err != nil {
			s.close()
			return fmt.Errorf("skip %d bytes already read: %w", skip, err)
		}
	}
	return nil
}

func (s *Stream) close() {
	if s.body != nil {
		s.idle.Stop()
		s.body.Close()
		s.cancel()
		s.body = nil
	}
}

// Close ends the stream's connection.
func (s *Stream) Close() error {
	s.close()
	return nil
}

// countingHash counts and hashes what goes through it.
type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

func (c *countingHash) sum() string { return hex.EncodeToString(c.h.Sum(nil)) }

// WriteImage decompresses src (the image file of file, compressed as
// disk says) onto dst from its first byte, checking both the file's
// sha256 and size and the decompressed image's as it goes, and calls
// progress with the bytes written and the image's size. A mismatch is
// ErrChecksum, found at the end of the stream (or as soon as the image
// runs past its size). It syncs dst.
func WriteImage(dst *os.File, src io.Reader, file events.ImageFile, disk events.DiskImage, progress func(done, total int64)) error {
	fileSum := &countingHash{h: sha256.New()}
	raw := io.TeeReader(src, fileSum)
	var dec io.Reader
	switch disk.Compression {
	case events.DiskCompressionNone:
		dec = raw
	case events.DiskCompressionGzip:
		zr, err := gzip.NewReader(bufio.NewReaderSize(raw, 1<<20))
		if err != nil {
			return fmt.Errorf("%w: the image is not gzip: %v", ErrChecksum, err)
		}
		zr.Multistream(false)
		dec = zr
	case events.DiskCompressionZstd:
		zr, err := zstd.NewReader(raw, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		dec = zr
	default:
		return fmt.Errorf("compression %q: want none, gzip or zstd", disk.Compression)
	}
	imgSum := &countingHash{h: sha256.New()}
	buf := make([]byte, 4<<20)
	var off int64
	for {
		n, rerr := io.ReadFull(dec, buf)
		if n > 0 {
			if off+int64(n) > disk.Size {
				return fmt.Errorf("%w: the image is larger than its %d bytes", ErrChecksum, disk.Size)
			}
			imgSum.Write(buf[:n])
			if _, err := dst.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("write the disk at %d: %w", off, err)
			}
			off += int64(n)
			if progress != nil {
				progress(off, disk.Size)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			if errors.Is(rerr, gzip.ErrChecksum) || errors.Is(rerr, gzip.ErrHeader) || errors.Is(rerr, zstd.ErrCRCMismatch) ||
				errors.Is(rerr, zstd.ErrMagicMismatch) || errors.Is(rerr, zstd.ErrBlockTooSmall) || isCorrupt(rerr) {
				return fmt.Errorf("%w: the compressed image is corrupt: %v", ErrChecksum, rerr)
			}
			return fmt.Errorf("read the image: %w", rerr)
		}
	}
	// The compressed file's end may lie past the decompressor's (padding,
	// a trailer): the file's checksum is of all of it.
	if _, err := io.Copy(io.Discard, raw); err != nil {
		return fmt.Errorf("read the image: %w", err)
	}
	if got := fileSum.sum(); fileSum.n != file.Size || got != file.SHA256 {
		return fmt.Errorf("%w: the image file %s is %d bytes with sha256 %s, the rack's store says %d bytes with sha256 %s",
			ErrChecksum, file.Name, fileSum.n, got, file.Size, file.SHA256)
	}
	if got := imgSum.sum(); off != disk.Size || got != disk.SHA256 {
		return fmt.Errorf("%w: the decompressed image is %d bytes with sha256 %s, its description says %d bytes with sha256 %s",
			ErrChecksum, off, got, disk.Size, disk.SHA256)
	}
	if err := dst.Sync(); err != nil {
		return fmt.Errorf("sync the disk: %w", err)
	}
	return nil
}

// VerifyWritten reads back the first disk.Size bytes of dst, past the
// page cache, and checks their sha256 against the image's: what the
// disk holds, not what was handed to it (a failing disk, a controller
// that drops writes). It returns the sha256 read.
func VerifyWritten(dst *os.File, disk events.DiskImage) (string, error) {
	// The pages just written are clean after the sync: dropping them
	// makes the reads go to the device.
	_ = unix.Fadvise(int(dst.Fd()), 0, disk.Size, unix.FADV_DONTNEED)
	h := &countingHash{h: sha256.New()}
	if _, err := io.Copy(h, io.NewSectionReader(dst, 0, disk.Size)); err != nil {
		return "", fmt.Errorf("read the disk back: %w", err)
	}
	if got := h.sum(); h.n != disk.Size || got != disk.SHA256 {
		return got, fmt.Errorf("%w: read back, the disk's first %d bytes have sha256 %s (%d bytes read), the image's is %s",
			ErrChecksum, disk.Size, got, h.n, disk.SHA256)
	}
	return disk.SHA256, nil
}

// isCorrupt says whether a decompressor's error is of its input's bytes
// rather than of reading them.
func isCorrupt(err error) bool {
	s := err.Error()
	return strings.Contains(s, "corrupt") || strings.Contains(s, "invalid") || strings.Contains(s, "flate:")
}

// MarkDisk zeroes the first and last MiB of the device at path (of size
// bytes): a disk that got part of an image, or a wrong one, boots nothing
// rather than half a system.
func MarkDisk(f *os.File, size int64) error {
	zeros := make([]byte, markSize)
	for _, off := range []int64{0, max(0, size-markSize)} {
		n := min(int64(markSize), size-off)
		if n <= 0 {
			continue
		}
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("zero the disk at %d: %w", off, err)
		}
	}
	return f.Sync()
}

// PartitionDevice is the device name of partition n of disk: vda2,
// nvme0n1p2, mmcblk0p2.
func PartitionDevice(disk string, n int) string {
	if disk != "" && disk[len(disk)-1] >= '0' && disk[len(disk)-1] <= '9' {
		return fmt.Sprintf("%sp%d", disk, n)
	}
	return fmt.Sprintf("%s%d", disk, n)
}

// Seed writes, under root (the installed system's root filesystem), the
// NoCloud seed that points it at the rack's metadata service, and the
// cloud-init setting that makes NoCloud its datasource.
func Seed(root string, t events.DeployTask) error {
	meta := fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\nseedfrom: %s\n", t.InstanceID, t.Hostname, t.MetadataURL)
	for _, f := range []struct{ path, body string }{{SeedMetaData, meta}, {CloudInitDrop, cloudInitLocal}} {
		p := filepath.Join(root, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		// The seed holds the metadata URL's credential: root's alone.
		if err := os.WriteFile(p, []byte(f.body), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// deployer is the work of a deploy boot, with what tests replace.
type deployer struct {
	c   *client
	log *slog.Logger
	// devDir holds the disks' device nodes (root's /dev).
	devDir string
	// mount and unmount mount the root partition (unix.Mount; tests
	// mount nothing).
	mount   func(dev, dir string) error
	unmount func(dir string) error
	// rereadTable asks the kernel to read f's partition table again.
	rereadTable func(f *os.File) error
	stream      Stream
	// efiVars is where efivarfs is mounted; a machine without it boots
	// from BIOS (or its firmware hides its variables).
	efiVars string
}

// runDeploy writes the disk image its rack names to the machine's disk,
// grows its root partition, leaves the NoCloud seed on it, reports the
// image written and has Config.Reboot reboot the machine into it. A
// failure is reported (the disk marked when it was written to) and the
// machine powers off as after any agent's work.
func runDeploy(ctx context.Context, c *client, log *slog.Logger) error {
	d := &deployer{c: c, log: log, devDir: filepath.Join(c.cfg.Root, "dev"),
		mount: func(dev, dir string) error {
			return unix.Mount(dev, dir, "ext4", 0, "")
		},
		unmount:     func(dir string) error { return unix.Unmount(dir, 0) },
		rereadTable: rereadTable,
		stream:      Stream{Attempts: 10, Backoff: c.cfg.Backoff, Log: log},
		efiVars:     filepath.Join(c.cfg.Root, EFIVars),
	}
	if err := d.run(ctx); err != nil {
		return err
	}
	if c.cfg.Reboot != nil {
		log.Info("rebooting into the installed system")
		unix.Sync()
		if err := c.cfg.Reboot(); err != nil {
			return fmt.Errorf("reboot: %w", err)
		}
	}
	return nil
}

// fetchTask GETs the deploy task, trying again as post does.
func (c *client) fetchTask(ctx context.Context) ([]byte, error) {
	wait := c.cfg.Backoff
	for try := 1; ; try++ {
		b, status, err := c.get(ctx, "deploy")
		if err == nil && status == http.StatusOK {
			return b, nil
		}
		if err == nil {
			err = fmt.Errorf("GET %s/deploy: %d %s: %s", c.shown, status, http.StatusText(status), strings.TrimSpace(string(b[:min(len(b), 512)])))
			if status < 500 && status != http.StatusTooManyRequests && status != http.StatusRequestTimeout {
				return nil, err
			}
		}
		if try >= c.cfg.Attempts {
			return nil, err
		}
		c.cfg.Logger.Warn("request failed, trying again", "endpoint", "deploy", "try", try, "err", err)
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (after %v)", ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, 30*time.Second)
	}
}

func rereadTable(f *os.File) error {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeDevice == 0 {
		return err
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("re-read the partition table: %w", err)
	}
	return nil
}

// fail reports step failed and the deployment's failure.
func (d *deployer) fail(ctx context.Context, step string, err error) error {
	d.log.Error("deployment failed", "step", step, "err", err)
	d.c.step(ctx, step, events.AgentStepFailed, err.Error(), 0)
	if derr := d.c.done(ctx, false, step+": "+err.Error()); derr != nil {
		return errors.Join(err, derr)
	}
	return err
}

func (d *deployer) run(ctx context.Context) error {
	body, err := d.c.fetchTask(ctx)
	if err != nil {
		return d.fail(ctx, "task", err)
	}
	t, err := ParseDeployTask(body)
	if err != nil {
		return d.fail(ctx, "task", err)
	}
	disk, err := ResolveDisk(d.c.cfg.Root, t.TargetDisk)
	if err != nil {
		return d.fail(ctx, "task", err)
	}
	step := "write:" + disk
	dev := filepath.Join(d.devDir, disk)
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return d.fail(ctx, step, err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return d.fail(ctx, step, fmt.Errorf("size of %s: %w", disk, err))
	}
	if t.Disk.Size > size {
		return d.fail(ctx, step, fmt.Errorf("the image is %d bytes, disk %s only %d", t.Disk.Size, disk, size))
	}
	d.log.Info("writing the disk image", "disk", disk, "file", t.File.Name, "compression", t.Disk.Compression, "bytes", t.Disk.Size)
	d.c.step(ctx, step, events.AgentStepStarted, fmt.Sprintf("0 of %d bytes", t.Disk.Size), 0)
	p := &progressEvery{lastAt: time.Now(), nowFunc: time.Now, report: func(pct int) {
		d.c.step(ctx, step, events.AgentStepStarted, fmt.Sprintf("%d%% of %d bytes", pct, t.Disk.Size), pct)
	}}
	s := d.stream
	s.URL, s.Size = t.ImageURL, t.File.Size
	s.Open(ctx)
	err = WriteImage(f, &s, t.File, t.Disk, p.update)
	s.Close()
	if err != nil {
		// Whatever reached the disk is not the image: mark it.
		if merr := MarkDisk(f, size); merr != nil {
			err = fmt.Errorf("%w; and marking the disk failed: %v", err, merr)
		} else {
			err = fmt.Errorf("%w; the disk was marked (its first and last MiB zeroed) so that it boots no half-written image", err)
		}
		return d.fail(ctx, step, err)
	}
	d.c.step(ctx, step, events.AgentStepDone, fmt.Sprintf("%d bytes, sha256 %s, %d resumed connections", t.Disk.Size, t.Disk.SHA256, s.Resumed()), 100)
	verify := "verify:" + disk
	d.c.step(ctx, verify, events.AgentStepStarted, fmt.Sprintf("reading back %d bytes", t.Disk.Size), 0)
	if got, err := VerifyWritten(f, t.Disk); err != nil {
		if merr := MarkDisk(f, size); merr != nil {
			err = fmt.Errorf("%w; and marking the disk failed: %v", err, merr)
		} else {
			err = fmt.Errorf("%w; the disk was marked (its first and last MiB zeroed)", err)
		}
		return d.fail(ctx, verify, err)
	} else {
		d.c.step(ctx, verify, events.AgentStepDone, fmt.Sprintf("read back %d bytes from %s, sha256 %s", t.Disk.Size, disk, got), 100)
	}
	if err := d.finish(ctx, f, size, disk, t); err != nil {
		return err
	}
	d.bootNext(ctx, f, t)
	if err := d.c.done(ctx, true, fmt.Sprintf("disk image written to %s (%d bytes)", disk, t.Disk.Size)); err != nil {
		return err
	}
	d.log.Info("disk image written")
	return nil
}

// finish grows the root partition and seeds the installed system.
func (d *deployer) finish(ctx context.Context, f *os.File, size int64, disk string, t events.DeployTask) error {
	if t.Disk.GrowRoot {
		grown, err := GrowPartition(f, size, sectorSize(f), t.Disk.Table, t.Disk.RootPartition)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			return d.fail(ctx, "grow-root", err)
		}
		d.c.step(ctx, "grow-root", events.AgentStepDone, fmt.Sprintf("partition %d is %d bytes", t.Disk.RootPartition, grown), 100)
	}
	if err := d.rereadTable(f); err != nil {
		return d.fail(ctx, "seed", err)
	}
	if t.Disk.RootPartition == 0 {
		d.c.step(ctx, "seed", events.AgentStepDone, "no root partition named: the installed system is not seeded", 100)
		return nil
	}
	part := filepath.Join(d.devDir, PartitionDevice(disk, t.Disk.RootPartition))
	// The kernel makes the partitions' nodes as it reads the table.
	for i := 0; i < 50; i++ {
		if _, err := os.Stat(part); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	dir, err := os.MkdirTemp("", "rackplane-root-")
	if err != nil {
		return d.fail(ctx, "seed", err)
	}
	defer os.Remove(dir)
	if err := d.mount(part, dir); err != nil {
		return d.fail(ctx, "seed", fmt.Errorf("mount the root partition %s: %w", filepath.Base(part), err))
	}
	err = Seed(dir, t)
	if uerr := d.unmount(dir); err == nil && uerr != nil {
		err = fmt.Errorf("unmount the root partition: %w", uerr)
	}
	if err != nil {
		return d.fail(ctx, "seed", err)
	}
	unix.Sync()
	d.c.step(ctx, "seed", events.AgentStepDone, "NoCloud seed written: the installed system reads the rack's metadata service", 100)
	return nil
}

// bootNext has UEFI firmware boot the disk next (SetBootNext), so that
// the reboot goes straight to the installed system instead of through
// the network boot and the rack's local-boot answer, which UEFI firmware
// follows slowly (it tries its other network boot entries first). It is
// the step boot-next; it never fails the deployment, since the rack's
// local boot still gets the machine to its disk: a machine without EFI
// variables (BIOS) or an image without an ESP is reported and left as it
// is.
func (d *deployer) bootNext(ctx context.Context, f *os.File, t events.DeployTask) {
	const step = "boot-next"
	if d.efiVars == "" {
		return
	}
	if _, err := os.Stat(d.efiVars); err != nil {
		d.c.step(ctx, step, events.AgentStepDone, "no EFI variables (BIOS firmware): the machine boots from the network first and the rack answers local boot", 100)
		return
	}
	esp, err := FindESP(f, sectorSize(f), t.Disk.Table)
	if err != nil {
		d.c.step(ctx, step, events.AgentStepDone, fmt.Sprintf("left to the rack's local boot: %v", err), 100)
		return
	}
	opt := LoadOption("rackplane "+t.Hostname, esp, RemovableLoader())
	num, err := SetBootNext(d.efiVars, opt)
	if err != nil {
		d.log.Warn("the firmware's next boot was not set", "err", err)
		d.c.step(ctx, step, events.AgentStepDone, fmt.Sprintf("left to the rack's local boot: the EFI variables could not be written: %v", err), 100)
		return
	}
	desc, _ := describeOption(opt)
	d.log.Info("the next boot is the disk", "entry", fmt.Sprintf("Boot%04X", num), "option", desc)
	d.c.step(ctx, step, events.AgentStepDone, fmt.Sprintf("BootNext is Boot%04X %s", num, desc), 100)
}

// sectorSize is a block device's logical sector size, 512 for a file.
func sectorSize(f *os.File) int {
	if n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil && n >= 512 {
		return n
	}
	return 512
}

package journal

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
)

// Defaults of Config.
const (
	DefaultMaxBytes     = 256 << 20
	DefaultSegmentBytes = 8 << 20
)

// minSegmentBytes holds one record of the largest size.
const minSegmentBytes = headerLen + 8 + MaxRecord + int64(len(magic))

// MinMaxBytes is the smallest size cap: four of the smallest segments,
// so that acknowledging one gives back a quarter of the room.
const MinMaxBytes = 4 * minSegmentBytes

// Config configures a journal. Zero MaxBytes and SegmentBytes take the
// defaults above.
type Config struct {
	// Dir holds the journal; it is created (0700) if missing.
	Dir string
	// MaxBytes bounds the segment files on disk.
	MaxBytes int64
	// SegmentBytes is the size at which a new segment starts: the unit in
	// which space is given back. At most MaxBytes/4.
	SegmentBytes int64
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
	Now          func() time.Time
}

func (c Config) withDefaults() Config {
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.SegmentBytes == 0 {
		c.SegmentBytes = min(DefaultSegmentBytes, c.MaxBytes/4)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports every bad setting of c (after defaults) at once.
func (c Config) Validate() error {
	// The default segment size follows from the cap, and is good whenever
	// the cap is: only one given is checked, so a bad cap is named once.
	segmentGiven := c.SegmentBytes != 0
	c = c.withDefaults() // a copy: the caller's c is left as it is
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("journal directory is empty"))
	}
	if c.MaxBytes < MinMaxBytes {
		errs = append(errs, fmt.Errorf("journal size cap %d: want at least %d (four segments of the largest record)", c.MaxBytes, MinMaxBytes))
	}
	if segmentGiven && c.SegmentBytes > c.MaxBytes/4 {
		errs = append(errs, fmt.Errorf("journal segment size %d: want at most a quarter of the cap %d", c.SegmentBytes, c.MaxBytes))
	}
	if segmentGiven && c.SegmentBytes < minSegmentBytes {
		errs = append(errs, fmt.Errorf("journal segment size %d: want room for a record of %d bytes", c.SegmentBytes, MaxRecord))
	}
	if len(errs) > 0 {
		return rackplane.WrapError(rackplane.EINVALID, errors.Join(errs...), "journal configuration")
	}
	return nil
}

// Record is one record read back.
type Record struct {
	Seq  uint64
	Time time.Time // when it was appended
	Data []byte

	segBase uint64 // the segment it is in
	end     int64  // where it ends there
}

type segment struct {
	base  uint64 // sequence of its first record
	size  int64  // committed bytes, magic included
	count uint64 // committed records
}

func (s segment) name() string { return fmt.Sprintf("%020d.seg", s.base) }

// Journal is an open journal. Its methods may be called concurrently.
type Journal struct {
	cfg Config
	log *slog.Logger

	appendMu sync.Mutex // one Append at a time
	// readMu makes Read and Ack, the reader's side, one at a time: they
	// open and delete segment files without mu, which they hold only to
	// look at or change the state below. Only Ack deletes segments, so
	// those a Read looked at stay while it reads them.
	readMu sync.Mutex

	// mu guards the state below and is never held across file I/O but
	// for the rare cut of a damaged record: Pending and Bytes, which
	// Publish's callers reach, must not wait on the disk.
	mu        sync.Mutex
	appending bool      // an Append is writing: the active segment stays
	segs      []segment // oldest first; the last is the one appended to
	active    *os.File  // the last segment, open for writing; nil if none
	dir       *os.File  // cfg.Dir, for fsync of new segment names
	head      uint64    // sequence of the oldest unacknowledged record
	headOff   int64     // its offset in segs[0]
	next      uint64    // sequence of the next record appended
	closed    bool

	// pending and bytes are pendingLocked and bytesLocked as of the last
	// change, read without mu.
	pending atomic.Int64
	bytes   atomic.Int64

	corrupt  prometheus.Counter
	appended prometheus.Counter

	// beforeCommit, when set (by tests), is called by Append between its
	// fsync and its commit: while it is appending.
	beforeCommit func()
}

// Open opens the journal in cfg.Dir, creating it if needed. A segment that
// ends in a torn or corrupt record is truncated before it, which is
// logged and counted; every record before it is kept.
func Open(cfg Config) (*Journal, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	j := &Journal{
		cfg: cfg, log: cfg.Logger,
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_journal_corrupt_records_total", Help: "Torn or corrupt journal records found and cut off (each cuts the rest of its segment).",
		}),
		appended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_journal_appended_records_total", Help: "Records written to the journal and fsync'd.",
		}),
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	var err error
	if j.dir, err = os.Open(cfg.Dir); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	// One process at a time: a second one would cut the first one's
	// group in mid-write as a torn tail.
	if err := syscall.Flock(int(j.dir.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		j.dir.Close()
		return nil, rackplane.WrapError(rackplane.ECONFLICT, err, "journal %s is in use by another process", cfg.Dir)
	}
	if err := j.load(); err != nil {
		j.Close()
		return nil, err
	}
	if cfg.Registerer != nil {
		err := register(cfg.Registerer, j.corrupt, j.appended,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rackplane_journal_bytes", Help: "Bytes of the journal's segment files."},
				func() float64 { return float64(j.Bytes()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rackplane_journal_records_pending", Help: "Journal records not yet acknowledged."},
				func() float64 { return float64(j.Pending()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rackplane_journal_oldest_pending_age_seconds", Help: "Age of the oldest unacknowledged journal record (0 when none)."},
				func() float64 { return j.OldestAge().Seconds() }))
		if err != nil {
			j.Close()
			return nil, err
		}
	}
	return j, nil
}

// register registers cs, all or none: a second journal on one registry
// is an error to return, not a panic.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return rackplane.WrapError(rackplane.ECONFLICT, err, "journal metrics")
		}
	}
	return nil
}

func (j *Journal) path(s segment) string { return filepath.Join(j.cfg.Dir, s.name()) }

func (j *Journal) load() error {
	entries, err := os.ReadDir(j.cfg.Dir)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		base, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		j.segs = append(j.segs, segment{base: base})
	}
	slices.SortFunc(j.segs, func(a, b segment) int { return cmp.Compare(a.base, b.base) })
	acked := j.readAcked()
	kept := j.segs[:0]
	for i, s := range j.segs {
		s, err := j.check(s, i == len(j.segs)-1)
		if err != nil {
			return err
		}
		switch {
		case s.count == 0 || s.base+s.count <= acked:
			// Empty or wholly acknowledged: nothing to keep.
			if err := os.Remove(j.path(s)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("journal: %w", err)
			}
		default:
			kept = append(kept, s)
		}
	}
	j.segs = kept
	j.next, j.head, j.headOff = acked, acked, int64(len(magic))
	defer j.countLocked()
	if len(j.segs) == 0 {
		return nil
	}
	last := j.segs[len(j.segs)-1]
	j.next = max(acked, last.base+last.count)
	j.head = max(acked, j.segs[0].base)
	if skip := j.head - j.segs[0].base; skip > 0 {
		f, err := os.Open(j.path(j.segs[0]))
		if err != nil {
			return fmt.Errorf("journal: %w", err)
		}
		defer f.Close()
		for range skip {
			_, _, next, err := readRecord(f, j.headOff, j.segs[0].size)
			if err != nil {
				return fmt.Errorf("journal: skip acknowledged records: %w", err)
			}
			j.headOff = next
		}
	}
	j.active, err = os.OpenFile(j.path(last), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if pending := j.pendingLocked(); pending > 0 {
		j.log.Info("journal has records to send", "records", pending, "bytes", j.bytesLocked(), "dir", j.cfg.Dir)
	}
	return nil
}

// check scans segment s, truncating it after its last whole record.
func (j *Journal) check(s segment, last bool) (segment, error) {
	f, err := os.OpenFile(j.path(s), os.O_RDWR, 0)
	if err != nil {
		return s, fmt.Errorf("journal: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return s, fmt.Errorf("journal: %w", err)
	}
	valid, err := scan(f, fi.Size(), func(time.Time, []byte, int64) { s.count++ })
	if err != nil && !errors.Is(err, errTorn) {
		return s, fmt.Errorf("journal segment %s: %w", s.name(), err)
	}
	s.size = valid
	if err != nil {
		j.corrupt.Inc()
		j.log.Warn("journal segment ends in a torn or corrupt record; cut off there, the records before it are kept",
			"segment", s.name(), "records_kept", s.count, "offset", valid, "bytes_cut", fi.Size()-valid, "last_segment", last, "err", err)
		if valid < int64(len(magic)) {
			s.count = 0 // removed by the caller
			return s, nil
		}
		if err := f.Truncate(valid); err != nil {
			return s, fmt.Errorf("journal: truncate %s: %w", s.name(), err)
		}
		if err := f.Sync(); err != nil {
			return s, fmt.Errorf("journal: %w", err)
		}
	}
	return s, nil
}

const ackedFile = "acked"

// readAcked returns the mark of acknowledged records; 0 (read everything
// again) when it is missing or damaged.
func (j *Journal) readAcked() uint64 {
	b, err := os.ReadFile(filepath.Join(j.cfg.Dir, ackedFile))
	if err != nil || len(b) != 12 || crc32.Checksum(b[:8], castagnoli) != binary.LittleEndian.Uint32(b[8:]) {
		return 0
	}
	return binary.LittleEndian.Uint64(b[:8])
}

// writeAcked records the mark without fsync: a mark lost in a crash only
// means records sent again, which consumers drop by id.
func (j *Journal) writeAcked(head uint64) error {
	b := binary.LittleEndian.AppendUint64(nil, head)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	tmp := filepath.Join(j.cfg.Dir, ackedFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(j.cfg.Dir, ackedFile))
}

// ErrClosed is returned by the methods of a closed journal.
var ErrClosed = errors.New("journal closed")

// Append writes records as one group and fsyncs it. It stores the longest
// prefix of records that fits under MaxBytes and returns its length; a
// record larger than MaxRecord is an error and nothing is written. When it
// returns, the n records survive a crash. Appends run one at a time; Read
// and Ack go on while one waits for its fsync.
func (j *Journal) Append(records [][]byte) (n int, err error) {
	return j.append(records, j.cfg.MaxBytes)
}

// AppendBeyondCap appends one record even when the journal is full: for
// the record a stopping writer must not lose (the count of the events it
// dropped). It may take the journal past MaxBytes by that record.
func (j *Journal) AppendBeyondCap(record []byte) error {
	_, err := j.append([][]byte{record}, math.MaxInt64)
	return err
}

func (j *Journal) append(records [][]byte, maxBytes int64) (n int, err error) {
	for _, r := range records {
		if len(r) > MaxRecord {
			return 0, fmt.Errorf("journal: record of %d bytes, over %d", len(r), MaxRecord)
		}
	}
	j.appendMu.Lock()
	defer j.appendMu.Unlock()

	// Plan, under mu: which records go in which segment.
	type write struct {
		seg   segment // as committed before this group; size 0 for a new one
		isNew bool
		buf   []byte
		count uint64
		f     *os.File
	}
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return 0, ErrClosed
	}
	now := j.cfg.Now()
	total := j.bytesLocked()
	var writes []*write
	var cur *write
	if len(j.segs) > 0 {
		cur = &write{seg: j.segs[len(j.segs)-1], f: j.active}
		writes = append(writes, cur)
	}
	seq := j.next
	for _, r := range records {
		size := recordSize(len(r))
		if cur == nil || (cur.seg.size+int64(len(cur.buf)) > int64(len(magic)) && cur.seg.size+int64(len(cur.buf))+size > j.cfg.SegmentBytes) {
			if total+int64(len(magic))+size > maxBytes {
				break
			}
			cur = &write{seg: segment{base: seq}, isNew: true, buf: []byte(magic)}
			writes = append(writes, cur)
			total += int64(len(magic))
		}
		if total+size > maxBytes {
			break
		}
		cur.buf = appendRecord(cur.buf, now, r)
		cur.count++
		total += size
		seq++
		n++
	}
	if n > 0 {
		j.appending = true // Ack leaves the active segment alone
	}
	j.mu.Unlock()
	if n == 0 {
		return 0, nil
	}
	defer func() {
		j.mu.Lock()
		j.appending = false
		j.mu.Unlock()
	}()

	// Write and fsync, without mu: nothing here counts until committed.
	undo := func() {
		for _, w := range writes {
			if w.isNew {
				if w.f != nil {
					w.f.Close()
				}
				_ = os.Remove(j.path(w.seg))
			} else if len(w.buf) > 0 {
				_ = w.f.Truncate(w.seg.size)
			}
		}
	}
	newSegment := false
	for _, w := range writes {
		if w.isNew {
			w.f, err = os.OpenFile(j.path(w.seg), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				undo()
				return 0, fmt.Errorf("journal: %w", err)
			}
			newSegment = true
		}
		if len(w.buf) == 0 {
			continue
		}
		if _, err = w.f.WriteAt(w.buf, w.seg.size); err == nil {
			err = w.f.Sync()
		}
		if err != nil {
			undo()
			return 0, fmt.Errorf("journal: append: %w", err)
		}
	}
	if newSegment {
		// The new segment's name must survive a crash too.
		if err := j.dir.Sync(); err != nil {
			undo()
			return 0, fmt.Errorf("journal: %w", err)
		}
	}

	if j.beforeCommit != nil {
		j.beforeCommit()
	}
	// Commit, under mu. Ack may have deleted acknowledged segments
	// meanwhile, never the one appended to.
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, w := range writes {
		w.seg.size += int64(len(w.buf))
		w.seg.count += w.count
		if w.isNew {
			if j.active != nil {
				j.active.Close()
			}
			j.active = w.f
			j.segs = append(j.segs, w.seg)
		} else {
			j.segs[len(j.segs)-1] = w.seg
		}
	}
	j.next = seq
	j.countLocked()
	j.appended.Add(float64(n))
	return n, nil
}

// Read returns up to max records from the oldest unacknowledged one, in
// order, without acknowledging them: a second Read returns the same
// records until Ack. A record found damaged since Open cuts off the rest
// of its segment, as Open does; Read then goes on with the next.
func (j *Journal) Read(limit int) ([]Record, error) {
	j.readMu.Lock()
	defer j.readMu.Unlock()
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil, ErrClosed
	}
	// The records committed until now; those appended meanwhile are for
	// the next Read.
	segs := slices.Clone(j.segs)
	head, off := j.head, j.headOff
	j.mu.Unlock()

	var out []Record
	for i := 0; i < len(segs) && len(out) < limit; i++ {
		s := segs[i]
		seq := head
		if i > 0 {
			seq, off = s.base, int64(len(magic))
		}
		f, err := os.Open(j.path(s))
		if err != nil {
			return out, fmt.Errorf("journal: %w", err)
		}
		for len(out) < limit {
			at, data, next, err := readRecord(f, off, s.size)
			if errors.Is(err, io.EOF) {
				break
			}
			if errors.Is(err, errTorn) {
				err = j.cut(i, off, seq-s.base, err)
				if err != nil {
					f.Close()
					return out, err
				}
				break
			}
			if err != nil {
				f.Close()
				return out, fmt.Errorf("journal: %w", err)
			}
			out = append(out, Record{Seq: seq, Time: at, Data: data, segBase: s.base, end: next})
			seq++
			off = next
		}
		f.Close()
	}
	return out, nil
}

// cut cuts segment i off at off, before a record found damaged (torn),
// keeping its first count records. readMu is held: segment i is still
// j.segs[i].
func (j *Journal) cut(i int, off int64, count uint64, torn error) error {
	j.mu.Lock()
	s := j.segs[i]
	last := i == len(j.segs)-1
	if last && j.appending {
		j.mu.Unlock()
		// Cut once the Append in progress is done.
		return fmt.Errorf("journal: damaged record at %s offset %d: %w", s.name(), off, torn)
	}
	j.corrupt.Inc()
	j.log.Error("journal record damaged since it was written; the rest of its segment is cut off",
		"segment", s.name(), "offset", off, "bytes_cut", s.size-off, "err", torn)
	j.segs[i].size, j.segs[i].count = off, count
	if last {
		// The segment appended to: new records follow the cut. Under mu,
		// so that no Append plans to write there before the cut is made.
		_ = j.active.Truncate(off)
		j.next = s.base + count
	}
	j.countLocked()
	j.mu.Unlock()
	if !last {
		// No Append writes there, and only Read (readMu is held) reads it.
		_ = os.Truncate(j.path(s), off)
	}
	return nil
}

// Ack acknowledges every record up to and including r, which Read
// returned. Segments whose every record is acknowledged are deleted; when
// all are, the journal is empty on disk.
func (j *Journal) Ack(r Record) error {
	j.readMu.Lock()
	defer j.readMu.Unlock()
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return ErrClosed
	}
	if r.Seq < j.head {
		j.mu.Unlock()
		return nil // already
	}
	j.head = r.Seq + 1
	var gone []segment
	var inactive *os.File
	for len(j.segs) > 0 {
		s := j.segs[0]
		done := s.base+s.count <= j.head
		if !done {
			break
		}
		if len(j.segs) == 1 {
			if j.appending {
				break // deleted by a later Ack
			}
			// The next Append starts a segment of another name (its
			// base is past this one's records), so this one can go
			// once mu is let go.
			inactive, j.active = j.active, nil
		}
		gone = append(gone, s)
		j.segs = j.segs[1:]
	}
	j.headOff = int64(len(magic))
	if len(j.segs) > 0 && j.segs[0].base == r.segBase {
		j.headOff = r.end
	}
	if len(j.segs) > 0 && j.head < j.segs[0].base {
		// A gap left by a damaged segment: go on at the next record there is.
		j.head, j.headOff = j.segs[0].base, int64(len(magic))
	}
	j.countLocked()
	head := j.head
	j.mu.Unlock()

	// The files, without mu. A segment left behind by a failed delete is
	// wholly acknowledged: the next Open deletes it.
	if inactive != nil {
		inactive.Close()
	}
	var errs []error
	for _, s := range gone {
		if err := os.Remove(j.path(s)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := j.writeAcked(head); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("journal: %w", errors.Join(errs...))
	}
	return nil
}

// Pending returns how many records are not yet acknowledged. It takes no
// lock: it answers while Append, Read or Ack wait on the disk.
func (j *Journal) Pending() int { return int(j.pending.Load()) }

// countLocked brings pending and bytes up to date; mu is held.
func (j *Journal) countLocked() {
	j.pending.Store(int64(j.pendingLocked()))
	j.bytes.Store(j.bytesLocked())
}

func (j *Journal) pendingLocked() uint64 {
	var n uint64
	for _, s := range j.segs {
		n += s.count
	}
	if len(j.segs) > 0 && j.head > j.segs[0].base {
		n -= j.head - j.segs[0].base
	}
	return n
}

// Bytes returns the size of the segment files. Like Pending, it takes no
// lock.
func (j *Journal) Bytes() int64 { return j.bytes.Load() }

func (j *Journal) bytesLocked() int64 {
	var n int64
	for _, s := range j.segs {
		n += s.size
	}
	return n
}

// OldestAge returns how long the oldest unacknowledged record has waited;
// 0 when there is none. It reads that record's time without a lock; a
// segment acknowledged and deleted meanwhile sends it to look again.
func (j *Journal) OldestAge() time.Duration {
	for range 3 {
		j.mu.Lock()
		s, off, ok := j.oldestLocked()
		j.mu.Unlock()
		if !ok {
			return 0
		}
		f, err := os.Open(j.path(s))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0
		}
		at, _, _, err := readRecord(f, off, s.size)
		f.Close()
		if err != nil {
			return 0
		}
		return max(0, j.cfg.Now().Sub(at))
	}
	return 0
}

// oldestLocked returns the segment and offset of the oldest
// unacknowledged record. It need not be in the first segment: one wholly
// acknowledged while an Append wrote stays until a later Ack. mu is held.
func (j *Journal) oldestLocked() (segment, int64, bool) {
	if j.closed {
		return segment{}, 0, false
	}
	for i, s := range j.segs {
		if s.base+s.count <= j.head {
			continue
		}
		if i == 0 {
			return s, j.headOff, true
		}
		// Only the first segment has acknowledged records at its start.
		return s, int64(len(magic)), true
	}
	return segment{}, 0, false
}

// Dir returns the journal's directory.
func (j *Journal) Dir() string { return j.cfg.Dir }

// Close closes the journal; its records stay on disk for the next Open.
func (j *Journal) Close() error {
	j.appendMu.Lock()
	defer j.appendMu.Unlock()
	j.readMu.Lock()
	defer j.readMu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	j.closed = true
	if j.dir != nil {
		j.dir.Close()
	}
	if j.active != nil {
		err := j.active.Close()
		j.active = nil
		return err
	}
	return nil
}

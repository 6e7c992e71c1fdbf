package reportqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/atomicfile"
	"github.com/rackplane/rackplane/internal/backoff"
)

// Files under the rack's data directory.
const (
	// File holds the calls, appended one record each.
	File = "region-calls.queue"
	// HeadFile holds the sequence number of the last call made: the
	// calls up to it in File are done, until a compaction cuts them off.
	HeadFile = "region-calls.head"
)

// Sealer seals queued request bodies at rest (see preseedcache.Store).
type Sealer interface {
	Seal(what string, plain []byte) []byte
	Unseal(what string, sealed []byte) ([]byte, error)
}

// Config configures a Queue. Zero values take DefaultConfig's.
type Config struct {
	// DataDir is the rack's data directory. Required.
	DataDir string
	// MaxPending bounds the calls kept; beyond it Append refuses, and the
	// installer, answered 503, retries.
	MaxPending int
	// MaxPerKey bounds the calls kept for one key (one machine), so that
	// one machine cannot take the room of all.
	MaxPerKey int
	// CompactAfter is how many bytes of calls made File may hold before
	// it is rewritten without them (and only once they are more than
	// half of it): each call made costs a small write, not a rewrite.
	CompactAfter int64
	// Sealer, when set, seals request bodies on disk.
	Sealer Sealer
	// CallTimeout bounds each delivery attempt.
	CallTimeout time.Duration
	// Backoff paces attempts while the region stays away.
	Backoff backoff.Policy
	Now     func() time.Time
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{MaxPending: 10000, MaxPerKey: 16, CompactAfter: 1 << 20, CallTimeout: 10 * time.Second,
		Backoff: backoff.Policy{Initial: 250 * time.Millisecond, Max: 10 * time.Second}, Now: time.Now}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxPending <= 0 {
		c.MaxPending = d.MaxPending
	}
	if c.MaxPerKey <= 0 {
		c.MaxPerKey = d.MaxPerKey
	}
	if c.CompactAfter <= 0 {
		c.CompactAfter = d.CompactAfter
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = d.CallTimeout
	}
	if c.Backoff == (backoff.Policy{}) {
		c.Backoff = d.Backoff
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	return c
}

// Validate reports every bad setting at once.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("DataDir is required"))
	}
	if c.MaxPending < 0 {
		errs = append(errs, fmt.Errorf("MaxPending %d: want 0 (default) or more", c.MaxPending))
	}
	if c.MaxPerKey < 0 {
		errs = append(errs, fmt.Errorf("MaxPerKey %d: want 0 (default) or more", c.MaxPerKey))
	}
	if c.CompactAfter < 0 {
		errs = append(errs, fmt.Errorf("CompactAfter %d: want 0 (default) or more", c.CompactAfter))
	}
	if c.CallTimeout < 0 {
		errs = append(errs, fmt.Errorf("CallTimeout %s: want 0 (default) or more", c.CallTimeout))
	}
	if len(errs) > 0 {
		return rackplane.WrapError(rackplane.EINVALID, errors.Join(errs...), "reportqueue: bad config")
	}
	return nil
}

// DeliverFunc makes one call on the region.
type DeliverFunc func(ctx context.Context, method string, request json.RawMessage) error

// file is what the queue does with its file (an *os.File).
type file interface {
	io.WriterAt
	io.ReaderAt
	Sync() error
	Truncate(size int64) error
	Close() error
}

// Queue is the durable queue of calls.
type Queue struct {
	cfg      Config
	path     string
	headPath string
	deliver  DeliverFunc
	log      *slog.Logger

	mu sync.Mutex
	// f is nil once closed, or once a failed append could not be undone:
	// Append then refuses until the queue is opened again.
	f      file
	end    int64    // where the next record goes: the end of the last committed one
	done   int64    // where the first pending record starts: the calls before it were made
	calls  []record // pending, oldest first
	perKey map[string]int
	seq    uint64
	wake   chan struct{}

	// compactMu is held by a compaction from its start to its end, so
	// that the bulk of it, copying, runs without mu.
	compactMu sync.Mutex

	pending   prometheus.GaugeFunc
	delivered *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	torn      prometheus.Counter
}

// Open opens the queue's file under cfg.DataDir, creating it, cuts off a
// torn tail left by a crash and skips the calls made before.
func Open(cfg Config, deliver DeliverFunc, log *slog.Logger, reg prometheus.Registerer) (*Queue, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	q := &Queue{cfg: cfg, path: filepath.Join(cfg.DataDir, File), headPath: filepath.Join(cfg.DataDir, HeadFile),
		deliver: deliver, log: log, wake: make(chan struct{}, 1), perKey: map[string]int{},
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_queued_region_calls_delivered_total",
			Help: "Calls (installers' status reports, preseed fetches served from the cache) made on the region after it was away, by method.",
		}, []string{"method"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_queued_region_calls_dropped_total",
			Help: "Queued calls dropped rather than made, by method: refused by the region as wrong (invalid, not found, forbidden, conflict), or kept sealed under a key the rack no longer has.",
		}, []string{"method"}),
		torn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_queued_region_calls_torn_total",
			Help: "Torn or corrupt tails cut off the queue file when it was opened (a crash in the middle of a write).",
		}),
	}
	q.pending = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rackplane_queued_region_calls_pending",
		Help: "Calls waiting for the region, oldest first.",
	}, func() float64 { return float64(q.Pending()) })
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("reportqueue: %w", err)
	}
	// Left by a crash in the middle of a compaction; the file it would
	// have replaced is whole.
	if tmps, err := filepath.Glob(filepath.Join(cfg.DataDir, atomicfile.TempPrefix+File+".*")); err == nil {
		for _, t := range tmps {
			_ = os.Remove(t)
		}
	}
	madeSeq, err := q.readHead()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(q.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("reportqueue: %w", err)
	}
	if err := q.load(f, madeSeq); err != nil {
		f.Close()
		return nil, err
	}
	if err := atomicfile.SyncDir(cfg.DataDir); err != nil {
		f.Close()
		return nil, err
	}
	// Registered last: a failed Open leaves the registry as it was, so
	// that it can be tried again with it.
	if reg != nil {
		cs := []prometheus.Collector{q.pending, q.delivered, q.dropped, q.torn}
		for i, c := range cs {
			if err := reg.Register(c); err != nil {
				for _, done := range cs[:i] {
					reg.Unregister(done)
				}
				f.Close()
				return nil, fmt.Errorf("reportqueue: register metrics: %w", err)
			}
		}
	}
	if len(q.calls) > 0 {
		log.Info("queued region calls waiting from before", "pending", len(q.calls))
	}
	return q, nil
}

// readHead returns the sequence number of the last call made.
func (q *Queue) readHead() (uint64, error) {
	b, err := os.ReadFile(q.headPath)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reportqueue: %w", err)
	}
	seq, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		// Written atomically, so never torn; made again rather than
		// lost: the region takes a repeated call.
		q.log.Error("queued region calls: head mark unreadable; making every call in the file again", "path", q.headPath, "err", err)
		return 0, nil
	}
	return seq, nil
}

// load reads f's records, cutting off a torn tail, and keeps those after
// madeSeq.
func (q *Queue) load(f *os.File, madeSeq uint64) error {
	recs, good, rerr := readRecords(f)
	if rerr != nil {
		if !errors.Is(rerr, ErrTorn) {
			return fmt.Errorf("reportqueue: read %s: %w", q.path, rerr)
		}
		// Never acknowledged to anyone: the write was cut by a crash.
		q.torn.Inc()
		q.log.Warn("queued region calls: torn tail cut off", "path", q.path, "kept", len(recs), "at", good, "err", rerr)
		if err := f.Truncate(good); err != nil {
			return fmt.Errorf("reportqueue: truncate %s: %w", q.path, err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("reportqueue: %w", err)
		}
	}
	q.f, q.end, q.seq = f, good, madeSeq
	for _, rec := range recs {
		q.seq = max(q.seq, rec.Seq)
		if rec.Seq <= madeSeq {
			q.done = rec.end
			continue
		}
		if rec.Sealed != nil {
			if q.cfg.Sealer == nil {
				q.dropped.WithLabelValues(rec.Method).Inc()
				q.log.Error("queued region call dropped: sealed, and no key to open it", "method", rec.Method, "seq", rec.Seq)
				continue
			}
			plain, err := q.cfg.Sealer.Unseal(sealedFor(rec.Seq), rec.Sealed)
			if err != nil {
				q.dropped.WithLabelValues(rec.Method).Inc()
				q.log.Error("queued region call dropped: it does not open with the rack's key", "method", rec.Method, "seq", rec.Seq, "err", err)
				continue
			}
			rec.Request, rec.Sealed = plain, nil
		}
		q.calls = append(q.calls, rec)
		q.perKey[rec.Key]++
	}
	return nil
}

// sealedFor is what a call's sealed body is authenticated for: its place
// in the queue, so that a record copied into another place is refused.
func sealedFor(seq uint64) string { return "region-call\x00" + strconv.FormatUint(seq, 10) }

// Close closes the file; Run must have returned.
func (q *Queue) Close() error {
	q.compactMu.Lock()
	defer q.compactMu.Unlock()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.f == nil {
		return nil
	}
	err := q.f.Close()
	q.f = nil
	return err
}

// Pending returns how many calls wait.
func (q *Queue) Pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.calls)
}

// Append queues a call for key (whom it is about: a machine id) and
// returns once it is on disk.
func (q *Queue) Append(method, key string, request any) error {
	body, err := json.Marshal(request)
	if err != nil {
		return fmt.Errorf("reportqueue: %w", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.f == nil {
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "the rack cannot keep calls for the region now (stopping, or its queue file failed); try again")
	}
	if len(q.calls) >= q.cfg.MaxPending {
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "%d calls already wait for the region; try again later", len(q.calls))
	}
	if q.perKey[key] >= q.cfg.MaxPerKey {
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "%d calls of %s already wait for the region; try again later", q.perKey[key], key)
	}
	c := Call{Seq: q.seq + 1, Method: method, Key: key, QueuedAt: q.cfg.Now().UTC()}
	onDisk := c
	if q.cfg.Sealer != nil {
		onDisk.Sealed = q.cfg.Sealer.Seal(sealedFor(c.Seq), body)
	} else {
		onDisk.Request = body
	}
	rec, err := encodeRecord(onDisk)
	if err != nil {
		return rackplane.WrapError(rackplane.EINVALID, err, "reportqueue: %v", err)
	}
	if _, err := q.f.WriteAt(rec, q.end); err != nil {
		q.undoLocked(err)
		return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "reportqueue: write")
	}
	if err := q.f.Sync(); err != nil {
		q.undoLocked(err)
		return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "reportqueue: sync")
	}
	c.Request = body
	q.seq = c.Seq
	q.end += int64(len(rec))
	q.calls = append(q.calls, record{Call: c, end: q.end})
	q.perKey[key]++
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

// undoLocked cuts what a failed append may have written, so that no
// partial record is followed by good ones (the next Open would cut those
// off with it). When even that fails the file is closed: Append refuses
// (installers retry) until the queue is opened again.
func (q *Queue) undoLocked(cause error) {
	err := q.f.Truncate(q.end)
	if err == nil {
		return
	}
	q.log.Error("queued region calls: failed append not undone; refusing calls until the rack restarts", "path", q.path, "cause", cause, "err", err)
	_ = q.f.Close()
	q.f = nil
}

// remove marks the call seq at the head of the queue made, and compacts
// the file when the calls made fill most of it.
func (q *Queue) remove(seq uint64) error {
	q.mu.Lock()
	ok := len(q.calls) > 0 && q.calls[0].Seq == seq
	q.mu.Unlock()
	if !ok {
		return nil
	}
	// A small file of its own rather than a rewrite of the queue: making
	// n calls costs n small writes, not n rewrites of what is left.
	if err := atomicfile.WriteFile(q.headPath, []byte(strconv.FormatUint(seq, 10)), 0o600); err != nil {
		return fmt.Errorf("reportqueue: %w", err)
	}
	q.mu.Lock()
	c := q.calls[0]
	q.calls = q.calls[1:]
	q.done = c.end
	if q.perKey[c.Key]--; q.perKey[c.Key] <= 0 {
		delete(q.perKey, c.Key)
	}
	compact := q.f != nil && q.done >= q.cfg.CompactAfter && q.done > q.end/2
	q.mu.Unlock()
	if compact {
		if err := q.compact(); err != nil {
			q.log.Error("queued region calls: file not compacted", "path", q.path, "err", err)
		}
	}
	return nil
}

// compact rewrites the file without the calls made. It copies the pending
// records without holding mu, so Append does not wait for it; only the
// records appended meanwhile are copied under mu, and the new file put in
// place. Only Run removes calls, so the start of what is kept does not
// move meanwhile.
func (q *Queue) compact() error {
	q.compactMu.Lock()
	defer q.compactMu.Unlock()
	q.mu.Lock()
	src, from, to := q.f, q.done, q.end
	q.mu.Unlock()
	if src == nil {
		return nil
	}
	tmp, err := os.CreateTemp(q.cfg.DataDir, atomicfile.TempPrefix+File+".")
	if err != nil {
		return fmt.Errorf("reportqueue: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := copyRange(tmp, src, from, to); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("reportqueue: %w", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.f != src {
		return nil // closed meanwhile
	}
	if err := copyRange(tmp, src, to, q.end); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("reportqueue: %w", err)
	}
	if err := os.Rename(tmp.Name(), q.path); err != nil {
		return fmt.Errorf("reportqueue: %w", err)
	}
	ok = true
	// From here the new file is the queue's, durable or not yet: the old
	// one is gone from its name.
	_ = src.Close()
	q.f = tmp
	q.end -= from
	q.done = 0
	for i := range q.calls {
		q.calls[i].end -= from
	}
	return atomicfile.SyncDir(q.cfg.DataDir)
}

// copyRange appends src's bytes [from, to) to dst.
func copyRange(dst io.Writer, src io.ReaderAt, from, to int64) error {
	if _, err := io.Copy(dst, io.NewSectionReader(src, from, to-from)); err != nil {
		return fmt.Errorf("reportqueue: compact: %w", err)
	}
	return nil
}

func (q *Queue) head() (Call, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.calls) == 0 {
		return Call{}, false
	}
	return q.calls[0].Call, true
}

// Calls returns the calls waiting, oldest first.
func (q *Queue) Calls() []Call {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]Call, len(q.calls))
	for i, rec := range q.calls {
		out[i] = rec.Call
	}
	return out
}

// Permanent reports whether err is the region refusing a call as wrong,
// which a retry would not change.
func Permanent(err error) bool {
	switch rackplane.ErrorCode(err) {
	case rackplane.EINVALID, rackplane.ENOTFOUND, rackplane.EFORBIDDEN, rackplane.EUNAUTHORIZED, rackplane.ECONFLICT, rackplane.EPRECONDITION:
		return true
	}
	return false
}

// Run makes the queued calls, oldest first, until ctx ends. A call the
// region does not answer is tried again, with backoff, before any later
// one: the region sees reports in the order installers made them.
func (q *Queue) Run(ctx context.Context) error {
	retry := backoff.New(q.cfg.Backoff)
	for {
		c, ok := q.head()
		if !ok {
			select {
			case <-ctx.Done():
				return nil
			case <-q.wake:
				continue
			}
		}
		cctx, cancel := context.WithTimeout(ctx, q.cfg.CallTimeout)
		err := q.deliver(cctx, c.Method, c.Request)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err == nil:
			q.delivered.WithLabelValues(c.Method).Inc()
			q.log.Info("queued region call made", "method", c.Method, "seq", c.Seq, "queued_at", c.QueuedAt)
		case Permanent(err):
			q.dropped.WithLabelValues(c.Method).Inc()
			q.log.Warn("queued region call refused by the region and dropped", "method", c.Method, "seq", c.Seq, "queued_at", c.QueuedAt, "err", err)
		default:
			wait := retry.Next()
			q.log.Debug("queued region call: region away", "method", c.Method, "seq", c.Seq, "retry_in", wait, "err", err)
			if !backoff.Sleep(ctx, wait) {
				return nil
			}
			continue
		}
		retry.Reset()
		if err := q.remove(c.Seq); err != nil {
			// Made again after the next start; the region takes it twice.
			q.log.Error("queued region call made but not removed", "method", c.Method, "seq", c.Seq, "err", err)
			if !backoff.Sleep(ctx, retry.Next()) {
				return nil
			}
		}
	}
}

package reportqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/atomicfile"
	"github.com/rackplane/rackplane/internal/backoff"
)

// File is the queue's file under the rack's data directory.
const File = "region-calls.queue"

// Config configures a Queue. Zero values take DefaultConfig's.
type Config struct {
	// DataDir is the rack's data directory. Required.
	DataDir string
	// MaxPending bounds the calls kept; beyond it Append refuses, and the
	// installer, answered 503, retries.
	MaxPending int
	// CallTimeout bounds each delivery attempt.
	CallTimeout time.Duration
	// Backoff paces attempts while the region stays away.
	Backoff backoff.Policy
	Now     func() time.Time
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{MaxPending: 10000, CallTimeout: 10 * time.Second,
		Backoff: backoff.Policy{Initial: 250 * time.Millisecond, Max: 10 * time.Second}, Now: time.Now}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxPending <= 0 {
		c.MaxPending = d.MaxPending
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
	if c.CallTimeout < 0 {
		errs = append(errs, fmt.Errorf("CallTimeout %s: want 0 (default) or more", c.CallTimeout))
	}
	if len(errs) > 0 {
		return rackplane.WrapError(rackplane.EINVALID, errors.Join(errs...), "reportqueue: %v", errors.Join(errs...))
	}
	return nil
}

// DeliverFunc makes one call on the region.
type DeliverFunc func(ctx context.Context, method string, request json.RawMessage) error

// Queue is the durable queue of calls.
type Queue struct {
	cfg     Config
	path    string
	deliver DeliverFunc
	log     *slog.Logger

	mu    sync.Mutex
	f     *os.File // open for appending
	calls []Call
	seq   uint64
	wake  chan struct{}

	pending   prometheus.GaugeFunc
	delivered *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	torn      prometheus.Counter
}

// Open opens the queue's file under cfg.DataDir, creating it, and cuts off
// a torn tail left by a crash.
func Open(cfg Config, deliver DeliverFunc, log *slog.Logger, reg prometheus.Registerer) (*Queue, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	q := &Queue{cfg: cfg, path: filepath.Join(cfg.DataDir, File), deliver: deliver, log: log, wake: make(chan struct{}, 1),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_queued_region_calls_delivered_total",
			Help: "Calls (installers' status reports, preseed fetches served from the cache) made on the region after it was away, by method.",
		}, []string{"method"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_queued_region_calls_dropped_total",
			Help: "Queued calls the region refused as wrong (invalid, not found, forbidden, conflict) and that were dropped rather than retried, by method.",
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
	if reg != nil {
		for _, c := range []prometheus.Collector{q.pending, q.delivered, q.dropped, q.torn} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("reportqueue: register metrics: %w", err)
			}
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("reportqueue: %w", err)
	}
	f, err := os.OpenFile(q.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("reportqueue: %w", err)
	}
	calls, good, rerr := ReadRecords(f)
	if rerr != nil {
		if !errors.Is(rerr, ErrTorn) {
			f.Close()
			return nil, fmt.Errorf("reportqueue: read %s: %w", q.path, rerr)
		}
		// Never acknowledged to anyone: the write was cut by a crash.
		q.torn.Inc()
		log.Warn("queued region calls: torn tail cut off", "path", q.path, "kept", len(calls), "at", good, "err", rerr)
		if err := f.Truncate(good); err != nil {
			f.Close()
			return nil, fmt.Errorf("reportqueue: truncate %s: %w", q.path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("reportqueue: %w", err)
		}
	}
	if _, err := f.Seek(good, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("reportqueue: %w", err)
	}
	q.f, q.calls = f, calls
	for _, c := range calls {
		q.seq = max(q.seq, c.Seq)
	}
	if err := atomicfile.SyncDir(cfg.DataDir); err != nil {
		f.Close()
		return nil, err
	}
	if len(calls) > 0 {
		log.Info("queued region calls waiting from before", "pending", len(calls))
	}
	return q, nil
}

// Close closes the file; Run must have returned.
func (q *Queue) Close() error {
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

// Append queues a call and returns once it is on disk.
func (q *Queue) Append(method string, request any) error {
	body, err := json.Marshal(request)
	if err != nil {
		return fmt.Errorf("reportqueue: %w", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.f == nil {
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "the rack is stopping; try again")
	}
	if len(q.calls) >= q.cfg.MaxPending {
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "%d calls already wait for the region; try again later", len(q.calls))
	}
	c := Call{Seq: q.seq + 1, Method: method, Request: body, QueuedAt: q.cfg.Now().UTC()}
	rec, err := encodeRecord(c)
	if err != nil {
		return rackplane.WrapError(rackplane.EINVALID, err, "reportqueue: %v", err)
	}
	if _, err := q.f.Write(rec); err != nil {
		q.repairLocked()
		return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "reportqueue: write")
	}
	if err := q.f.Sync(); err != nil {
		q.repairLocked()
		return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "reportqueue: sync")
	}
	q.seq = c.Seq
	q.calls = append(q.calls, c)
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

// repairLocked rewrites the file from memory after a failed append, so
// that a partial record is not followed by good ones.
func (q *Queue) repairLocked() {
	if err := q.rewriteLocked(q.calls); err != nil {
		q.log.Error("queued region calls: file not repaired", "path", q.path, "err", err)
	}
}

// rewriteLocked replaces the file with calls, atomically and durably, and
// appends after them from then on.
func (q *Queue) rewriteLocked(calls []Call) error {
	var b []byte
	for _, c := range calls {
		rec, err := encodeRecord(c)
		if err != nil {
			return fmt.Errorf("reportqueue: %w", err)
		}
		b = append(b, rec...)
	}
	if err := atomicfile.WriteFile(q.path, b, 0o600); err != nil {
		return fmt.Errorf("reportqueue: %w", err)
	}
	f, err := os.OpenFile(q.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("reportqueue: %w", err)
	}
	if q.f != nil {
		q.f.Close()
	}
	q.f = f
	return nil
}

// remove takes the call seq off the head of the queue and off disk.
func (q *Queue) remove(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.calls) == 0 || q.calls[0].Seq != seq {
		return nil
	}
	if q.f == nil {
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "the queue is closed")
	}
	if err := q.rewriteLocked(q.calls[1:]); err != nil {
		return err
	}
	q.calls = q.calls[1:]
	return nil
}

func (q *Queue) head() (Call, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.calls) == 0 {
		return Call{}, false
	}
	return q.calls[0], true
}

// Calls returns the calls waiting, oldest first.
func (q *Queue) Calls() []Call {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]Call(nil), q.calls...)
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

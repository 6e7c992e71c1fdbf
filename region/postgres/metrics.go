package postgres

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// dbMetrics is what an operator watches of the event log's readers (how
// long an append in flight has been holding them back, and how often an
// API read stopped waiting for one) and of API token checks.
type dbMetrics struct {
	settleTimeouts prometheus.Counter
	warnSettle     *every
	// tokenChecks counts API token checks by outcome: a climbing
	// unknown_token or wrong_secret is someone guessing.
	tokenChecks *prometheus.CounterVec
	// tokenOutcomes are tokenChecks' series by outcome, found once.
	tokenOutcomes map[string]prometheus.Counter
	// hashCompares counts secret hash comparisons, for the test that
	// checks every path through Authenticate makes one.
	hashCompares atomic.Int64
	// tokenUseWrites counts the writes of API token uses by outcome: a
	// failed one leaves last_used_at behind until one is written.
	tokenUseWrites *prometheus.CounterVec
}

func newDBMetrics() *dbMetrics {
	m := &dbMetrics{
		settleTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_region_event_log_settle_timeouts_total",
			Help: "Reads of the event log that stopped waiting for appends in flight and returned without their events.",
		}),
		warnSettle: &every{interval: time.Minute},
		tokenChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_region_api_token_checks_total",
			Help: "API bearer tokens checked, by outcome: accepted, malformed, unknown_token, wrong_secret, revoked.",
		}, []string{"outcome"}),
	}
	m.tokenUseWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rackplane_region_api_token_use_writes_total",
		Help: "Writes of API tokens' last uses (one statement for every token used since the last), by outcome: written, failed.",
	}, []string{"outcome"})
	m.tokenUseWrites.WithLabelValues("written")
	m.tokenUseWrites.WithLabelValues("failed")
	m.tokenOutcomes = map[string]prometheus.Counter{}
	for _, o := range []string{tokenAccepted, tokenMalformed, tokenUnknown, tokenWrongSecret, tokenRevoked} {
		m.tokenOutcomes[o] = m.tokenChecks.WithLabelValues(o)
	}
	return m
}

// tokenCheck counts a token check of outcome o.
func (m *dbMetrics) tokenCheck(o string) { m.tokenOutcomes[o].Inc() }

// Collectors returns the event log's metrics, for the region's registry.
// rackplane_region_event_log_held_back_seconds is read from PostgreSQL at
// each scrape: the age of the oldest append still in flight, which is how
// far behind the log's readers (followers, GET /events) may be.
func (db *DB) Collectors() []prometheus.Collector {
	heldBack := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rackplane_region_event_log_held_back_seconds",
		Help: "Age of the oldest append in flight in this database (0 with none): how long the event log's readers may be held back.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var age float64
		err := db.pool.QueryRow(ctx, `SELECT coalesce(extract(epoch FROM now() - min(a.xact_start)), 0)::float8
			FROM pg_locks m JOIN pg_stat_activity a ON a.pid = m.pid WHERE `+appenderLocks,
			appendLockClass, appendLockObject).Scan(&age)
		if err != nil {
			return -1 // unknown: the database did not answer
		}
		return max(age, 0)
	})
	return []prometheus.Collector{db.metrics.settleTimeouts, db.metrics.tokenChecks, db.metrics.tokenUseWrites, heldBack}
}

// every allows one event per interval: warnings that could repeat for
// every request are logged once a minute, while the counter counts all.
type every struct {
	interval time.Duration
	mu       sync.Mutex
	last     time.Time
}

func (e *every) Allow() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if now := time.Now(); now.Sub(e.last) >= e.interval {
		e.last = now
		return true
	}
	return false
}

package outbox

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/region/postgres"
)

// Config configures a Relay.
type Config struct {
	Batch      int
	Poll       time.Duration // fallback when a notification is missed
	AckTimeout time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Relay publishes the outbox.
type Relay struct {
	db  *postgres.DB
	js  jetstream.JetStream
	cfg Config
	log *slog.Logger

	relayed prometheus.Counter
	pending prometheus.GaugeFunc
}

// New returns a relay.
func New(db *postgres.DB, js jetstream.JetStream, cfg Config) *Relay {
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// Publishes go through a JetStream context of the relay's own on js's
	// connection, one that forgets an acknowledgement after AckTimeout.
	// A publish JetStream never answers is forgotten after AckTimeout,
	// so that unanswered ones cannot pile up until every publish fails.
	js = eventbus.ForgettingAfter(js, cfg.AckTimeout)
	r := &Relay{db: db, js: js, cfg: cfg, log: cfg.Logger,
		relayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_region_outbox_relayed_total", Help: "Region events published from the outbox.",
		}),
	}
	// Counted when scraped, not after each pass: a pass can wait
	// AckTimeout on a JetStream that does not answer, and back-off
	// follows a failed one, and a gauge set between passes showed the
	// outbox empty all that time while events waited.
	r.pending = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rackplane_region_outbox_pending", Help: "Region events waiting in the outbox (NaN when PostgreSQL cannot count them).",
	}, r.countPending)
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(r.relayed, r.pending)
	}
	return r
}

// Run relays until ctx ends: at every notification of a new emit, and
// every Poll.
func (r *Relay) Run(ctx context.Context) error {
	wake := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(ctx)
	listening := make(chan struct{})
	go func() { defer close(listening); r.listen(ctx, wake) }()
	// Run returns only once the listener has: it holds a connection.
	defer func() { cancel(); <-listening }()
	retry := backoff.New(backoff.Policy{})
	for ctx.Err() == nil {
		n, err := r.db.RelayOutbox(ctx, r.cfg.Batch, r.publish)
		if err != nil && ctx.Err() != nil {
			return nil
		}
		r.relayed.Add(float64(n))
		if err == nil && n == r.cfg.Batch {
			retry.Reset()
			continue // more waiting
		}
		if err != nil {
			wait := retry.Next()
			r.log.Warn("outbox relay failed, will retry", "err", err, "retry_in", wait)
			backoff.Sleep(ctx, wait)
			continue
		}
		retry.Reset()
		select {
		case <-ctx.Done():
		case <-wake:
		case <-time.After(r.cfg.Poll):
		}
	}
	return nil
}

// countPending is the pending gauge's value: what waits in the outbox
// now, or NaN (unknown, not none) when PostgreSQL does not say.
func (r *Relay) countPending() float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, err := r.db.OutboxLength(ctx)
	if err != nil {
		r.log.Warn("counting the outbox for rackplane_region_outbox_pending", "err", err)
		return math.NaN()
	}
	return float64(n)
}

// listen turns LISTEN notifications into wake-ups; the poll covers the
// times it is not connected.
func (r *Relay) listen(ctx context.Context, wake chan<- struct{}) {
	retry := backoff.New(backoff.Policy{Max: time.Second})
	for ctx.Err() == nil {
		err := r.db.Listen(ctx, postgres.OutboxChannel, func() {
			select {
			case wake <- struct{}{}:
			default:
			}
		})
		if err != nil && ctx.Err() == nil {
			r.log.Debug("outbox listen", "err", err)
			retry.Wait(ctx)
		}
	}
}

func (r *Relay) publish(ctx context.Context, evs []events.Event) ([]string, error) {
	futures := make([]jetstream.PubAckFuture, len(evs))
	var firstErr error
	for i, e := range evs {
		msg, err := eventbus.Message(e)
		if err != nil {
			firstErr = err
			break
		}
		f, err := r.js.PublishMsgAsync(msg)
		if err != nil {
			firstErr = err
			break
		}
		futures[i] = f
	}
	var acked []string
	timer := time.NewTimer(r.cfg.AckTimeout)
	defer timer.Stop()
wait:
	for i, f := range futures {
		if f == nil {
			break
		}
		select {
		case <-f.Ok():
			acked = append(acked, evs[i].ID)
		case err := <-f.Err():
			if firstErr == nil {
				firstErr = err
			}
		case <-timer.C:
			if firstErr == nil {
				firstErr = errors.New("no acknowledgement from JetStream in time")
			}
			break wait // the rest stay in the outbox for the next pass
		case <-ctx.Done():
			return acked, ctx.Err()
		}
	}
	return acked, firstErr
}

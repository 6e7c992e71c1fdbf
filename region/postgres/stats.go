package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// BootBucket is the boot traffic of one interval [Start, Start+step) of
// BootStats, as the racks reported it.
type BootBucket struct {
	Start time.Time `json:"start"`
	// Boots counts machines that got their boot config: the distinct MACs
	// (else machine ids, else source addresses) of boot_handoff events of
	// route config for a machine's own config (not a chain loader's),
	// plus the config requests a rack counted in a boot_requests_summarized
	// event instead of reporting them one by one.
	Boots int64 `json:"boots"`
	// Requests counts boot requests: hand-offs, requests refused before
	// one, and the summarised ones.
	Requests int64 `json:"requests"`
	// Transfers counts the transfers that ended, TransferErrors those
	// that ended with an error (reported one by one or summarised).
	Transfers      int64 `json:"transfers"`
	TransferErrors int64 `json:"transfer_errors"`
	// Bytes is what the transfers reported one by one sent (a summary
	// does not count bytes).
	Bytes int64 `json:"bytes"`
}

// Bounds of BootStats: a dashboard's day at most, in at most
// MaxStatsBuckets intervals of at least MinStatsStep, so one call reads a
// bounded stretch of the log through its index and returns a bounded
// answer.
const (
	MaxStatsWindow  = 24 * time.Hour
	MinStatsStep    = 10 * time.Second
	MaxStatsBuckets = 1440
)

// bootStatsQuery counts the boot traffic of [$1, $2) in buckets of $3
// seconds from $1, of the types $4 ($5 to $8 each by name). It says
// telemetry_type(type), the predicate of the partial index on time, so
// that the planner can use that index for the range.
const bootStatsQuery = `
SELECT floor(extract(epoch FROM (time - $1)) / $3)::int AS i,
  count(DISTINCT coalesce(data->>'mac', data->>'machine_id', data->>'remote'))
    FILTER (WHERE type = $5 AND data->>'route' = 'config' AND data ? 'purpose')
  + coalesce(sum((data->'by_outcome'->>'config')::bigint) FILTER (WHERE type = $8), 0),
  count(*) FILTER (WHERE type IN ($5, $7))
  + coalesce(sum((data->>'requests')::bigint) FILTER (WHERE type = $8), 0),
  count(*) FILTER (WHERE type = $6)
  + coalesce(sum((data->>'transfers')::bigint) FILTER (WHERE type = $8), 0),
  count(*) FILTER (WHERE type = $6 AND coalesce(data->>'error', '') <> '')
  + coalesce(sum((data->>'transfer_errors')::bigint) FILTER (WHERE type = $8), 0),
  coalesce(sum((data->>'bytes')::bigint) FILTER (WHERE type = $6), 0)
FROM events
WHERE telemetry_type(type) AND type = ANY($4) AND time >= $1 AND time < $2
GROUP BY 1`

// statsTypes are the events BootStats reads; all are telemetry types, so
// the partial index events_telemetry_time (migration 0025) covers them.
var statsTypes = []string{
	events.TypeBootHandoff,
	events.TypeBootTransfer,
	events.TypeBootRequestRejected,
	events.TypeBootRequestsSummarized,
}

// BootStats counts the boot traffic of [since, until) by the time each
// event happened (its time, not when the region recorded it: a rack's
// journal replayed after an outage puts its boots where they were), in
// buckets of step from since; every bucket is in the answer, empty ones
// too. The bounds (MaxStatsWindow, MinStatsStep, MaxStatsBuckets) are
// refused beyond, as EINVALID.
//
// Pruned telemetry (PruneTelemetry) is not counted: the stats see what
// the log still holds.
func (db *DB) BootStats(ctx context.Context, since, until time.Time, step time.Duration) ([]BootBucket, error) {
	window := until.Sub(since)
	switch {
	case step < MinStatsStep:
		return nil, rackplane.Errorf(rackplane.EINVALID, "step %s is below %s", step, MinStatsStep)
	case window <= 0 || window > MaxStatsWindow:
		return nil, rackplane.Errorf(rackplane.EINVALID, "window %s: want more than 0 and at most %s", window, MaxStatsWindow)
	}
	n := int((window + step - 1) / step)
	if n > MaxStatsBuckets {
		return nil, rackplane.Errorf(rackplane.EINVALID, "window %s in steps of %s is %d buckets, more than %d: take a longer step", window, step, n, MaxStatsBuckets)
	}
	out := make([]BootBucket, n)
	for i := range out {
		out[i].Start = since.Add(time.Duration(i) * step).UTC()
	}
	rows, err := db.pool.Query(ctx, bootStatsQuery, since, until, step.Seconds(), statsTypes,
		events.TypeBootHandoff, events.TypeBootTransfer, events.TypeBootRequestRejected, events.TypeBootRequestsSummarized)
	if err != nil {
		return nil, fmt.Errorf("boot stats: %w", err)
	}
	var b BootBucket
	var i int
	_, err = pgx.ForEachRow(rows, []any{&i, &b.Boots, &b.Requests, &b.Transfers, &b.TransferErrors, &b.Bytes}, func() error {
		if i >= 0 && i < n {
			b.Start = out[i].Start
			out[i] = b
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boot stats: %w", err)
	}
	return out, nil
}

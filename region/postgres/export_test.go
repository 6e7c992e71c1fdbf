package postgres

import (
	"context"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/region/machine"
)

// UseServerSnapshotHorizon makes db find its horizon as the log did before
// appenders took their mark (the server-wide snapshot xmin), for the
// benchmark that compares the two.
func UseServerSnapshotHorizon(db *DB) { db.horizonMode = horizonServerSnapshot }

// UseSerializedAppends makes db's appends take turns, so that every
// committed event is readable, for the same benchmark.
func UseSerializedAppends(db *DB) { db.horizonMode = horizonSerialized }

// SetTokenUseClock makes u wait on after instead of time.After.
func SetTokenUseClock(u *TokenUses, after func(time.Duration) <-chan time.Time) { u.after = after }

// HashCompares is how many secret hash comparisons db has made.
func HashCompares(db *DB) int64 { return db.metrics.hashCompares.Load() }

var (
	BootStatsQuery = bootStatsQuery
	BootStatsTypes = statsTypes
)

// ListMachinesQuery is ListMachines' statement for f.
func ListMachinesQuery(f machine.Filter) (string, []any) { return listMachinesQuery(f) }

// ProjectionTables lists every projection's tables.
func ProjectionTables(db *DB) []string {
	var out []string
	for _, p := range db.projections {
		out = append(out, p.Tables...)
	}
	return out
}

// SetTokenCacheMax bounds c to n tokens.
func SetTokenCacheMax(c *TokenCache, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.max = n
}

// TokenCacheLive reports whether c is listening, and so used.
func TokenCacheLive(c *TokenCache) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.live
}

// AfterTokenRead makes each of db's token checks that reads its row call
// f after the read.
func AfterTokenRead(db *DB, f func()) { db.tokenCache.afterRead = f }

// MachinesBothWays reads every machine, by hostname, through
// decodeMachine and through pgx's Scan; taken says, for each, whether
// decodeMachine read it.
func MachinesBothWays(ctx context.Context, db *DB) (decoded, scanned []rackplane.Machine, taken []bool, err error) {
	rows, err := db.pool.Query(ctx, selectMachine+` ORDER BY hostname`)
	if err != nil {
		return nil, nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var a, b rackplane.Machine
		taken = append(taken, decodeMachine(rows.FieldDescriptions(), rows.RawValues(), &a))
		if err := rows.Scan(machineDest(&b, nil)...); err != nil {
			return nil, nil, nil, err
		}
		decoded, scanned = append(decoded, a), append(scanned, b)
	}
	return decoded, scanned, taken, rows.Err()
}

package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/backoff"
)

// A rebuild replays the log into shadow tables while the region goes on
// appending, then swaps them in (docs/event-log.md, "Rebuilding the
// projections"):
//
//  1. It fixes the set of events it reads: those of transactions below the
//     log's horizon H when it starts, which nothing can add to any more.
//  2. It creates, in schema rebuildSchema, an empty copy of every
//     projection table (columns, defaults, constraints, indexes, foreign
//     keys, and the functions that take one of their rows), and a
//     checkpoint row.
//  3. It reads that set in position order and applies it to the shadow
//     tables in transactions of RebuildOptions.ChunkEvents events, each
//     with the checkpoint: a rebuild stopped anywhere resumes from its
//     last commit.
//  4. In one transaction that holds the streams lock (so that no append
//     runs), it applies the events at or above H (those appended meanwhile)
//     to the shadow tables and replaces the rows of the live tables with
//     theirs; readers see the old rows until it commits.
const rebuildSchema = "projections_rebuild"

// rebuildLockObject is the key, with appendLockClass, of the session lock
// one rebuild at a time holds.
const rebuildLockObject = 3

// RebuildOptions tunes RebuildProjectionsWith.
type RebuildOptions struct {
	// ChunkEvents is how many events each transaction applies, with the
	// checkpoint (default 100000).
	ChunkEvents int
	// Fresh throws away the checkpoint of an unfinished rebuild and starts
	// over; without it, a rebuild resumes one it finds.
	Fresh bool
	// Progress, when set, is called after each read of events is applied
	// (Done counts events applied in a transaction not yet committed).
	Progress func(RebuildProgress)
	// LogEvery is how often progress is logged (default 5s).
	LogEvery time.Duration
}

// RebuildProgress is how far a rebuild has come.
type RebuildProgress struct {
	Done    int64 // events applied, by this run and those it resumed
	Total   int64 // events it will apply before the final swap
	Resumed int64 // events an earlier run had applied
	Elapsed time.Duration
	Rate    float64 // events per second of this run
}

// RebuildProjections replays the whole log into fresh copies of every
// projection's tables and swaps them in, resuming an unfinished rebuild;
// see RebuildProjectionsWith. It returns how many events it replayed.
func (db *DB) RebuildProjections(ctx context.Context) (int, error) {
	n, err := db.RebuildProjectionsWith(ctx, RebuildOptions{})
	return int(n), err
}

// rebuildState is the checkpoint row.
type rebuildState struct {
	horizon string // xid8 as text
	after   int64  // position of the last event applied
	done    int64
	total   int64
}

// RebuildProjectionsWith rebuilds the projections as RebuildProjections
// does. Appends go on meanwhile, but for the final swap, which takes as
// long as applying the events appended during the rebuild and copying the
// projections' rows. Replay is in position order, which within one stream
// is version order (appends to a stream are serialised by its streams
// row). A rebuild cancelled or failed midway leaves its checkpoint; the
// next one resumes from it.
func (db *DB) RebuildProjectionsWith(ctx context.Context, opts RebuildOptions) (int64, error) {
	if opts.ChunkEvents <= 0 {
		opts.ChunkEvents = 100000
	}
	if opts.LogEvery <= 0 {
		opts.LogEvery = 5 * time.Second
	}
	var tables []string
	for _, p := range db.projections {
		tables = append(tables, p.Tables...)
	}
	// A connection of its own, dropped at the end: it holds the session
	// lock, and its statements ran with the shadow schema first in
	// search_path, so it is not handed back to the pool.
	pc, err := db.pool.Acquire(ctx)
	if err != nil {
		return 0, wrap("rebuild: connect", err)
	}
	conn := pc.Hijack()
	defer conn.Close(context.Background())
	// The session lock goes with its backend, which PostgreSQL ends only
	// some time after the socket is closed: a rebuild that ended (or was
	// cancelled) a moment ago may still hold it. So the lock is released
	// before the close when the connection still works, and a held lock
	// is tried again for a moment before it counts as another rebuild
	// running (a rebuild retried at once got ECONFLICT so).
	locked, err := tryRebuildLock(ctx, conn)
	if err != nil {
		return 0, wrap("rebuild: lock", err)
	}
	if !locked {
		return 0, rackplane.Errorf(rackplane.ECONFLICT, "another rebuild of the projections is running")
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = conn.Exec(uctx, `SELECT pg_advisory_unlock($1, $2)`, appendLockClass, rebuildLockObject)
	}()
	st, err := db.prepareRebuild(ctx, conn, tables, opts.Fresh)
	if err != nil {
		return 0, err
	}
	appliers := make([]RebuildApplier, len(db.projections))
	for i, p := range db.projections {
		if p.Rebuild != nil {
			appliers[i] = p.Rebuild()
		} else {
			appliers[i] = applyFunc(p.Apply)
		}
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL search_path = `+pgx.Identifier{rebuildSchema}.Sanitize()+`, public`); err != nil {
			return err
		}
		for _, a := range appliers {
			if l, ok := a.(rebuildLoader); ok {
				if err := l.Load(ctx, tx); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return 0, wrap("rebuild: load", err)
	}
	if err := db.replay(ctx, conn, &st, appliers, opts); err != nil {
		return 0, err
	}
	tail, err := db.swapRebuilt(ctx, conn, &st, tables, appliers)
	if err != nil {
		return 0, err
	}
	db.log.Info("projections rebuilt", "events", st.done+tail, "events_appended_meanwhile", tail)
	return st.done + tail, nil
}

// prepareRebuild returns the checkpoint of an unfinished rebuild of the
// same tables, or creates the shadow tables and a checkpoint.
func (db *DB) prepareRebuild(ctx context.Context, conn *pgx.Conn, tables []string, fresh bool) (rebuildState, error) {
	var st rebuildState
	var was string
	err := conn.QueryRow(ctx, `SELECT horizon::text, after_position, done, total, tables FROM `+rebuildSchema+`.state`).
		Scan(&st.horizon, &st.after, &st.done, &st.total, &was)
	var pgErr *pgconn.PgError
	switch {
	case err == nil && !fresh && was == strings.Join(tables, ","):
		db.log.Info("projections rebuild resumed", "events_done", st.done, "events_total", st.total)
		return st, nil
	case err == nil, errors.Is(err, pgx.ErrNoRows):
	case errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000"): // no table, no schema
	default:
		return st, wrap("rebuild: read checkpoint", err)
	}
	h, err := db.horizon(ctx)
	if err != nil {
		return st, err
	}
	st = rebuildState{horizon: fmt.Sprint(h)}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM events WHERE txid < $1::text::xid8`, st.horizon).Scan(&st.total); err != nil {
			return wrap("rebuild: count events", err)
		}
		// The definitions are read with only public in search_path, so
		// that they name tables and types unqualified, then run with the
		// shadow schema first, so that they name the shadow ones.
		shadow := pgx.Identifier{rebuildSchema}.Sanitize()
		stmts := []string{
			`SET LOCAL search_path = public`,
			`DROP SCHEMA IF EXISTS ` + shadow + ` CASCADE`,
			`CREATE SCHEMA ` + shadow,
		}
		// Unlogged: what is rebuilt need not be written twice, and a crash
		// (which empties unlogged tables) loses the checkpoint with them.
		for _, t := range tables {
			stmts = append(stmts, fmt.Sprintf(`CREATE UNLOGGED TABLE %s (LIKE %s INCLUDING ALL)`,
				pgx.Identifier{rebuildSchema, t}.Sanitize(), pgx.Identifier{"public", t}.Sanitize()))
		}
		// In one round trip each (DDL, run as it is, simple protocol).
		if _, err := tx.Exec(ctx, strings.Join(stmts, ";\n"), pgx.QueryExecModeSimpleProtocol); err != nil {
			return wrap("rebuild: create shadow tables", err)
		}
		var more []string
		// Foreign keys, which LIKE does not copy: a machine's deletion
		// must cascade in the shadow tables as it did live.
		rows, err := tx.Query(ctx, `SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
			FROM pg_constraint c WHERE c.contype = 'f' AND c.conrelid = ANY($1::text[]::regclass[]) ORDER BY c.oid`, tables)
		if err != nil {
			return wrap("rebuild: read foreign keys", err)
		}
		for rows.Next() {
			var table, name, def string
			if err := rows.Scan(&table, &name, &def); err != nil {
				rows.Close()
				return wrap("rebuild: read foreign keys", err)
			}
			more = append(more, fmt.Sprintf(`ALTER TABLE %s ADD CONSTRAINT %s %s`,
				table, pgx.Identifier{name}.Sanitize(), def))
		}
		if err := rows.Err(); err != nil {
			return wrap("rebuild: read foreign keys", err)
		}
		// Functions that take a row of a projection table (a statement
		// calls them with the shadow table's row type).
		rows, err = tx.Query(ctx, `SELECT pg_get_functiondef(p.oid) FROM pg_proc p
			WHERE p.pronamespace = 'public'::regnamespace AND p.prokind = 'f'
				AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = ANY($1::text[]::regclass[])
					AND c.reltype = ANY(p.proargtypes::oid[]))
			ORDER BY p.oid`, tables)
		if err != nil {
			return wrap("rebuild: read functions", err)
		}
		for rows.Next() {
			var def string
			if err := rows.Scan(&def); err != nil {
				rows.Close()
				return wrap("rebuild: read functions", err)
			}
			more = append(more, strings.Replace(def, " FUNCTION public.", " FUNCTION "+shadow+".", 1))
		}
		if err := rows.Err(); err != nil {
			return wrap("rebuild: read functions", err)
		}
		more = append([]string{`SET LOCAL search_path = ` + shadow + `, public`}, more...)
		more = append(more, `CREATE UNLOGGED TABLE `+shadow+`.state (horizon xid8 NOT NULL, after_position bigint NOT NULL,
			done bigint NOT NULL, total bigint NOT NULL, tables text NOT NULL, started_at timestamptz NOT NULL DEFAULT now())`)
		if _, err := tx.Exec(ctx, strings.Join(more, ";\n"), pgx.QueryExecModeSimpleProtocol); err != nil {
			return wrap("rebuild: create shadow tables", err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO `+shadow+`.state (horizon, after_position, done, total, tables)
			VALUES ($1::text::xid8, 0, 0, $2, $3)`, st.horizon, st.total, strings.Join(tables, ","))
		return wrap("rebuild: checkpoint", err)
	})
	if err == nil {
		db.log.Info("projections rebuild started", "events_total", st.total, "horizon", st.horizon)
	}
	return st, err
}

// replay applies the events below the horizon after the checkpoint to the
// shadow tables, in transactions of opts.ChunkEvents events that each move
// the checkpoint. Reading the next events and turning them into
// statements overlap with Postgres running the last.
func (db *DB) replay(ctx context.Context, conn *pgx.Conn, st *rebuildState, appliers []RebuildApplier, opts RebuildOptions) error {
	g, gctx := errgroup.WithContext(ctx)
	reads := make(chan []Stored, 1)
	type built struct {
		b      *pgx.Batch
		count  int64
		commit bool // the batch ends the transaction, with the checkpoint
	}
	batches := make(chan built, 1)
	// Events are read and sent a few thousand at a time, however many a
	// transaction takes: memory stays bounded, and the stand-ins write
	// what they hold back (every machine changed, every lease) once per
	// transaction, not per read.
	readLimit := min(opts.ChunkEvents, 10000)
	g.Go(func() error {
		defer close(reads)
		after := st.after
		for {
			rows, err := db.pool.Query(gctx, selectStored+` WHERE txid < $1::text::xid8 AND position > $2 ORDER BY position LIMIT $3`,
				st.horizon, after, readLimit)
			if err != nil {
				return wrap("rebuild: read", err)
			}
			evs, err := pgx.CollectRows(rows, scanStored)
			if err != nil {
				return wrap("rebuild: read", err)
			}
			if len(evs) == 0 {
				return nil
			}
			after = evs[len(evs)-1].Position
			select {
			case reads <- evs:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
	})
	g.Go(func() error {
		defer close(batches)
		var b *pgx.Batch
		var inTx, last int64
		send := func(count int64, commit bool) error {
			if commit {
				for _, a := range appliers {
					a.Flush(b)
				}
				b.Queue(`UPDATE `+rebuildSchema+`.state SET after_position = $1, done = done + $2`, last, inTx)
				inTx = 0
			}
			select {
			case batches <- built{b, count, commit}:
				b = nil
				return nil
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		for evs := range reads {
			if b == nil {
				b = &pgx.Batch{}
			}
			if inTx == 0 {
				b.Queue(`SET LOCAL search_path = ` + pgx.Identifier{rebuildSchema}.Sanitize() + `, public`)
				// Work lost with the server is work done again.
				b.Queue(`SET LOCAL synchronous_commit = off`)
			}
			for _, s := range evs {
				for i, a := range appliers {
					if err := a.Apply(b, s); err != nil {
						return fmt.Errorf("rebuild: projection %s: event %s (%s): %w", db.projections[i].Name, s.ID, s.Type, err)
					}
				}
			}
			inTx += int64(len(evs))
			last = evs[len(evs)-1].Position
			if err := send(int64(len(evs)), inTx >= int64(opts.ChunkEvents)); err != nil {
				return err
			}
		}
		if inTx > 0 {
			b = &pgx.Batch{}
			return send(0, true)
		}
		return nil
	})
	g.Go(func() error {
		start, logged := time.Now(), time.Now()
		resumed := st.done
		var tx pgx.Tx
		defer func() {
			if tx != nil {
				_ = tx.Rollback(context.Background())
			}
		}()
		for bt := range batches {
			if tx == nil {
				var err error
				if tx, err = conn.Begin(gctx); err != nil {
					return wrap("rebuild: apply", err)
				}
			}
			if err := tx.SendBatch(gctx, bt.b).Close(); err != nil {
				return wrap("rebuild: apply", err)
			}
			if bt.commit {
				if err := tx.Commit(gctx); err != nil {
					return wrap("rebuild: apply", err)
				}
				tx = nil
			}
			st.done += bt.count
			el := time.Since(start)
			p := RebuildProgress{Done: st.done, Total: st.total, Resumed: resumed, Elapsed: el,
				Rate: float64(st.done-resumed) / max(el.Seconds(), 1e-9)}
			if opts.Progress != nil && bt.count > 0 {
				opts.Progress(p)
			}
			if time.Since(logged) >= opts.LogEvery {
				logged = time.Now()
				db.log.Info("projections rebuild", "events_done", p.Done, "events_total", p.Total,
					"events_per_second", int64(p.Rate), "elapsed", p.Elapsed.Round(time.Millisecond).String())
			}
		}
		return nil
	})
	return g.Wait()
}

// applyAll queues every applier's statements for evs, then what they held
// back.
func applyAll(b *pgx.Batch, appliers []RebuildApplier, evs []Stored, ps []Projection) error {
	for _, s := range evs {
		for i, a := range appliers {
			if err := a.Apply(b, s); err != nil {
				return fmt.Errorf("rebuild: projection %s: event %s (%s): %w", ps[i].Name, s.ID, s.Type, err)
			}
		}
	}
	for _, a := range appliers {
		a.Flush(b)
	}
	return nil
}

// swapRebuilt applies the events appended since the rebuild started and
// puts the shadow tables' rows in place of the live ones, all while
// appends wait. It returns how many events it applied.
func (db *DB) swapRebuilt(ctx context.Context, conn *pgx.Conn, st *rebuildState, tables []string, appliers []RebuildApplier) (int64, error) {
	shadow := pgx.Identifier{rebuildSchema}.Sanitize()
	var tail int64
	var raced string
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE streams IN EXCLUSIVE MODE`); err != nil {
			return wrap("rebuild: lock", err)
		}
		// An append that committed before the horizon was taken, behind
		// one of the same stream that had not (an id taken earlier, its
		// stream's lock later), would be replayed before the earlier
		// version: the rebuild starts over rather than apply them out of
		// order.
		err := tx.QueryRow(ctx, `SELECT t.stream FROM events t WHERE t.txid >= $1::text::xid8
			AND EXISTS (SELECT 1 FROM events m WHERE m.stream = t.stream AND m.version > t.version AND m.txid < $1::text::xid8)
			LIMIT 1`, st.horizon).Scan(&raced)
		if err == nil {
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return wrap("rebuild: check order", err)
		}
		rows, err := tx.Query(ctx, selectStored+` WHERE txid >= $1::text::xid8 ORDER BY position`, st.horizon)
		if err != nil {
			return wrap("rebuild: read appended", err)
		}
		evs, err := pgx.CollectRows(rows, scanStored)
		if err != nil {
			return wrap("rebuild: read appended", err)
		}
		tail = int64(len(evs))
		b := &pgx.Batch{}
		b.Queue(`SET LOCAL search_path = ` + shadow + `, public`)
		if err := applyAll(b, appliers, evs, db.projections); err != nil {
			return err
		}
		b.Queue(`SET LOCAL search_path = public`)
		order, err := insertOrder(ctx, tx, tables)
		if err != nil {
			return err
		}
		for i := len(order) - 1; i >= 0; i-- {
			b.Queue(`DELETE FROM ` + pgx.Identifier{"public", order[i]}.Sanitize())
		}
		for _, t := range order {
			b.Queue(`INSERT INTO ` + pgx.Identifier{"public", t}.Sanitize() + ` SELECT * FROM ` + pgx.Identifier{rebuildSchema, t}.Sanitize())
		}
		b.Queue(`DROP SCHEMA ` + shadow + ` CASCADE`)
		return wrap("rebuild: swap", tx.SendBatch(ctx, b).Close())
	})
	if err != nil {
		return 0, err
	}
	if raced != "" {
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+shadow+` CASCADE`); err != nil {
			return 0, wrap("rebuild: drop shadow tables", err)
		}
		return 0, rackplane.Errorf(rackplane.ECONFLICT,
			"an append to %s raced the start of the rebuild; run it again", raced)
	}
	return tail, nil
}

// insertOrder orders tables so that each comes after those its foreign
// keys reference.
func insertOrder(ctx context.Context, tx pgx.Tx, tables []string) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c
		WHERE c.contype = 'f' AND c.conrelid = ANY($1::text[]::regclass[]) AND c.confrelid = ANY($1::text[]::regclass[])
			AND c.conrelid <> c.confrelid`, tables)
	if err != nil {
		return nil, wrap("rebuild: read foreign keys", err)
	}
	deps := map[string][]string{}
	for rows.Next() {
		var from, to string
		if err := rows.Scan(&from, &to); err != nil {
			rows.Close()
			return nil, wrap("rebuild: read foreign keys", err)
		}
		deps[from] = append(deps[from], to)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("rebuild: read foreign keys", err)
	}
	var order []string
	placed := map[string]bool{}
	for len(order) < len(tables) {
		progress := false
		for _, t := range tables {
			if placed[t] {
				continue
			}
			ready := true
			for _, d := range deps[t] {
				ready = ready && placed[d]
			}
			if ready {
				order, placed[t], progress = append(order, t), true, true
			}
		}
		if !progress {
			return nil, fmt.Errorf("rebuild: foreign keys between %v form a cycle", tables)
		}
	}
	return order, nil
}

// tryRebuildLock takes the rebuild's session lock on conn, trying for up
// to two seconds while another session holds it: long enough for the
// backend of a rebuild that just ended to exit, short against a rebuild.
func tryRebuildLock(ctx context.Context, conn *pgx.Conn) (bool, error) {
	for try := 0; ; try++ {
		var locked bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, appendLockClass, rebuildLockObject).Scan(&locked); err != nil {
			return false, err
		}
		if locked || try == 20 {
			return locked, nil
		}
		if !backoff.Sleep(ctx, 100*time.Millisecond) {
			return false, ctx.Err()
		}
	}
}

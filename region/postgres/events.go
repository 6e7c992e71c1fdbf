package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/backoff"
)

// Expected stream versions with a special meaning.
const (
	ExpectAny      int64 = -1 // append whatever the stream's version
	ExpectNoStream int64 = 0  // the stream must not exist yet
)

// Stored is an event as the log holds it.
type Stored struct {
	events.Event
	Position   int64     `json:"position"`
	Version    int64     `json:"version"`
	RecordedAt time.Time `json:"recorded_at"`
	Cursor     Cursor    `json:"cursor"`
}

// Cursor is a position in the follower order of the log: (appending
// transaction id, position). The zero Cursor is before the first event.
type Cursor struct {
	TxID     uint64
	Position int64
}

// String encodes the cursor for clients; it is opaque to them.
func (c Cursor) String() string {
	return strconv.FormatUint(c.TxID, 10) + "-" + strconv.FormatInt(c.Position, 10)
}

// MarshalText implements encoding.TextMarshaler.
func (c Cursor) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// ParseCursor decodes a cursor from Cursor.String; "" is the start.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	a, b, ok := strings.Cut(s, "-")
	tx, err1 := strconv.ParseUint(a, 10, 64)
	pos, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil || pos < 0 {
		return Cursor{}, rackplane.Errorf(rackplane.EINVALID, "cursor %q is not one this server gave out", s)
	}
	return Cursor{TxID: tx, Position: pos}, nil
}

// ConflictError says a stream was not at the expected version.
type ConflictError struct {
	Stream   string
	Expected int64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("stream %s is not at version %d", e.Stream, e.Expected)
}

// Appended is the outcome for one event of an append.
type Appended struct {
	ID        string
	Position  int64
	Version   int64
	Duplicate bool // the event was already in the log, or earlier in the append; nothing was written
}

// Append appends evs to stream within tx, when the stream is at expected
// (or any version, with ExpectAny). Every event's Subject must be stream.
// Events whose id is already in the log are not written again: their
// original positions are returned with Duplicate set, and when all of them
// are duplicates the version check is skipped, so a retried append is a
// no-op rather than a conflict. The projections see each new event.
func (db *DB) Append(ctx context.Context, tx pgx.Tx, stream string, expected int64, evs ...events.Event) ([]Appended, error) {
	for _, e := range evs {
		if e.Subject != stream {
			return nil, fmt.Errorf("append: event %s has subject %q, not stream %q", e.ID, e.Subject, stream)
		}
	}
	out, fresh, err := db.dedupe(ctx, tx, evs)
	if err != nil || len(fresh) == 0 {
		return out, err
	}
	n := int64(len(fresh))
	var top int64
	switch {
	case expected == ExpectAny:
		err = tx.QueryRow(ctx, `INSERT INTO streams (name, version) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET version = streams.version + excluded.version
			RETURNING version`, stream, n).Scan(&top)
	case expected == ExpectNoStream:
		err = tx.QueryRow(ctx, `INSERT INTO streams (name, version) VALUES ($1, $2)
			ON CONFLICT (name) DO NOTHING RETURNING version`, stream, n).Scan(&top)
	default:
		err = tx.QueryRow(ctx, `UPDATE streams SET version = version + $2
			WHERE name = $1 AND version = $3 RETURNING version`, stream, n, expected).Scan(&top)
	}
	if err == pgx.ErrNoRows {
		return nil, rackplane.WrapError(rackplane.ECONFLICT, &ConflictError{stream, expected},
			"%s was changed by someone else", stream)
	}
	if err != nil {
		return nil, wrap("append: bump stream version", err)
	}
	versions := make([]int64, len(fresh))
	for i := range fresh {
		versions[i] = top - n + 1 + int64(i)
	}
	stored, err := db.insert(ctx, tx, fresh, versions)
	if err != nil {
		return nil, err
	}
	return merge(evs, out, stored), nil
}

// AppendAny appends events of any streams within tx, each at whatever its
// stream's version is: the batch path for rack events, which carry no
// expected version. Duplicates are handled as in Append.
//
// A batch is first tried as if none of its events were logged already
// (the common case: JetStream drops most repeats itself): one statement,
// pipelined behind a savepoint, bumps the streams' versions and inserts
// the events, one round trip in all. Only when the log's unique event id
// refuses one does it roll back to the savepoint and take the careful
// path, which looks the ids up first.
func (db *DB) AppendAny(ctx context.Context, tx pgx.Tx, evs []events.Event) ([]Appended, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	if !repeats(evs) {
		stored, err := db.appendFresh(ctx, tx, evs)
		if err == nil {
			return merge(evs, nil, stored), nil
		}
		if !isDuplicateID(err) {
			return nil, err
		}
		if _, rerr := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT append_any`); rerr != nil {
			return nil, wrap("append: roll back to savepoint", rerr)
		}
	}
	return db.appendAnyCareful(ctx, tx, evs)
}

// repeats reports whether an event id occurs twice in evs.
func repeats(evs []events.Event) bool {
	seen := make(map[string]struct{}, len(evs))
	for _, e := range evs {
		if _, ok := seen[e.ID]; ok {
			return true
		}
		seen[e.ID] = struct{}{}
	}
	return false
}

func isDuplicateID(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "events_id_key"
}

// appendFreshSQL appends a batch of events none of which is logged yet
// ($1..$9, one array per column). Each stream's version is bumped by its
// number of events, streams in name order (a fixed lock order keeps
// concurrent batches from deadlocking), and the events take the versions
// in between in batch order; they are inserted in batch order, so their
// positions are in batch order too.
const appendFreshSQL = `WITH batch AS (
	SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
	                     $6::text[], $7::text[], $8::text[], $9::text[])
	       WITH ORDINALITY AS t(id, stream, type, source, time, corr, caus, actor, data, ord)
), counts AS (
	SELECT stream, count(*) AS n FROM batch GROUP BY stream
), bumped AS (
	INSERT INTO streams (name, version) SELECT stream, n FROM counts ORDER BY stream
	ON CONFLICT (name) DO UPDATE SET version = streams.version + excluded.version
	RETURNING name, version
)
INSERT INTO events (id, stream, version, type, source, time, correlation_id, causation_id, actor, data)
SELECT b.id, b.stream, s.version - c.n + row_number() OVER (PARTITION BY b.stream ORDER BY b.ord),
	b.type, b.source, b.time, b.corr, b.caus, b.actor, b.data::jsonb
FROM batch b JOIN counts c ON c.stream = b.stream JOIN bumped s ON s.name = b.stream
ORDER BY b.ord
RETURNING id::text, position, version, txid::text, recorded_at`

// appendFresh appends evs, none of them repeated, behind the savepoint
// append_any, in one round trip, and applies the projections.
func (db *DB) appendFresh(ctx context.Context, tx pgx.Tx, evs []events.Event) ([]Stored, error) {
	n := len(evs)
	var args []any
	if useBinArrays(tx.Conn()) {
		w := arrayWriters.Get().(*arrayWriter)
		defer w.release()
		args = appendFreshArrays(w, evs)
	}
	if args == nil {
		args = appendFreshSlices(evs)
	}
	var at map[string]int // by id, made only if the rows come back out of batch order
	b := &pgx.Batch{}
	b.Queue(`SAVEPOINT append_any`)
	b.Queue(appendFreshSQL, args...)
	br := tx.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return nil, wrap("append: savepoint", err)
	}
	rows, err := br.Query()
	if err != nil {
		br.Close()
		return nil, wrap("append: insert events", err)
	}
	stored := make([]Stored, n)
	got := 0
	// The id and transaction id of a row are read where pgx holds them,
	// not copied into strings: the id is only compared, and the
	// transaction id is the same for every row.
	var id, txid pgtype.DriverBytes
	var lastTxID []byte
	var txID uint64
	for rows.Next() {
		var s Stored
		if err := rows.Scan(&id, &s.Position, &s.Version, &txid, &s.RecordedAt); err != nil {
			br.Close()
			return nil, wrap("append: insert events", err)
		}
		// The rows are inserted in batch order, and come back in it.
		i, ok := got, got < n && evs[got].ID == string(id)
		if !ok {
			if at == nil {
				at = make(map[string]int, n)
				for j, e := range evs {
					at[e.ID] = j
				}
			}
			if i, ok = at[string(id)]; !ok {
				br.Close()
				return nil, fmt.Errorf("append: insert returned event %s, not in the batch", id)
			}
		}
		if lastTxID == nil || !bytes.Equal(txid, lastTxID) {
			txID, _ = strconv.ParseUint(string(txid), 10, 64)
			lastTxID = append(lastTxID[:0], txid...)
		}
		s.Event = evs[i]
		s.Cursor.TxID = txID
		s.Cursor.Position = s.Position
		stored[i] = s
		got++
	}
	if err := rows.Err(); err != nil {
		br.Close()
		return nil, wrap("append: insert events", err)
	}
	if err := br.Close(); err != nil {
		return nil, wrap("append: insert events", err)
	}
	if got != n {
		return nil, fmt.Errorf("append: %d of %d events inserted", got, n)
	}
	if err := db.project(ctx, tx, stored); err != nil {
		return nil, err
	}
	return stored, nil
}

// appendFreshSlices is appendFreshSQL's parameters as Go slices, one
// per column, for pgx to encode: on a connection that does not describe
// its statements (where pgx guesses a parameter's type from its Go
// value), or for ids left to PostgreSQL to read.
func appendFreshSlices(evs []events.Event) []any {
	n := len(evs)
	ids, streams, types, sources, corr, caus, actors := make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]*string, n), make([]*string, n), make([]*string, n)
	// Strings, not []byte, which pgx would guess to be bytea; none (nil)
	// is NULL, as pgx sends a nil []byte.
	data := make([]*string, n)
	times := make([]time.Time, n)
	for i, e := range evs {
		ids[i], streams[i], types[i], sources[i], times[i] = e.ID, e.Subject, e.Type, e.Source, e.Time
		corr[i], caus[i], actors[i] = nonEmpty(e.CorrelationID), nonEmpty(e.CausationID), nonEmpty(e.Actor)
		if e.Data != nil {
			s := string(e.Data)
			data[i] = &s
		}
	}
	return []any{ids, streams, types, sources, times, corr, caus, actors, data}
}

// appendFreshArrays is appendFreshSQL's parameters written by w, the
// values appendFreshSlices's give; nil when an id is not a UUID in its
// canonical form (the schema's), which is left to PostgreSQL to read or
// refuse from appendFreshSlices's, as before.
func appendFreshArrays(w *arrayWriter, evs []events.Event) []any {
	w.begin(pgtype.UUIDOID)
	for _, e := range evs {
		if err := w.uuid(e.ID); err != nil {
			return nil
		}
	}
	w.end()
	// Each text column, its value an empty string for NULL when orNull.
	texts := func(orNull bool, cols ...func(e *events.Event) string) {
		for _, col := range cols {
			w.begin(pgtype.TextOID)
			for i := range evs {
				if v := col(&evs[i]); orNull {
					w.textOrNull(v)
				} else {
					w.text(v)
				}
			}
			w.end()
		}
	}
	texts(false,
		func(e *events.Event) string { return e.Subject },
		func(e *events.Event) string { return e.Type },
		func(e *events.Event) string { return e.Source })
	w.begin(pgtype.TimestamptzOID)
	for i := range evs {
		w.timestamptz(evs[i].Time)
	}
	w.end()
	texts(true,
		func(e *events.Event) string { return e.CorrelationID },
		func(e *events.Event) string { return e.CausationID },
		func(e *events.Event) string { return e.Actor })
	w.begin(pgtype.TextOID)
	for i := range evs {
		w.bytes(evs[i].Data)
	}
	w.end()
	arrays := w.arrays()
	args := make([]any, len(arrays))
	for i, a := range arrays {
		args[i] = a
	}
	return args
}

// appendAnyCareful is AppendAny for a batch that may hold events already
// logged, or one event twice: the ids are looked up first.
func (db *DB) appendAnyCareful(ctx context.Context, tx pgx.Tx, evs []events.Event) ([]Appended, error) {
	out, fresh, err := db.dedupe(ctx, tx, evs)
	if err != nil || len(fresh) == 0 {
		return out, err
	}
	counts := map[string]int64{}
	for _, e := range fresh {
		counts[e.Subject]++
	}
	names := make([]string, 0, len(counts))
	for s := range counts {
		names = append(names, s)
	}
	// A fixed lock order keeps concurrent batches from deadlocking.
	sort.Strings(names)
	ns := make([]int64, len(names))
	for i, s := range names {
		ns[i] = counts[s]
	}
	rows, err := tx.Query(ctx, `INSERT INTO streams (name, version)
		SELECT * FROM unnest($1::text[], $2::bigint[]) ORDER BY 1
		ON CONFLICT (name) DO UPDATE SET version = streams.version + excluded.version
		RETURNING name, version`, names, ns)
	if err != nil {
		return nil, wrap("append: bump stream versions", err)
	}
	next := map[string]int64{}
	for rows.Next() {
		var name string
		var top int64
		if err := rows.Scan(&name, &top); err != nil {
			return nil, wrap("append: bump stream versions", err)
		}
		next[name] = top - counts[name] + 1
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("append: bump stream versions", err)
	}
	versions := make([]int64, len(fresh))
	for i, e := range fresh {
		versions[i] = next[e.Subject]
		next[e.Subject]++
	}
	stored, err := db.insert(ctx, tx, fresh, versions)
	if err != nil {
		return nil, err
	}
	return merge(evs, out, stored), nil
}

// dedupe splits evs into those already logged (returned as Appended with
// Duplicate) and fresh ones, dropping repeats within evs itself (merge
// accounts for them).
func (db *DB) dedupe(ctx context.Context, tx pgx.Tx, evs []events.Event) ([]Appended, []events.Event, error) {
	if len(evs) == 0 {
		return nil, nil, nil
	}
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	// Planned for these ids on every call (QueryExecModeExec): a plan
	// cached while the log was small would scan the whole table forever.
	rows, err := tx.Query(ctx, `SELECT id::text, position, version FROM events WHERE id = ANY($1::uuid[])`,
		pgx.QueryExecModeExec, ids)
	if err != nil {
		return nil, nil, wrap("append: look up ids", err)
	}
	known := map[string]Appended{}
	for rows.Next() {
		var a Appended
		if err := rows.Scan(&a.ID, &a.Position, &a.Version); err != nil {
			return nil, nil, wrap("append: look up ids", err)
		}
		a.Duplicate = true
		known[a.ID] = a
	}
	if err := rows.Err(); err != nil {
		return nil, nil, wrap("append: look up ids", err)
	}
	var out []Appended
	var fresh []events.Event
	seen := make(map[string]bool, len(evs))
	for _, e := range evs {
		if a, ok := known[e.ID]; ok {
			out = append(out, a)
			continue
		}
		if seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		fresh = append(fresh, e)
	}
	return out, fresh, nil
}

func (db *DB) insert(ctx context.Context, tx pgx.Tx, evs []events.Event, versions []int64) ([]Stored, error) {
	n := len(evs)
	ids, streams, types, sources, corr, caus, actors, data := make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]*string, n), make([]*string, n), make([]*string, n), make([]string, n)
	times := make([]time.Time, n)
	for i, e := range evs {
		ids[i], streams[i], types[i], sources[i], times[i] = e.ID, e.Subject, e.Type, e.Source, e.Time
		corr[i], caus[i], actors[i] = nonEmpty(e.CorrelationID), nonEmpty(e.CausationID), nonEmpty(e.Actor)
		data[i] = string(e.Data)
	}
	rows, err := tx.Query(ctx, `INSERT INTO events
		(id, stream, version, type, source, time, correlation_id, causation_id, actor, data)
		SELECT id, stream, version, type, source, time, corr, caus, actor, data::jsonb
		FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[],
		            $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::text[])
		     AS t(id, stream, version, type, source, time, corr, caus, actor, data)
		RETURNING position, txid::text, recorded_at`,
		ids, streams, versions, types, sources, times, corr, caus, actors, data)
	if err != nil {
		return nil, wrap("append: insert events", err)
	}
	stored := make([]Stored, 0, n)
	for rows.Next() {
		i := len(stored)
		s := Stored{Event: evs[i], Version: versions[i]}
		var txid string
		if err := rows.Scan(&s.Position, &txid, &s.RecordedAt); err != nil {
			return nil, wrap("append: insert events", err)
		}
		s.Cursor.TxID, _ = strconv.ParseUint(txid, 10, 64)
		s.Cursor.Position = s.Position
		stored = append(stored, s)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("append: insert events", err)
	}
	if err := db.project(ctx, tx, stored); err != nil {
		return nil, err
	}
	return stored, nil
}

// merge returns the outcome of each of evs: dups (those already in the
// log), the events stored, and a duplicate of the stored one for each
// repeat of an event within evs.
func merge(evs []events.Event, dups []Appended, stored []Stored) []Appended {
	out := slices.Grow(dups, len(stored))
	for _, s := range stored {
		out = append(out, Appended{ID: s.ID, Position: s.Position, Version: s.Version})
	}
	if len(out) == len(evs) {
		return out
	}
	byID := make(map[string]Appended, len(stored))
	for _, a := range out[len(dups):] {
		byID[a.ID] = a
	}
	seen := make(map[string]bool, len(stored))
	for _, e := range evs {
		a, ok := byID[e.ID]
		if ok && seen[e.ID] {
			a.Duplicate = true
			out = append(out, a)
		}
		seen[e.ID] = true
	}
	return out
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

const selectStored = `SELECT position, txid::text AS txid_text, id::text, stream, version, type, source, time,
	recorded_at, coalesce(correlation_id, ''), coalesce(causation_id, ''), coalesce(actor, ''), data
	FROM events`

func scanStored(rows pgx.CollectableRow) (Stored, error) {
	var s Stored
	var txid string
	var data []byte
	err := rows.Scan(&s.Position, &txid, &s.ID, &s.Subject, &s.Version, &s.Type, &s.Source, &s.Time,
		&s.RecordedAt, &s.CorrelationID, &s.CausationID, &s.Actor, &data)
	if err != nil {
		return s, err
	}
	s.SpecVersion = events.SpecVersion
	s.DataContentType = "application/json"
	s.Data = json.RawMessage(data)
	s.Cursor.TxID, _ = strconv.ParseUint(txid, 10, 64)
	s.Cursor.Position = s.Position
	return s, nil
}

// ReadFilter narrows a read of the log.
type ReadFilter struct {
	Stream string   // only this stream
	Types  []string // only these types
}

// The advisory lock every transaction that may append holds from its first
// statement (InTx takes it), in shared mode so appenders never wait for
// each other: its two keys say "rackplane events appender".
const (
	appendLockClass  = 0x52504c4e // "RPLN"
	appendLockObject = 1
)

// appenderLocks selects, from pg_locks m, the marks of this database's
// running appenders ($1, $2: appendLockClass, appendLockObject).
const appenderLocks = `m.locktype = 'advisory' AND m.granted
	AND m.database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND m.classid = $1::oid AND m.objid = $2::oid AND m.objsubid = 2`

// horizonMode is how the log's readers find the transaction id below which
// they may read.
type horizonMode int

const (
	// horizonAppenders: the lowest id of this database's running
	// appenders (the mark InTx takes). What the region uses.
	horizonAppenders horizonMode = iota
	// horizonServerSnapshot: the server-wide snapshot xmin, which any
	// transaction of any database holds back. What the log used before;
	// kept so that the benchmark measures the mechanisms side by side.
	horizonServerSnapshot
	// horizonSerialized: appends take one exclusive lock, so they commit
	// in transaction id order and every committed event is readable. The
	// other mechanism DESIGN.md named; measured, not used.
	horizonSerialized
)

// horizon is the transaction id below which no event can still be
// committed: the lowest transaction id of this database's running
// appenders, or, with none, the next id to be handed out. Transactions of
// other databases on the same server, and those of this one that append
// nothing, do not hold it back: a long batch job elsewhere must not
// freeze provisioning.
//
// Why nothing is skipped: an appender takes the lock before it has an id,
// so one that is not listed here either ended before the scan of pg_locks
// (and the read that follows, in a later statement, sees its commit) or
// gets its id after this statement's snapshot, at or above its xmax.
func (db *DB) horizon(ctx context.Context) (uint64, error) {
	switch db.horizonMode {
	case horizonAppenders: // below
	case horizonSerialized:
		var xmax uint64
		err := db.pool.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&xmax)
		return xmax, wrap("log horizon", err)
	case horizonServerSnapshot:
		var xmin uint64
		err := db.pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint`).Scan(&xmin)
		return xmin, wrap("log horizon", err)
	}
	var xmax uint64
	var running []int64
	err := db.pool.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
			coalesce((SELECT array_agg(x.transactionid::text::bigint)
				FROM pg_locks m JOIN pg_locks x ON x.pid = m.pid
				WHERE `+appenderLocks+`
					AND x.locktype = 'transactionid' AND x.mode = 'ExclusiveLock' AND x.granted), '{}')`,
		appendLockClass, appendLockObject).Scan(&xmax, &running)
	if err != nil {
		return 0, wrap("log horizon", err)
	}
	h := xmax
	for _, x32 := range running {
		// pg_locks shows 32-bit ids; the log keeps 64-bit ones. A running
		// id is less than 2^31 behind the next one, so it is of xmax's
		// epoch, or of the one before when it is numerically above.
		x := xmax&^0xffffffff | uint64(x32)
		if x > xmax {
			x -= 1 << 32
		}
		h = min(h, x)
	}
	return h, nil
}

// ReadEvents returns up to limit events after cursor in follower order, and
// the cursor to continue from. Only events of transactions below the log's
// horizon are returned: an event that commits later can never land behind
// a cursor already handed out, so a follower sees every event exactly
// once.
func (db *DB) ReadEvents(ctx context.Context, after Cursor, limit int, f ReadFilter) ([]Stored, Cursor, error) {
	if limit <= 0 {
		limit = 100
	}
	h, err := db.horizon(ctx)
	if err != nil {
		return nil, after, err
	}
	q := selectStored + ` WHERE (txid, position) > ($1::text::xid8, $2::bigint)
		AND txid < $6::text::xid8
		AND ($3 = '' OR stream = $3)
		AND (cardinality($4::text[]) = 0 OR type = ANY($4::text[]))
		ORDER BY txid, position LIMIT $5`
	types := f.Types
	if types == nil {
		types = []string{}
	}
	rows, err := db.pool.Query(ctx, q, pgx.QueryExecModeExec, strconv.FormatUint(after.TxID, 10), after.Position, f.Stream, types, limit,
		strconv.FormatUint(h, 10))
	if err != nil {
		return nil, after, wrap("read events", err)
	}
	defer rows.Close()
	var out []Stored
	next := after
	for rows.Next() {
		s, err := scanStored(rows)
		if err != nil {
			return nil, after, wrap("read events", err)
		}
		out = append(out, s)
		next = s.Cursor
	}
	return out, next, wrap("read events", rows.Err())
}

// ReadLastEvents returns the newest limit events matching f, in log order,
// and the cursor of the newest, from which ReadEvents follows on: a reader
// that wants the tail of a long log does not page through all of it. Like
// ReadEvents it returns only events no open transaction can precede.
func (db *DB) ReadLastEvents(ctx context.Context, limit int, f ReadFilter) ([]Stored, Cursor, error) {
	if limit <= 0 {
		limit = 100
	}
	h, err := db.horizon(ctx)
	if err != nil {
		return nil, Cursor{}, err
	}
	q := selectStored + ` WHERE txid < $4::text::xid8
		AND ($1 = '' OR stream = $1)
		AND (cardinality($2::text[]) = 0 OR type = ANY($2::text[]))
		ORDER BY txid DESC, position DESC LIMIT $3`
	types := f.Types
	if types == nil {
		types = []string{}
	}
	rows, err := db.pool.Query(ctx, q, pgx.QueryExecModeExec, f.Stream, types, limit, strconv.FormatUint(h, 10))
	if err != nil {
		return nil, Cursor{}, wrap("read last events", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Stored, error) { return scanStored(row) })
	if err != nil {
		return nil, Cursor{}, wrap("read last events", err)
	}
	slices.Reverse(out)
	var next Cursor
	if len(out) > 0 {
		next = out[len(out)-1].Cursor
	}
	return out, next, nil
}

// AwaitSettled waits, at most max, until every append that was running
// when it was called has ended, so that a ReadEvents that follows returns
// every event committed before the call. An API client that has just
// caused an event expects to see it in the log; ReadEvents alone may hold
// it back while another append is still open. At max it stops waiting
// (the read that follows is still correct, only less recent), and says
// so: rackplane_region_event_log_settle_timeouts_total counts it, and a
// warning names the appender that held the log back.
func (db *DB) AwaitSettled(ctx context.Context, max time.Duration) error {
	var target uint64
	if err := db.pool.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&target); err != nil {
		return wrap("await settled", err)
	}
	wctx, cancel := context.WithTimeout(ctx, max)
	defer cancel()
	retry := backoff.New(backoff.Policy{Initial: time.Millisecond, Max: 50 * time.Millisecond})
	for {
		h, err := db.horizon(wctx)
		switch {
		case err == nil && h >= target:
			return nil
		case ctx.Err() != nil: // the caller has gone
			return nil
		case wctx.Err() != nil:
			db.settleTimedOut(ctx, max)
			return nil
		case err != nil:
			return wrap("await settled", err)
		}
		if !retry.Wait(wctx) {
			if ctx.Err() == nil {
				db.settleTimedOut(ctx, max)
			}
			return nil
		}
	}
}

// settleTimedOut counts and reports an AwaitSettled that gave up, naming
// the oldest running appender: an operator finds it in pg_stat_activity.
func (db *DB) settleTimedOut(ctx context.Context, waited time.Duration) {
	db.metrics.settleTimeouts.Inc()
	if !db.metrics.warnSettle.Allow() {
		return
	}
	var pid int32
	var age float64
	var app, state string
	err := db.pool.QueryRow(ctx, `SELECT a.pid, extract(epoch FROM now() - a.xact_start)::float8, a.application_name, coalesce(a.state, '')
		FROM pg_locks m JOIN pg_stat_activity a ON a.pid = m.pid
		WHERE `+appenderLocks+` ORDER BY a.xact_start LIMIT 1`, appendLockClass, appendLockObject).Scan(&pid, &age, &app, &state)
	if err != nil {
		db.log.Warn("event log readers held back by an append still in flight", "waited", waited, "err", err)
		return
	}
	db.log.Warn("event log readers held back by an append still in flight", "waited", waited,
		"appender_pid", pid, "appender_age_seconds", age, "appender_application", app, "appender_state", state)
}

// StreamVersion returns the current version of stream (0 when it has none).
func (db *DB) StreamVersion(ctx context.Context, q pgx.Tx, stream string) (int64, error) {
	var v int64
	err := q.QueryRow(ctx, `SELECT version FROM streams WHERE name = $1`, stream).Scan(&v)
	if err == pgx.ErrNoRows {
		return 0, nil
	}
	return v, wrap("stream version", err)
}

// LoadCursor returns where follower name has read up to.
func (db *DB) LoadCursor(ctx context.Context, name string) (Cursor, error) {
	var s string
	err := db.pool.QueryRow(ctx, `SELECT cursor FROM follower_cursors WHERE name = $1`, name).Scan(&s)
	if err == pgx.ErrNoRows {
		return Cursor{}, nil
	}
	if err != nil {
		return Cursor{}, wrap("load cursor", err)
	}
	return ParseCursor(s)
}

// SaveCursor records where follower name has read up to.
func (db *DB) SaveCursor(ctx context.Context, name string, c Cursor) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO follower_cursors (name, cursor, updated_at) VALUES ($1, $2, now())
		ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor, updated_at = now()`, name, c.String())
	return wrap("save cursor", err)
}

package postgres

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// binArray is a one-dimensional array parameter already in PostgreSQL's
// binary form (array_recv's): built by an arrayWriter in one buffer, and
// handed to pgx as it is, rather than as a Go slice pgx encodes element
// by element through interfaces (a boxed value and a plan lookup per
// element: most of the cost of sending an ingest batch). pgx sends it
// only on a connection that useBinArrays has prepared.
type binArray struct {
	elem uint32 // the element type's OID, which array_recv checks
	b    []byte
}

// useBinArrays reports whether binArray parameters can be sent on c, and
// makes sure pgx knows them. They can when c describes its statements
// (the default: the parameters' types are then the server's, and arrays
// go in binary); on a connection set to the simple protocol or to the
// Exec mode, pgx sends parameters as text or guesses their types from the
// Go values, and the caller passes plain slices instead.
func useBinArrays(c *pgx.Conn) bool {
	switch c.Config().DefaultQueryExecMode {
	case pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec:
	default:
		return false
	}
	m := c.TypeMap()
	// Memoised by pgx per type map: this costs a map lookup once the
	// connection has sent a binArray.
	if m.PlanEncode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, binArray{elem: pgtype.TextOID}) == nil {
		m.TryWrapEncodePlanFuncs = append([]pgtype.TryWrapEncodePlanFunc{tryWrapBinArray}, m.TryWrapEncodePlanFuncs...)
	}
	return true
}

// tryWrapBinArray has pgx send a binArray's bytes as they are. pgx wants
// the wrapper's next plan to be one it can make for the parameter's type:
// that of a slice of a Go type pgx encodes to the element type in binary,
// never used. (Were there none, pgx would go on to the text format and
// send the binary form as text, which PostgreSQL refuses.)
func tryWrapBinArray(value any) (pgtype.WrappedEncodePlanNextSetter, any, bool) {
	a, ok := value.(binArray)
	if !ok {
		return nil, nil, false
	}
	var next any
	switch a.elem {
	case pgtype.TimestamptzOID:
		next = []time.Time(nil)
	case pgtype.UUIDOID:
		next = []pgtype.UUID(nil)
	default:
		next = []string(nil)
	}
	return &binArrayPlan{}, next, true
}

type binArrayPlan struct{ next pgtype.EncodePlan }

func (p *binArrayPlan) SetNext(next pgtype.EncodePlan) { p.next = next }

func (p *binArrayPlan) Encode(value any, buf []byte) ([]byte, error) {
	return append(buf, value.(binArray).b...), nil
}

// arrayWriter writes one-dimensional arrays in PostgreSQL's binary form
// one after the other into one buffer: a header (dimensions, whether a
// NULL is in it, element type, length, lower bound 1), then each element
// as its length (-1 for NULL) and bytes.
type arrayWriter struct {
	b       []byte
	start   int // of the array being written
	n       int // its elements so far
	hasNull bool
	elem    uint32
	done    []binArray
	ends    []int // of each array of done, in b (b may move as it grows)
}

var arrayWriters = sync.Pool{New: func() any { return new(arrayWriter) }}

// release empties w and gives it back to arrayWriters, unless it grew
// past what a batch of rack events needs.
func (w *arrayWriter) release() {
	if cap(w.b) > 4<<20 {
		return
	}
	w.b, w.done, w.ends = w.b[:0], w.done[:0], w.ends[:0]
	arrayWriters.Put(w)
}

// begin starts an array of elements of type elem.
func (w *arrayWriter) begin(elem uint32) {
	w.start, w.n, w.hasNull, w.elem = len(w.b), 0, false, elem
	// ndim, has null, element type, length, lower bound: filled by end.
	w.b = append(w.b, make([]byte, 20)...)
}

// end finishes the array begun last; its binArray is the next of
// arrays().
func (w *arrayWriter) end() {
	h := w.b[w.start:]
	binary.BigEndian.PutUint32(h[0:], 1)
	if w.hasNull {
		binary.BigEndian.PutUint32(h[4:], 1)
	} else {
		binary.BigEndian.PutUint32(h[4:], 0)
	}
	binary.BigEndian.PutUint32(h[8:], w.elem)
	binary.BigEndian.PutUint32(h[12:], uint32(w.n))
	binary.BigEndian.PutUint32(h[16:], 1)
	w.done = append(w.done, binArray{elem: w.elem})
	w.ends = append(w.ends, len(w.b))
}

// arrays returns the arrays written, in order. They share the writer's
// buffer: they are good until it is reset.
func (w *arrayWriter) arrays() []binArray {
	from := 0
	for i := range w.done {
		w.done[i].b = w.b[from:w.ends[i]:w.ends[i]]
		from = w.ends[i]
	}
	return w.done
}

func (w *arrayWriter) text(s string) {
	w.b = binary.BigEndian.AppendUint32(w.b, uint32(len(s)))
	w.b = append(w.b, s...)
	w.n++
}

// bytes writes s, or NULL when it is nil, as pgx sends a nil []byte.
func (w *arrayWriter) bytes(s []byte) {
	if s == nil {
		w.null()
		return
	}
	w.b = binary.BigEndian.AppendUint32(w.b, uint32(len(s)))
	w.b = append(w.b, s...)
	w.n++
}

// textOrNull writes s, or NULL when it is empty.
func (w *arrayWriter) textOrNull(s string) {
	if s == "" {
		w.null()
		return
	}
	w.text(s)
}

func (w *arrayWriter) null() {
	w.b = binary.BigEndian.AppendUint32(w.b, 0xffffffff)
	w.hasNull = true
	w.n++
}

// microsecFromUnixEpochToY2K is PostgreSQL's epoch, 2000-01-01 UTC, in
// microseconds since the Unix epoch.
const microsecFromUnixEpochToY2K = 946684800 * 1000000

// timestamptz writes t as pgx does: microseconds since 2000, the
// nanoseconds below a microsecond dropped.
func (w *arrayWriter) timestamptz(t time.Time) {
	us := t.Unix()*1000000 + int64(t.Nanosecond())/1000 - microsecFromUnixEpochToY2K
	w.b = binary.BigEndian.AppendUint32(w.b, 8)
	w.b = binary.BigEndian.AppendUint64(w.b, uint64(us))
	w.n++
}

// uuid writes a UUID in its canonical text form (8-4-4-4-12 hex digits,
// either case) as its 16 bytes, as PostgreSQL reads it. Anything else is
// an error: PostgreSQL reads more forms than this one (braces, dashes
// elsewhere), and refuses others, and its word is kept on those.
func (w *arrayWriter) uuid(s string) error {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return fmt.Errorf("not a UUID in canonical form: %q", s)
	}
	var hexdigits [32]byte
	copy(hexdigits[0:8], s[0:8])
	copy(hexdigits[8:12], s[9:13])
	copy(hexdigits[12:16], s[14:18])
	copy(hexdigits[16:20], s[19:23])
	copy(hexdigits[20:32], s[24:])
	var u [16]byte
	if _, err := hex.Decode(u[:], hexdigits[:]); err != nil {
		return err
	}
	w.b = binary.BigEndian.AppendUint32(w.b, 16)
	w.b = append(w.b, u[:]...)
	w.n++
	return nil
}

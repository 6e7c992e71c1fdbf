package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"
)

// magic starts every segment file; a file without it is not a segment.
const magic = "RPJRNL01"

// headerLen is the length and CRC of a record; the time follows them and
// is counted in the length.
const headerLen = 8

// MaxRecord bounds the data of one record. Events are a few KiB; a length
// beyond this is corruption, not a record to allocate for.
const MaxRecord = 256 << 10

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errTorn is a record that is cut short or fails its CRC: the tail a crash
// leaves, or damage.
var errTorn = errors.New("torn or corrupt record")

// appendRecord appends the encoding of one record to b.
func appendRecord(b []byte, at time.Time, data []byte) []byte {
	start := len(b)
	b = binary.LittleEndian.AppendUint32(b, uint32(8+len(data)))
	b = append(b, 0, 0, 0, 0) // CRC, set below
	b = binary.LittleEndian.AppendUint64(b, uint64(at.UnixNano()))
	b = append(b, data...)
	crc := crc32.Update(0, castagnoli, b[start:start+4])
	crc = crc32.Update(crc, castagnoli, b[start+headerLen:])
	binary.LittleEndian.PutUint32(b[start+4:], crc)
	return b
}

// recordSize is the bytes a record of n data bytes takes on disk.
func recordSize(n int) int64 { return int64(headerLen + 8 + n) }

// readRecord reads the record at off of r, whose valid bytes end at limit.
// It returns the record's time and data and the offset after it; errTorn
// when the bytes there are not a whole record with a matching CRC, and
// io.EOF at limit.
func readRecord(r io.ReaderAt, off, limit int64) (at time.Time, data []byte, next int64, err error) {
	if off == limit {
		return time.Time{}, nil, off, io.EOF
	}
	if limit-off < headerLen+8 {
		return time.Time{}, nil, off, fmt.Errorf("%w: %d bytes at offset %d, shorter than a header", errTorn, limit-off, off)
	}
	var hdr [headerLen]byte
	if _, err := r.ReadAt(hdr[:], off); err != nil {
		return time.Time{}, nil, off, fmt.Errorf("read record header at %d: %w", off, err)
	}
	n := int64(binary.LittleEndian.Uint32(hdr[:4]))
	if n < 8 || n > MaxRecord+8 {
		return time.Time{}, nil, off, fmt.Errorf("%w: length %d at offset %d", errTorn, n, off)
	}
	if limit-off-headerLen < n {
		return time.Time{}, nil, off, fmt.Errorf("%w: %d bytes of %d at offset %d", errTorn, limit-off-headerLen, n, off)
	}
	body := make([]byte, n)
	if _, err := r.ReadAt(body, off+headerLen); err != nil {
		return time.Time{}, nil, off, fmt.Errorf("read record at %d: %w", off, err)
	}
	crc := crc32.Update(0, castagnoli, hdr[:4])
	crc = crc32.Update(crc, castagnoli, body)
	if crc != binary.LittleEndian.Uint32(hdr[4:]) {
		return time.Time{}, nil, off, fmt.Errorf("%w: CRC mismatch at offset %d", errTorn, off)
	}
	at = time.Unix(0, int64(binary.LittleEndian.Uint64(body[:8])))
	return at, body[8:], off + headerLen + n, nil
}

// scan reads the records of a segment of size bytes from the first after
// the magic, calling fn for each. It returns the end of the last whole
// record: size when the segment is intact, less when it ends in a torn
// record (err is then errTorn-wrapped) or lacks the magic.
func scan(r io.ReaderAt, size int64, fn func(at time.Time, data []byte, end int64)) (valid int64, err error) {
	var m [len(magic)]byte
	if size < int64(len(magic)) {
		return 0, fmt.Errorf("%w: %d bytes, shorter than the segment magic", errTorn, size)
	}
	if _, err := r.ReadAt(m[:], 0); err != nil {
		return 0, fmt.Errorf("read segment magic: %w", err)
	}
	if string(m[:]) != magic {
		return 0, fmt.Errorf("%w: not a journal segment (magic %q)", errTorn, m[:])
	}
	off := int64(len(magic))
	for {
		at, data, next, err := readRecord(r, off, size)
		if errors.Is(err, io.EOF) {
			return off, nil
		}
		if err != nil {
			return off, err
		}
		if fn != nil {
			fn(at, data, next)
		}
		off = next
	}
}

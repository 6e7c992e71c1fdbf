package reportqueue

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"
)

// Call is one queued region rpc call.
type Call struct {
	Seq    uint64 `json:"seq"`
	Method string `json:"method"`
	// Key is whom the call is for (a machine id): Config.MaxPerKey bounds
	// the calls of one key.
	Key string `json:"key,omitempty"`
	// Request is the call's body. On disk it is in Sealed instead when
	// the queue has a Sealer: an installer's report carries its token.
	Request  json.RawMessage `json:"request,omitempty"`
	Sealed   []byte          `json:"sealed,omitempty"`
	QueuedAt time.Time       `json:"queued_at"`
}

// A record is an 8-byte header, the payload's length and its CRC-32C
// (Castagnoli), both big-endian, then the payload: a Call as JSON.
const headerSize = 8

// MaxRecord bounds a record's payload: an install report is well under
// 2 KiB, and a length beyond this is a torn or corrupt header.
const MaxRecord = 64 << 10

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeRecord frames c as a record.
func encodeRecord(c Call) ([]byte, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	if len(payload) > MaxRecord {
		return nil, fmt.Errorf("call of %d bytes, more than a record holds (%d)", len(payload), MaxRecord)
	}
	b := make([]byte, headerSize, headerSize+len(payload))
	binary.BigEndian.PutUint32(b[0:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(b[4:8], crc32.Checksum(payload, castagnoli))
	return append(b, payload...), nil
}

// ErrTorn is wrapped by ReadRecords' error when the data ends in a record
// that is incomplete or fails its check.
var ErrTorn = errors.New("torn or corrupt record")

// ReadRecords reads records until the end of r. It returns the calls of
// the intact records and the length of the prefix they fill; when what
// follows is not an intact record, the error wraps ErrTorn (or is r's read
// error) and says where and why. Nothing after the first bad record is
// trusted: its length may be garbage, so the next record cannot be found.
func ReadRecords(r io.Reader) ([]Call, int64, error) {
	recs, good, err := readRecords(r)
	calls := make([]Call, len(recs))
	for i, rec := range recs {
		calls[i] = rec.Call
	}
	return calls, good, err
}

// record is a call read from or written to the file, with where its record
// ends there.
type record struct {
	Call
	end int64
}

func readRecords(r io.Reader) ([]record, int64, error) {
	br := bufio.NewReader(r)
	var calls []record
	var good int64
	var hdr [headerSize]byte
	for {
		n, err := io.ReadFull(br, hdr[:])
		if err == io.EOF {
			return calls, good, nil
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return calls, good, fmt.Errorf("%w at offset %d: header cut short after %d bytes", ErrTorn, good, n)
		}
		if err != nil {
			return calls, good, err
		}
		size := binary.BigEndian.Uint32(hdr[0:4])
		if size == 0 || size > MaxRecord {
			return calls, good, fmt.Errorf("%w at offset %d: length %d", ErrTorn, good, size)
		}
		payload := make([]byte, size)
		if n, err := io.ReadFull(br, payload); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF {
				return calls, good, fmt.Errorf("%w at offset %d: payload cut short after %d of %d bytes", ErrTorn, good, n, size)
			}
			return calls, good, err
		}
		if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(hdr[4:8]) {
			return calls, good, fmt.Errorf("%w at offset %d: checksum mismatch", ErrTorn, good)
		}
		var c Call
		if err := json.Unmarshal(payload, &c); err != nil || c.Method == "" {
			return calls, good, fmt.Errorf("%w at offset %d: not a call: %v", ErrTorn, good, err)
		}
		good += headerSize + int64(size)
		calls = append(calls, record{Call: c, end: good})
	}
}

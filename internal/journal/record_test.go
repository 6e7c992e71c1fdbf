package journal

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// FuzzRecordReader reads arbitrary bytes as a segment: scan never panics
// and never reads past them, and the records it returns, encoded again,
// are exactly the bytes it accepted: nothing is invented or altered.
func FuzzRecordReader(f *testing.F) {
	seg := []byte(magic)
	seg = appendRecord(seg, time.Unix(0, 1), []byte("first"))
	seg = appendRecord(seg, time.Unix(0, 2), []byte(`{"id":"x"}`))
	f.Add(seg)
	f.Add(append(append([]byte{}, seg...), 1, 2, 3))
	f.Add(seg[:len(seg)-1])
	f.Add([]byte(magic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		again := []byte(magic)
		valid, err := scan(bytes.NewReader(b), int64(len(b)), func(at time.Time, data []byte, end int64) {
			again = appendRecord(again, at, data)
			if int64(len(again)) != end {
				t.Fatalf("record ends at %d, its encoding at %d", end, len(again))
			}
		})
		if err != nil && !errors.Is(err, errTorn) {
			t.Fatalf("reading bytes in memory: %v", err)
		}
		// Intact means every byte was read; torn means some were not (or,
		// without the magic, none).
		if valid > int64(len(b)) || (err == nil && valid != int64(len(b))) || (err != nil && valid == int64(len(b)) && valid != 0) {
			t.Fatalf("valid %d of %d bytes, err %v", valid, len(b), err)
		}
		if valid >= int64(len(magic)) && !bytes.Equal(again, b[:valid]) {
			t.Fatalf("records read, encoded again, differ from the %d bytes accepted", valid)
		}
	})
}

package dhcp

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/rackplane/rackplane/events"
)

// LeaseFile is the name of the lease log under the rack's data directory.
const LeaseFile = "dhcp-leases.log"

// Lease states in the lease log.
const (
	StateBound    = "bound"    // Until is the lease's expiry (past it: expired)
	StateReleased = "released" // the client gave it back at Until
	StateDeclined = "declined" // a client found it in use; held until Until
)

// Record is the state of one address, one line of the lease log. The
// newest line of an address wins.
type Record struct {
	IP       netip.Addr `json:"ip"`
	MAC      string     `json:"mac,omitempty"`
	State    string     `json:"state"`
	Until    time.Time  `json:"until"`
	Hostname string     `json:"hostname,omitempty"`
}

// maxLine bounds one line of the lease log; a record is far shorter.
const maxLine = 1024

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeRecord returns the log line of r: the CRC-32C of the JSON, in
// hex, a space, the JSON, a newline. The checksum tells a torn or rotten
// line from a record.
func encodeRecord(r Record) []byte {
	j, _ := json.Marshal(r) // plain fields: cannot fail
	line := make([]byte, 0, len(j)+10)
	line = fmt.Appendf(line, "%08x ", crc32.Checksum(j, castagnoli))
	line = append(line, j...)
	return append(line, '\n')
}

// ParseRecord parses one line of the lease log (without its newline) and
// checks what it says: an IPv4 address, a canonical MAC where one is
// needed, a known state.
func ParseRecord(line []byte) (Record, error) {
	if len(line) > maxLine {
		return Record{}, errors.New("line too long")
	}
	sum, j, ok := bytes.Cut(line, []byte(" "))
	if !ok || len(sum) != 8 {
		return Record{}, errors.New("no checksum")
	}
	var want [4]byte
	if _, err := hex.Decode(want[:], sum); err != nil {
		return Record{}, errors.New("bad checksum")
	}
	if crc32.Checksum(j, castagnoli) != uint32(want[0])<<24|uint32(want[1])<<16|uint32(want[2])<<8|uint32(want[3]) {
		return Record{}, errors.New("checksum mismatch")
	}
	var r Record
	if err := json.Unmarshal(j, &r); err != nil {
		return Record{}, fmt.Errorf("not a record: %w", err)
	}
	if !r.IP.Is4() {
		return Record{}, fmt.Errorf("ip %s is not IPv4", r.IP)
	}
	switch r.State {
	case StateBound, StateReleased:
		mac, err := events.CanonicalMAC(r.MAC)
		if err != nil || mac != r.MAC {
			return Record{}, fmt.Errorf("mac %q is not canonical", r.MAC)
		}
	case StateDeclined:
		if r.MAC != "" {
			return Record{}, errors.New("a declined address has no MAC")
		}
	default:
		return Record{}, fmt.Errorf("state %q unknown", r.State)
	}
	if r.Hostname != "" && !validHostname(r.Hostname) {
		return Record{}, fmt.Errorf("hostname %q invalid", r.Hostname)
	}
	return r, nil
}

// ParseLeaseLog reads a lease log: the newest record of each address, and
// how many lines were unusable (a line torn by a crash is one).
func ParseLeaseLog(r io.Reader) (map[netip.Addr]Record, int, error) {
	out := map[netip.Addr]Record{}
	bad := 0
	br := bufio.NewReaderSize(r, 4*maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Far too long to be a record: skip to the next newline.
			bad++
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err == nil {
				continue
			}
		}
		if len(line) > 0 && err == nil {
			if rec, perr := ParseRecord(bytes.TrimSuffix(line, []byte("\n"))); perr == nil {
				out[rec.IP] = rec
			} else {
				bad++
			}
		} else if len(line) > 0 {
			bad++ // no newline: the last write was torn
		}
		if errors.Is(err, io.EOF) {
			return out, bad, nil
		}
		if err != nil {
			return out, bad, err
		}
	}
}

// leaseLog is the append-only lease file: one line per change, fsync'd
// before the change is answered, rewritten whole (compacted) at open and
// when it has grown well past the records it holds.
type leaseLog struct {
	path  string
	f     *os.File
	lines int // lines in the file
}

// openLeaseLog reads the log at path (missing is empty), compacts it and
// opens it for appending.
func openLeaseLog(path string) (*leaseLog, map[netip.Addr]Record, int, error) {
	recs := map[netip.Addr]Record{}
	bad := 0
	f, err := os.Open(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, nil, 0, err
	default:
		recs, bad, err = ParseLeaseLog(f)
		f.Close()
		if err != nil {
			return nil, nil, 0, fmt.Errorf("read %s: %w", path, err)
		}
	}
	l := &leaseLog{path: path}
	if err := l.compact(recs); err != nil {
		return nil, nil, 0, err
	}
	return l, recs, bad, nil
}

// compact writes recs to a new file and puts it in place of the log
// atomically (a crash leaves the old log or the new one), then appends to
// the new one.
func (l *leaseLog) compact(recs map[netip.Addr]Record) error {
	ips := make([]netip.Addr, 0, len(recs))
	for ip := range recs {
		ips = append(ips, ip)
	}
	sort.Slice(ips, func(i, j int) bool { return ips[i].Less(ips[j]) })
	var b bytes.Buffer
	for _, ip := range ips {
		b.Write(encodeRecord(recs[ip]))
	}
	tmp := l.path + ".tmp"
	if err := writeSynced(tmp, b.Bytes()); err != nil {
		return fmt.Errorf("compact lease log: %w", err)
	}
	if err := os.Rename(tmp, l.path); err != nil {
		return fmt.Errorf("compact lease log: %w", err)
	}
	if d, err := os.Open(filepath.Dir(l.path)); err == nil {
		_ = d.Sync() // the rename itself survives a crash
		d.Close()
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open lease log: %w", err)
	}
	if l.f != nil {
		l.f.Close()
	}
	l.f, l.lines = f, len(recs)
	return nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// append writes r and waits until it is on disk. live is how many
// records are current; when the file has grown to over twice that (and at
// least 1024 lines), it is compacted to all().
func (l *leaseLog) append(r Record, live int, all func() map[netip.Addr]Record) error {
	if _, err := l.f.Write(encodeRecord(r)); err != nil {
		return fmt.Errorf("append lease: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("sync lease log: %w", err)
	}
	l.lines++
	if l.lines > 1024 && l.lines > 2*live {
		return l.compact(all())
	}
	return nil
}

func (l *leaseLog) close() error {
	if l == nil || l.f == nil {
		return nil
	}
	return l.f.Close()
}

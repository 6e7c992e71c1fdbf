// Copyright (c) 2016 Dmitri Popov and the contributors in CONTRIBUTORS.
// Use of this source code is governed by the MIT License in LICENSE.
// Forked from github.com/pin/tftp/v3 v3.2.0: see README.md for what changed.

package tftp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pin/tftp/v3/netascii"
)

// OutgoingTransfer provides methods to set the outgoing transfer size and
// retrieve the remote address of the peer.
type OutgoingTransfer interface {
	// SetSize is used to set the outgoing transfer size (tsize option: RFC2349)
	// manually in a server write transfer handler.
	//
	// It is not necessary in most cases; when the io.Reader provided to
	// ReadFrom also satisfies io.Seeker (e.g. os.File) the transfer size will
	// be determined automatically. Seek will not be attempted when the
	// transfer size option is set with SetSize.
	//
	// The value provided will be used only if SetSize is called before ReadFrom
	// and only on in a server read handler.
	SetSize(n int64)

	// RemoteAddr returns the remote peer's IP address and port.
	RemoteAddr() net.UDPAddr
}

// ErrOptionsDeclined is what ReadFrom returns when the client answers the
// option acknowledgement with an ERROR of code 8 (RFC 2347), ending the
// transfer before any data: it wanted the options' values alone, as UEFI
// PXE firmware does to learn a file's size (tsize) before it fetches the
// file in a second request.
var ErrOptionsDeclined = errors.New("the client ended the transfer at option negotiation")

// ErrLastUnacknowledged is what ReadFrom returns when every block went
// out but the acknowledgement of the last never came, after every retry.
// The client most likely holds the whole file: boot loaders that start
// what they fetched often shut their network interface down right after
// the last block, and the ACK they queued is lost with it. The server
// cannot tell that from a client gone before the last block, so it is
// still an error, but one an operator can tell from a transfer cut short.
var ErrLastUnacknowledged = errors.New("every block was sent, but the client never acknowledged the last one")

// errCodeOptions is the ERROR code of a client declining the options.
const errCodeOptions = 8

type sender struct {
	conn           connection
	addr           *net.UDPAddr
	filename       string
	localIP        net.IP
	tid            int
	send           []byte // request, OACK and ERROR packets
	receive        []byte
	retry          *backoff
	timeout        time.Duration
	retries        int
	block          uint16
	blksize        int // negotiated block size (default 512)
	maxBlockLen    int
	mode           string
	opts           options
	hook           Hook
	startTime      time.Time
	datagramsSent  int
	datagramsAcked int
	// anticipate is how many blocks are sent ahead of the acknowledgements
	// of a client that did not ask for a windowsize (1: lock-step);
	// maxWindow the largest windowsize granted to a client that asked
	// (1 or less declines the option). windowsize is the one granted.
	anticipate uint
	maxWindow  uint
	windowsize int
	// oackResent tells the data phase that the client may acknowledge
	// the OACK more than once.
	oackResent bool
	// heard is set once the client has sent a packet from the address
	// and port of its request: until then the request may have come with
	// a forged source address, so the sender sends one packet at a time
	// (the OACK, or the first block, never a window), sends it again at
	// most unheardRetries times (when more than 0 and fewer than
	// retries), and sends no ERROR when it gives up.
	heard          bool
	unheardRetries int
	// rto is how long the data phase waits for an acknowledgement.
	rto retransmitTimer
}

// maxErrorMessage bounds the message of an ERROR the sender sends: a
// client needs the gist, and a long message is a larger reply to a
// request that may have been forged.
const maxErrorMessage = 64

// retriesNow is how many times the sender sends a packet again before it
// gives up: fewer while the client has not been heard from.
func (s *sender) retriesNow() int {
	if !s.heard && s.unheardRetries > 0 && s.unheardRetries < s.retries {
		return s.unheardRetries
	}
	return s.retries
}

func (s *sender) RemoteAddr() net.UDPAddr { return *s.addr }
func (s *sender) LocalIP() net.IP         { return s.localIP }

func (s *sender) SetSize(n int64) {
	if s.opts != nil {
		if _, ok := s.opts["tsize"]; ok {
			s.opts["tsize"] = strconv.FormatInt(n, 10)
		}
	}
}

func (s *sender) ReadFrom(r io.Reader) (n int64, err error) {
	if s.mode == "netascii" {
		r = netascii.ToReader(r)
	}
	defer func() {
		if s.conn != nil {
			s.conn.close()
			s.conn = nil
		}
	}()
	if s.opts != nil {
		// check that tsize is set
		if ts, ok := s.opts["tsize"]; ok {
			// check that tsize is not set with SetSize already
			i, err := strconv.ParseInt(ts, 10, 64)
			if err == nil && i == 0 {
				if rs, ok := r.(io.Seeker); ok {
					pos, err := rs.Seek(0, 1)
					if err != nil {
						return 0, err
					}
					size, err := rs.Seek(0, 2)
					if err != nil {
						return 0, err
					}
					s.opts["tsize"] = strconv.FormatInt(size, 10)
					_, err = rs.Seek(pos, 0)
					if err != nil {
						return 0, err
					}
				}
			}
		}
		err = s.sendOptions()
		if err != nil {
			if !errors.Is(err, ErrOptionsDeclined) { // else the client has ended it
				s.abort(err)
			}
			return 0, err
		}
	}
	if _, inMemory := r.(interface{ Len() int }); !inMemory {
		// A block is small next to what one read(2) can bring in: read
		// ahead, so that a file costs one system call per readAhead bytes
		// rather than one per block.
		br := readAheads.Get().(*bufio.Reader)
		br.Reset(r)
		defer func() {
			br.Reset(nil)
			readAheads.Put(br)
		}()
		r = br
	}
	return s.sendBlocks(r)
}

// readAhead is how much of a file a read transfer reads at a time: about
// ten blocks of the usual 1,468 bytes, little held per transfer next to
// its window.
const readAhead = 16 << 10

var readAheads = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readAhead) }}

// sendOptions answers the options of the request (RFC 2347) with an OACK
// of those the server takes: blksize (RFC 2348), tsize and timeout (RFC
// 2349), windowsize (RFC 7440). Option names are not case sensitive.
func (s *sender) sendOptions() error {
	acked := make(options)
	for name, value := range s.opts {
		switch strings.ToLower(name) {
		case "blksize":
			if n, err := s.setBlockSize(value); err == nil {
				acked["blksize"] = strconv.Itoa(n)
			}
		case "tsize":
			if value != "0" {
				acked["tsize"] = value
			}
		case "timeout":
			// Whole seconds, 1 to 255; the OACK must carry the value asked.
			if n, err := strconv.Atoi(value); err == nil && n >= 1 && n <= 255 {
				s.timeout = time.Duration(n) * time.Second
				acked["timeout"] = strconv.Itoa(n)
			}
		case "windowsize":
			if n, err := strconv.Atoi(value); err == nil && n >= 1 && n <= 65535 && s.maxWindow > 1 {
				s.windowsize = min(n, int(s.maxWindow))
				acked["windowsize"] = strconv.Itoa(s.windowsize)
			}
		}
	}
	s.opts = acked
	if len(s.opts) > 0 {
		m := packOACK(s.send, s.opts)
		s.block = 0
		sent := s.datagramsSent
		begin := time.Now()
		_, err := s.sendWithRetry(m)
		s.oackResent = s.datagramsSent-sent > 1
		if err != nil {
			return err
		}
		if !s.oackResent {
			// The first round trip: the ACK answers the one OACK sent.
			s.rto.sample(time.Since(begin))
		}
	}
	return nil
}

// setBlockSize takes a block size asked for by the peer, clamped to the
// largest this end allows, and returns it.
func (s *sender) setBlockSize(blksize string) (int, error) {
	n, err := strconv.Atoi(blksize)
	if err != nil {
		return 0, err
	}
	if n < 512 {
		return 0, fmt.Errorf("blksize too small: %d", n)
	}
	if n > 65464 {
		return 0, fmt.Errorf("blksize too large: %d", n)
	}
	if s.maxBlockLen > 0 && n > s.maxBlockLen {
		n = s.maxBlockLen
	}
	s.blksize = n
	return n, nil
}

func (s *sender) sendWithRetry(l int) (*net.UDPAddr, error) {
	s.retry.reset()
	for {
		addr, err := s.sendDatagram(l)
		if _, ok := err.(net.Error); ok && s.retry.count() < s.retriesNow() {
			s.retry.backoff()
			continue
		}
		return addr, err
	}
}

func (s *sender) sendDatagram(l int) (*net.UDPAddr, error) {
	err := s.conn.setDeadline(s.timeout)
	if err != nil {
		return nil, err
	}
	err = s.conn.sendTo(s.send[:l], s.addr)
	if err != nil {
		return nil, err
	}
	s.datagramsSent++
	for {
		n, addr, err := s.conn.readFrom(s.receive)
		if err != nil {
			return nil, err
		}

		if !addr.IP.Equal(s.addr.IP) || (s.tid != 0 && addr.Port != s.tid) {
			continue
		}
		p, err := parsePacket(s.receive[:n])
		if err != nil {
			continue
		}
		s.tid = addr.Port
		s.heard = true
		switch p := p.(type) {
		case pACK:
			if p.block() == s.block {
				s.datagramsAcked++
				return addr, nil
			}
		case pOACK:
			opts, err := unpackOACK(p)
			if s.block != 0 {
				continue
			}
			if err != nil {
				s.abort(err)
				return addr, err
			}
			for name, value := range opts {
				if name == "blksize" {
					s.setBlockSize(value)
				}
			}
			return addr, nil
		case pERROR:
			if s.block == 0 && p.code() == errCodeOptions {
				return nil, fmt.Errorf("%w: %s", ErrOptionsDeclined, p.message())
			}
			return nil, fmt.Errorf("sending block %d: code=%d, error: %s",
				s.block, p.code(), p.message())
		}
	}
}

func (s *sender) buildTransferStats() TransferStats {
	return TransferStats{
		RemoteAddr:              s.addr.IP,
		Filename:                s.filename,
		Tid:                     s.tid,
		SenderAnticipateEnabled: s.windowsize == 0 && s.anticipate > 1,
		WindowSize:              s.windowsize,
		Mode:                    s.mode,
		Opts:                    s.opts,
		Duration:                time.Since(s.startTime),
		DatagramsSent:           s.datagramsSent,
		DatagramsAcked:          s.datagramsAcked,
	}
}

func (s *sender) abort(err error) error {
	if s.conn == nil {
		return nil
	}

	defer func() {
		s.conn.close()
		s.conn = nil
	}()

	if s.hook != nil {
		s.hook.OnFailure(s.buildTransferStats(), err)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() && !s.heard {
		return nil // nobody who asked may be there to tell
	}
	msg := err.Error()
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	n := packERROR(s.send, 1, msg)
	err = s.conn.sendTo(s.send[:n], s.addr)
	if err != nil {
		return err
	}
	return nil
}

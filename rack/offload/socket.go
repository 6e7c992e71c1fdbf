package offload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/handoff"
)

// MaxMessage bounds an offload request: three short fields and a "$".
const MaxMessage = 4096

// SocketConfig configures a SocketServer.
type SocketConfig struct {
	// Path of the Unix socket (MAAS used /var/lib/maas/tftp-offload.sock).
	Path string
	// Timeout bounds one exchange (default 5s).
	Timeout time.Duration
}

// SocketServer speaks the MAAS TFTP offload protocol on a Unix socket.
//
// The front-end connects and writes
//
//	local-ip NUL remote-ip NUL file-name NUL "$"
//
// and reads, on success,
//
//	"-" NUL ("-" | "EPH") NUL path NUL "$"
//
// (EPH: serve the file, then delete it), or, on failure,
//
//	tftp-error-code NUL message NUL "$"
//
// after which the rack closes the connection. A message not ended by "$",
// or with anything after it, is dropped with the connection, as MAAS did.
type SocketServer struct {
	cfg     SocketConfig
	offload *Offload
	log     *slog.Logger

	mu sync.Mutex
	ln net.Listener
	wg sync.WaitGroup
}

// NewSocketServer returns a server; Listen and Run start it.
func NewSocketServer(cfg SocketConfig, o *Offload, log *slog.Logger) (*SocketServer, error) {
	if cfg.Path == "" {
		return nil, rackplane.Errorf(rackplane.EINVALID, "offload: SocketConfig.Path is required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	return &SocketServer{cfg: cfg, offload: o, log: log}, nil
}

// Listen creates the socket, replacing a stale one from an earlier run.
func (s *SocketServer) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return nil
	}
	if fi, err := os.Lstat(s.cfg.Path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(s.cfg.Path)
	}
	ln, err := net.Listen("unix", s.cfg.Path)
	if err != nil {
		return fmt.Errorf("offload: listen %s: %w", s.cfg.Path, err)
	}
	s.ln = ln
	return nil
}

// Run serves until ctx ends.
func (s *SocketServer) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer s.wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("offload: accept: %w", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(ctx, c)
		}()
	}
}

func (s *SocketServer) serve(ctx context.Context, c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(s.cfg.Timeout))
	msg, err := readMessage(c)
	if err != nil {
		s.offload.resolver.Reject(events.BootRequestRejected{Protocol: events.BootProtocolOffloadSocket, Reason: "protocol", Detail: err.Error()})
		s.log.Warn("offload message refused", "err", err)
		return
	}
	hctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	a, err := s.offload.Handoff(hctx, handoff.Request{Protocol: events.BootProtocolOffloadSocket, Local: msg.local, Remote: msg.remote, Name: msg.name})
	c.Write(encodeReply(a, err))
}

type message struct{ local, remote, name string }

// readMessage reads one request. It waits for the "$" after the third NUL
// (MAAS acted on the third NUL alone, and dropped a message whose "$" came
// in a later read).
func readMessage(r io.Reader) (message, error) {
	buf := make([]byte, 0, 512)
	chunk := make([]byte, 512)
	for {
		if parts := bytes.Split(buf, []byte{0}); len(parts) >= 4 && len(parts[3]) > 0 {
			return parseMessage(parts)
		}
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if len(buf) > MaxMessage {
			return message{}, fmt.Errorf("message longer than %d bytes", MaxMessage)
		}
		if err != nil {
			if parts := bytes.Split(buf, []byte{0}); len(parts) >= 4 {
				return parseMessage(parts)
			}
			return message{}, fmt.Errorf("incomplete message (%d bytes): %w", len(buf), err)
		}
	}
}

func parseMessage(parts [][]byte) (message, error) {
	if string(parts[3]) != "$" {
		return message{}, fmt.Errorf("message not terminated by $: %q", handoff.Printable(string(parts[3]), 64))
	}
	if len(parts) > 4 {
		return message{}, errors.New("message has trailing garbage")
	}
	return message{local: string(parts[0]), remote: string(parts[1]), name: string(parts[2])}, nil
}

// encodeReply writes the answer in the protocol's bytes.
func encodeReply(a Answer, err error) []byte {
	var b bytes.Buffer
	if err != nil {
		b.WriteString(strconv.Itoa(tftpErrorCode(err)))
		b.WriteByte(0)
		b.WriteString(rackplane.ErrorMessage(err))
		b.WriteString("\x00$")
		return b.Bytes()
	}
	b.WriteString("-\x00")
	if a.Ephemeral {
		b.WriteString("EPH\x00")
	} else {
		b.WriteString("-\x00")
	}
	b.WriteString(a.Path)
	b.WriteString("\x00$")
	return b.Bytes()
}

// tftpErrorCode maps a hand-off error to RFC 1350's codes: 1 file not
// found, 2 access violation, 0 anything else.
func tftpErrorCode(err error) int {
	switch rackplane.ErrorCode(err) {
	case rackplane.ENOTFOUND:
		return 1
	case rackplane.EFORBIDDEN:
		return 2
	default:
		return 0
	}
}

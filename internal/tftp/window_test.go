// Copyright (c) 2016 Dmitri Popov and the contributors in CONTRIBUTORS.
// Use of this source code is governed by the MIT License in LICENSE.
// Forked from github.com/pin/tftp/v3 v3.2.0: see README.md for what changed.

package tftp

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/tftp/tftptest"
)

func TestUnwrapBlock(t *testing.T) {
	tests := []struct {
		block  uint16
		lo, hi int64
		want   int64
		ok     bool
	}{
		{5, 4, 12, 5, true},
		{4, 4, 12, 4, true},
		{12, 4, 12, 12, true},
		{13, 4, 12, 0, false},
		{3, 4, 12, 0, false},
		{0, 65530, 65540, 65536, true},
		{65535, 65530, 65540, 65535, true},
		{4, 65530, 65540, 65540, true},
		{5, 65530, 65540, 0, false},
		{0, 0, 0, 0, true},
		{1, 0, 0, 0, false},
		{7, 1<<16 + 3, 1<<16 + 10, 1<<16 + 7, true},
		{1, 5, 4, 0, false},
	}
	for _, tt := range tests {
		got, ok := unwrapBlock(tt.block, tt.lo, tt.hi)
		if ok != tt.ok || ok && got != tt.want {
			t.Errorf("unwrapBlock(%d, %d, %d) = %d, %v; want %d, %v", tt.block, tt.lo, tt.hi, got, ok, tt.want, tt.ok)
		}
	}
}

// content is what the test server serves as "size-N": N bytes that
// differ from block to block.
func content(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/512)
	}
	return b
}

// windowServer serves content over loopback: windowsize granted up to
// window, and as many blocks sent ahead to clients that do not ask. A
// transfer that fails on the server fails the test, unless it timed out:
// when the final ACK goes missing, the client has the file and is gone;
// when a client asks again for a file after losing the OACK, the server
// starts a second transfer, which the client ignores.
func windowServer(t *testing.T, window uint, timeout time.Duration) (addr string) {
	t.Helper()
	var mu sync.Mutex
	var failed []string
	s := NewServer(func(name string, rf io.ReaderFrom) error {
		n, err := strconv.Atoi(strings.TrimPrefix(name, "size-"))
		if err != nil {
			return fmt.Errorf("no file %q", name)
		}
		rf.(OutgoingTransfer).SetSize(int64(n))
		var ne net.Error
		if _, err := rf.ReadFrom(bytes.NewReader(content(n))); err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			mu.Lock()
			failed = append(failed, name+": "+err.Error())
			mu.Unlock()
		}
		return nil
	}, nil)
	s.SetTimeout(timeout)
	s.SetRetries(5)
	s.SetAnticipate(window)
	s.SetWindowSize(window)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		s.Serve(conn)
		close(done)
	}()
	t.Cleanup(func() {
		s.Shutdown()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, f := range failed {
			t.Errorf("server: %s", f)
		}
	})
	return conn.LocalAddr().String()
}

func receive(addr string, name string, blksize, window int, timeout time.Duration) ([]byte, error) {
	c, err := NewClient(addr)
	if err != nil {
		return nil, err
	}
	c.SetBlockSize(blksize)
	c.SetWindowSize(window)
	c.SetTimeout(timeout)
	c.SetRetries(5)
	c.SetBackoff(func(int) time.Duration { return 0 })
	c.RequestTSize(true)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	_, err = wt.WriteTo(&buf)
	return buf.Bytes(), err
}

// TestTransfersUnderLoss fetches files of several sizes through a relay
// that loses packets both ways, with a windowsize negotiated and without
// (blocks sent ahead all the same), and checks every byte. Timeouts are
// short, so that a lost packet costs little time.
func TestTransfersUnderLoss(t *testing.T) {
	const timeout = 150 * time.Millisecond
	addr := windowServer(t, 8, timeout)
	losses := []tftptest.Loss{{Rate: 0.05, Seed: 11}, {Every: 50}}
	clients := []struct {
		name    string
		blksize int
		window  int
		sizes   []int
	}{
		{"windowsize-8", 512, 8, []int{0, 511, 512 * 8, 100000, 1<<20 + 7}},
		{"windowsize-4-blksize-1428", 1428, 4, []int{1428 * 4, 300001}},
		{"lock-step-client", 512, 0, []int{1, 512 * 8, 60000}},
	}
	for _, loss := range losses {
		for _, c := range clients {
			t.Run(fmt.Sprintf("%s/%s", strings.ReplaceAll(loss.String(), " ", "-"), c.name), func(t *testing.T) {
				t.Parallel()
				relay, err := tftptest.NewRelay(addr, loss)
				if err != nil {
					t.Fatal(err)
				}
				defer relay.Close()
				for _, size := range c.sizes {
					start := time.Now()
					got, err := receive(relay.Addr().String(), fmt.Sprintf("size-%d", size), c.blksize, c.window, timeout)
					if err != nil {
						t.Errorf("%d bytes: %v", size, err)
						continue
					}
					if sha256.Sum256(got) != sha256.Sum256(content(size)) {
						t.Errorf("%d bytes: got %d bytes that differ", size, len(got))
					}
					t.Logf("%d bytes in %s", size, time.Since(start).Round(time.Millisecond))
				}
				for _, d := range []tftptest.Direction{tftptest.ToServer, tftptest.ToClient} {
					f, dr := relay.Counts(d)
					if dr == 0 {
						t.Errorf("direction %d: no packet dropped of %d", d, f)
					}
				}
			})
		}
	}
}

// TestBlockNumbersRollOver sends more than 65536 blocks in windows: block
// numbers roll over to 0 and acknowledgements still count.
func TestBlockNumbersRollOver(t *testing.T) {
	addr := windowServer(t, 16, time.Second)
	size := 512*65536 + 1000
	got, err := receive(addr, fmt.Sprintf("size-%d", size), 512, 16, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content(size)) {
		t.Fatalf("got %d bytes that differ", len(got))
	}
}

// FuzzParsePacket feeds the packet parsers what a peer may send.
func FuzzParsePacket(f *testing.F) {
	f.Add([]byte("\x00\x01pxelinux.0\x00octet\x00blksize\x001468\x00windowsize\x008\x00"))
	f.Add([]byte("\x00\x06blksize\x00512\x00timeout\x00"))
	f.Add([]byte("\x00\x04\xff\xff"))
	f.Add([]byte("\x00\x05\x00\x01nope\x00"))
	f.Add([]byte("\x00\x03\x00\x01data"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePacket(b)
		if err != nil {
			return
		}
		switch p := p.(type) {
		case pRRQ:
			unpackRQ(p)
		case pWRQ:
			unpackRQ(p)
		case pOACK:
			unpackOACK(p)
		case pERROR:
			_, _ = p.code(), p.message()
		case pACK:
			_ = p.block()
		case pDATA:
			_ = p.block()
		}
	})
}

// TestLastAcknowledgementMissing tells the two ways a transfer can end
// without its final ACK: a client that got every block but whose last ACK
// never came (a loader that shut its NIC down right after the last block)
// and a client gone midway. Only the first is ErrLastUnacknowledged, so
// an operator can tell "most likely booted" from "cut short".
func TestLastAcknowledgementMissing(t *testing.T) {
	tests := []struct {
		name     string
		blocks   uint16 // the file's blocks, the last one short
		window   uint16 // windowsize asked for; 0 asks none
		ackUpTo  uint16 // the client acknowledges blocks up to this one
		wantLast bool
	}{
		{"every block but the last acknowledged", 5, 0, 4, true},
		{"gone after block 2", 5, 0, 2, false},
		// With a window the client acknowledges only each window's last
		// block: one lost ACK leaves the whole final window unacknowledged.
		{"window of 4, the final window unacknowledged", 7, 4, 4, true},
		{"window of 2, gone after block 2", 7, 2, 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size := int(tt.blocks)*512 - 100
			result := make(chan error, 1)
			s := NewServer(func(name string, rf io.ReaderFrom) error {
				_, err := rf.ReadFrom(bytes.NewReader(content(size)))
				result <- err
				return nil
			}, nil)
			s.SetTimeout(100 * time.Millisecond)
			s.SetRetries(2)
			if tt.window > 0 {
				s.SetWindowSize(uint(tt.window))
			}
			conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { s.Serve(conn); close(done) }()
			defer func() { s.Shutdown(); <-done }()

			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rrq := append([]byte{0, 1}, "f\x00octet\x00"...)
			if tt.window > 0 {
				rrq = append(rrq, "windowsize\x00"+strconv.Itoa(int(tt.window))+"\x00"...)
			}
			if _, err := c.WriteTo(rrq, conn.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			ack := func(block uint16, to net.Addr) {
				a := []byte{0, 4, 0, 0}
				binary.BigEndian.PutUint16(a[2:], block)
				c.WriteTo(a, to)
			}
			window := max(tt.window, 1)
			buf := make([]byte, 600)
			var got uint16
			for got < tt.blocks {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					t.Fatalf("after block %d: %v", got, err)
				}
				if n >= 2 && binary.BigEndian.Uint16(buf) == opOACK && got == 0 {
					ack(0, from)
					continue
				}
				if n < 4 || binary.BigEndian.Uint16(buf) != opDATA {
					t.Fatalf("not a DATA packet: % x", buf[:n])
				}
				block := binary.BigEndian.Uint16(buf[2:])
				if block != got+1 {
					continue // sent ahead or again
				}
				got = block
				if block <= tt.ackUpTo && (block%window == 0 || block == tt.blocks) {
					ack(block, from)
				}
				if block == tt.ackUpTo && !tt.wantLast {
					break
				}
			}
			select {
			case err := <-result:
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("the server ended with %v, want a timeout", err)
				}
				if errors.Is(err, ErrLastUnacknowledged) != tt.wantLast {
					t.Fatalf("the server ended with %q: ErrLastUnacknowledged %v, want %v", err, !tt.wantLast, tt.wantLast)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the server did not give up")
			}
		})
	}
}

// Copyright (c) 2016 Dmitri Popov and the contributors in CONTRIBUTORS.
// Use of this source code is governed by the MIT License in LICENSE.
// Forked from github.com/pin/tftp/v3 v3.2.0: see README.md for what changed.

package tftp

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/net/ipv6"

	"golang.org/x/net/ipv4"
)

type connectionError struct {
	error
	timeout   bool
	temporary bool
}

// Unwrap lets errors.Is see the sentinel errors a connectionError wraps,
// such as ErrLastUnacknowledged.
func (t *connectionError) Unwrap() error {
	return t.error
}

func (t *connectionError) Timeout() bool {
	return t.timeout
}

func (t *connectionError) Temporary() bool {
	return t.temporary
}

type connection interface {
	sendTo([]byte, *net.UDPAddr) error
	readFrom([]byte) (int, *net.UDPAddr, error)
	setDeadline(time.Duration) error
	close()
}

type connConnection struct {
	conn *net.UDPConn
}

type chanConnection struct {
	server        *Server
	channel       chan []byte
	srcAddr, addr *net.UDPAddr
	timeout       time.Duration
}

func (c *chanConnection) sendTo(data []byte, addr *net.UDPAddr) error {
	var err error
	c.server.mu.Lock()
	defer c.server.mu.Unlock()
	if conn, ok := c.server.conn.(*net.UDPConn); ok {
		srcAddr := c.srcAddr.IP.To4()
		var cmm []byte
		if srcAddr != nil {
			cm := &ipv4.ControlMessage{Src: srcAddr}
			cmm = cm.Marshal()
		} else {
			cm := &ipv6.ControlMessage{Src: c.srcAddr.IP}
			cmm = cm.Marshal()
		}
		_, _, err = conn.WriteMsgUDP(data, cmm, c.addr)
	} else {
		_, err = c.server.conn.WriteTo(data, addr)
	}
	return err
}

func (c *chanConnection) readFrom(buffer []byte) (int, *net.UDPAddr, error) {
	select {
	case data := <-c.channel:
		copy(buffer, data)
		return len(data), c.addr, nil
	case <-time.After(c.timeout):
		return 0, nil, makeError(c.addr.String())
	}
}

func (c *chanConnection) setDeadline(deadline time.Duration) error {
	c.timeout = deadline
	return nil
}

func (c *chanConnection) close() {
	c.server.mu.Lock()
	defer c.server.mu.Unlock()
	close(c.channel)
	delete(c.server.handlers, c.addr.String())
}

func (c *connConnection) sendTo(data []byte, addr *net.UDPAddr) error {
	_, err := c.conn.WriteToUDP(data, addr)
	return err
}

func makeError(addr string) net.Error {
	error := connectionError{
		timeout:   true,
		temporary: true,
	}
	error.error = fmt.Errorf("channel timeout: %v", addr)
	return &error
}

func (c *connConnection) readFrom(buffer []byte) (int, *net.UDPAddr, error) {
	return c.conn.ReadFromUDP(buffer)
}

func (c *connConnection) setDeadline(deadline time.Duration) error {
	return c.conn.SetReadDeadline(time.Now().Add(deadline))
}

func (c *connConnection) close() {
	c.conn.Close()
}

// peerConnection is a read transfer's socket on the server, connected to
// the client's address and port (its TID): the kernel drops datagrams
// from anyone else, and sends without looking up the route again for
// each block, which is most of what a block costs the server besides
// the copy.
//
// Its read deadline is moved lazily: the sender asks for a new deadline
// after every acknowledgement, and arming a timer each time costs more
// than the rare early wake-up it saves. An armed deadline is kept while
// the one asked for is later by less than a sixteenth of the wait; a
// read that times out before the deadline asked for is armed again and
// goes on, so the sender never sees a timeout earlier than it asked.
type peerConnection struct {
	conn  *net.UDPConn
	addr  *net.UDPAddr
	want  time.Time // the deadline the sender asked for
	armed time.Time // the deadline set on conn
}

func newPeerConnection(local, remote *net.UDPAddr) (*peerConnection, error) {
	conn, err := net.DialUDP("udp", local, remote)
	if err != nil {
		return nil, err
	}
	return &peerConnection{conn: conn, addr: remote}, nil
}

// A connected socket learns of the ICMP port unreachable that a client
// gone from its port draws, and reports it once, on the next read or
// write, as ECONNREFUSED. An unconnected socket never hears of it, and
// the transfer runs its course to the timeout: the report is passed over
// so that a transfer ends the same way on either. A boot ROM that has
// shut its interface down after the last block sends no ICMP anyway, and
// an ICMP error is as easy to forge as anything else on the network.
func (c *peerConnection) sendTo(data []byte, _ *net.UDPAddr) error {
	_, err := c.conn.Write(data)
	if errors.Is(err, syscall.ECONNREFUSED) {
		_, err = c.conn.Write(data)
	}
	return err
}

func (c *peerConnection) readFrom(buffer []byte) (int, *net.UDPAddr, error) {
	for {
		n, err := c.conn.Read(buffer)
		if errors.Is(err, syscall.ECONNREFUSED) {
			continue // see sendTo
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() && !c.want.IsZero() && time.Now().Before(c.want) {
			if err := c.conn.SetReadDeadline(c.want); err != nil {
				return 0, nil, err
			}
			c.armed = c.want
			continue
		}
		return n, c.addr, err
	}
}

func (c *peerConnection) setDeadline(d time.Duration) error {
	now := time.Now()
	c.want = now.Add(d)
	if !c.armed.IsZero() && !c.want.Before(c.armed) && c.want.Sub(c.armed) < d/16 {
		return nil
	}
	c.armed = c.want
	return c.conn.SetReadDeadline(c.want)
}

func (c *peerConnection) close() { c.conn.Close() }

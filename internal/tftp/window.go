// Copyright (c) 2016 Dmitri Popov and the contributors in CONTRIBUTORS.
// Use of this source code is governed by the MIT License in LICENSE.
// Forked from github.com/pin/tftp/v3 v3.2.0: see README.md for what changed.

package tftp

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"
)

// MaxWindow is the largest window a sender keeps in flight, whatever a
// client asks for: a sender holds that many blocks for resending.
const MaxWindow = 64

// maxBackoff bounds the wait after timeouts in a row, in timeouts.
const maxBackoff = 8

// sendBlocks sends what r holds in DATA blocks and returns once the last
// one is acknowledged.
//
// Up to a window of blocks is in flight: the windowsize the client asked
// for (RFC 7440), or else the sender's anticipate setting. The window
// starts at base, the oldest block not yet acknowledged, and next is the
// next block to send. Acknowledgements are cumulative: ACK n says the
// client holds every block up to n. On a timeout the sender goes back to
// base and sends the window again; it goes back the same way, without
// waiting, when an ACK shows a block was lost:
//
//   - A client that negotiated a windowsize acknowledges the last block
//     of each window, so an ACK for an earlier block says the one after
//     it went missing (RFC 7440, section 4).
//   - A client that did not acknowledges every block, so an ACK for an
//     earlier block is the normal course; only an ACK repeated, for the
//     block before base, says the client got a block other than base.
//
// Going back sends blocks again that may have arrived after all, and a
// client may answer each such duplicate with an ACK for the block it
// holds. Such answers must not send the window again in their turn (the
// "Sorcerer's Apprentice" syndrome of RFC 1350, a window at a time), so
// an ACK that is not news only counts as a loss when it is for a block
// above recover, the highest block sent before the sender last went
// back (copies of blocks up to recover were sent before anything above
// it, and reach the client before it can acknowledge a block above it),
// or when it comes half a timeout or more after the sender went back:
// then it is no answer to a copy but the client's own timer, and the
// copy it asks for again may have been lost as well.
//
// Until the client has sent anything back, the sender sends the first
// block alone, never a window, and gives up after fewer timeouts (see
// sender.heard): the request may have come from a forged address. A
// client that did not ask for a window may not be able to take one (a
// boot ROM with room for one packet): if a timeout comes before it has
// acknowledged its first window, sent in one go once it was heard from,
// the rest of its transfer is lock-step, as RFC 1350 has it. Once it has, it can take a window,
// and a timeout is a loss like any other: iPXE, which keeps blocks that
// come out of order, boots through 5% loss several times faster keeping
// its window than lock-step. Going back on a timeout sends again every
// block sent before, whatever the window: the client may hold more than
// it could acknowledge (its last ACKs lost), and a lock-step client such
// as curl answers only its last block or the next one, and ignores older
// ones.
//
// The wait for an acknowledgement is the timeout until the sender has
// measured the client's round trip, and then, when SetMinTimeout allows
// it, the round trip's (see retransmitTimer): a lost block or
// acknowledgement costs a few round trips, not the timeout. Such a
// retransmission ahead of the timeout counts against no retry, nor makes
// a client that did not ask for a window lock-step; each doubles the
// wait, up to the timeout. From there on timeouts in a row double the
// wait, up to maxBackoff times the timeout: a client that ignores blocks
// it already holds may restart its own timer on each (atftp does), and
// only says where it is when that timer runs out, so the sender must in
// the end fall quiet for longer than that. Once the final block is sent,
// going back sends the block such a client waits for, and the waits stay
// one timeout at the most: a client gone after the final block, its ACK
// lost, holds the transfer no longer than that.
func (s *sender) sendBlocks(r io.Reader) (n int64, err error) {
	blksize := s.blksize
	if blksize == 0 {
		blksize = blockLength
	}
	everyBlockAcked := s.windowsize == 0
	window := int64(s.windowsize)
	if everyBlockAcked {
		window = int64(max(s.anticipate, 1))
	}
	window = min(window, MaxWindow)
	// The last block of the first window, sent once the client has been
	// heard from: a client that acknowledges it all can take a window.
	var firstWindow int64
	// Blocks held for sending again, by block number modulo the window.
	held := make([][]byte, window)

	var (
		base     int64     = 1  // oldest block not acknowledged
		next     int64     = 1  // next block to send
		loaded   int64          // highest block read from r
		last     int64          // the final (short) block, once read
		sent     int64          // highest block sent
		recover  int64     = -1 // highest block sent before going back
		again    int64          // highest block to send again, whatever the window
		wentBack time.Time      // when the sender last went back
		timed    int64          // block whose round trip is being measured (0: none)
		timedAt  time.Time      // when it was sent
	)
	if s.oackResent {
		// The client may acknowledge each OACK it got.
		recover, wentBack = 0, time.Now()
	}
	timeouts := 0 // in a row, of the whole timeout or longer
	wait := s.rto.wait(s.timeout)
	deadline := time.Now().Add(wait)
	goBack := func() {
		recover = sent
		again = sent
		next = base
		wentBack = time.Now()
		deadline = time.Now().Add(wait)
		timed = 0 // an acknowledgement may now answer either copy
	}
	for {
		inFlight := window
		switch {
		case !s.heard:
			inFlight = 1 // the client may not be there: see sender.heard
		case firstWindow == 0:
			firstWindow = base - 1 + window
		}
		for (next < base+inFlight || next <= again) && (last == 0 || next <= last) {
			slot := next % int64(len(held))
			if next > loaded {
				if held[slot] == nil {
					held[slot] = make([]byte, 4+blksize)
				}
				b := held[slot][:4+blksize]
				binary.BigEndian.PutUint16(b[0:2], opDATA)
				binary.BigEndian.PutUint16(b[2:4], uint16(next))
				l, err := io.ReadFull(r, b[4:])
				n += int64(l)
				switch {
				case err == io.EOF || err == io.ErrUnexpectedEOF:
					last = next
				case err != nil:
					s.abort(err)
					return n, err
				}
				held[slot] = b[:4+l]
				loaded = next
			}
			if err := s.conn.sendTo(held[slot], s.addr); err != nil {
				s.abort(err)
				return n, err
			}
			if next > sent && timed == 0 {
				timed, timedAt = next, time.Now()
			}
			s.datagramsSent++
			sent = max(sent, next)
			next++
		}

		if err := s.conn.setDeadline(max(time.Until(deadline), time.Millisecond)); err != nil {
			s.abort(err)
			return n, err
		}
		c, addr, err := s.conn.readFrom(s.receive)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			// A wait shorter than the timeout, from the round trips
			// measured, is a retransmission ahead of the timeout: it
			// counts against no retry, and it says nothing yet of a
			// client that cannot take a window.
			full := wait >= s.timeout
			if full {
				timeouts++
			}
			if timeouts > s.retriesNow() {
				// A net.Error that times out, as upstream returns.
				err = &connectionError{error: fmt.Errorf("sending block %d: no acknowledgement after %d timeouts (the first %s): %w",
					uint16(base), timeouts, s.timeout, ne), timeout: true}
				if last != 0 && sent >= last {
					// Every block went out and no ACK came for the final
					// window. A loader that starts what it fetched
					// (pxelinux, iPXE) may shut its NIC down before that
					// ACK leaves, and a client with a window acknowledges
					// only its window's last block, so one lost ACK leaves
					// every block from base unacknowledged though the
					// client holds them all (UEFI PXE through 5% loss).
					// The operator is told the client most likely has the
					// whole file, not that it failed midway.
					which := fmt.Sprintf("block %d, the last", uint16(base))
					if base < last {
						which = fmt.Sprintf("blocks %d to %d, the last window", uint16(base), uint16(last))
					}
					err = &connectionError{error: fmt.Errorf("sending %s: %w after %d timeouts (the first %s): %s",
						which, ErrLastUnacknowledged, timeouts, s.timeout, ne), timeout: true}
				}
				s.abort(err)
				return n, err
			}
			if full && everyBlockAcked && firstWindow != 0 && base <= firstWindow {
				window = 1
			}
			if s.retry.handler != nil {
				s.retry.attempt = max(timeouts-1, 0)
				s.retry.backoff()
			}
			s.rto.backOff()
			switch {
			case !full:
				wait = s.rto.wait(s.timeout)
			case last == 0 || sent < last:
				wait = s.timeout * time.Duration(min(1<<timeouts, maxBackoff))
			default:
				wait = s.timeout
			}
			goBack()
			continue
		}
		if err != nil {
			s.abort(err)
			return n, err
		}
		if !addr.IP.Equal(s.addr.IP) || (s.tid != 0 && addr.Port != s.tid) {
			continue
		}
		p, err := parsePacket(s.receive[:c])
		if err != nil {
			continue
		}
		s.tid = addr.Port
		s.heard = true
		switch p := p.(type) {
		case pACK:
			acked, ok := unwrapBlock(p.block(), base-1, sent)
			if !ok {
				continue // older than the window, or never sent
			}
			news := acked >= base
			if news {
				s.datagramsAcked++
				base = acked + 1
				next = max(next, base)
				timeouts = 0
				if timed != 0 && acked >= timed {
					s.rto.sample(time.Since(timedAt))
					timed = 0
				}
				wait = s.rto.wait(s.timeout)
				deadline = time.Now().Add(wait)
				if last != 0 && base > last {
					if s.hook != nil {
						s.hook.OnSuccess(s.buildTransferStats())
					}
					return n, nil
				}
			}
			lost := !news && (acked > recover || time.Since(wentBack) >= s.timeout/2)
			if !everyBlockAcked && news && acked < next-1 {
				lost = true
			}
			if lost {
				goBack()
			}
		case pERROR:
			err := fmt.Errorf("sending block %d: code=%d, error: %s", uint16(base), p.code(), p.message())
			s.abort(err)
			return n, err
		}
	}
}

// unwrapBlock returns the block number in [lo, hi] that block is the low
// 16 bits of (block numbers roll over to 0), if there is one.
func unwrapBlock(block uint16, lo, hi int64) (int64, bool) {
	if hi < lo || hi-lo > 0xffff {
		return 0, false
	}
	n := lo + int64(block-uint16(lo))
	return n, n <= hi
}

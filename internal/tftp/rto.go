// Copyright (c) 2016 Dmitri Popov and the contributors in CONTRIBUTORS.
// Use of this source code is governed by the MIT License in LICENSE.
// Forked from github.com/pin/tftp/v3 v3.2.0: see README.md for what changed.

package tftp

import "time"

// retransmitTimer is how long a read transfer waits for an
// acknowledgement before it sends again, from the round trips it has
// measured, as TCP does (RFC 6298): the smoothed round trip plus four
// times its variation, at least floor, at most the timeout.
//
// The timeout (the server's, or the one the client asked for) is the
// longest a sender waits before it first sends again, as before; a lost
// block or acknowledgement no longer costs all of it when the client
// answers within milliseconds, as clients on a rack's network do. Until
// a round trip has been measured the wait is the timeout: in particular
// for a client not heard from yet, which may be a forged address, so
// that such a request draws no more, nor sooner, than before.
//
// Round trips are measured as Karn's algorithm has it: only on blocks
// sent once, since the acknowledgement of a block sent twice may answer
// either copy. Each timeout doubles the wait, and it stays doubled until
// a new measurement, so that a client slower than the floor is not sent
// every window twice.
type retransmitTimer struct {
	floor        time.Duration // 0: always the timeout
	srtt, rttvar time.Duration
	measured     bool
	doublings    uint
}

// wait is how long to wait for an acknowledgement, at most timeout.
func (r *retransmitTimer) wait(timeout time.Duration) time.Duration {
	if r.floor <= 0 || r.floor >= timeout || !r.measured {
		return timeout
	}
	d := max(r.srtt+4*r.rttvar, r.floor)
	for i := uint(0); i < r.doublings && d < timeout; i++ {
		d *= 2
	}
	return min(d, timeout)
}

// sample takes a round trip measured on a block sent once.
func (r *retransmitTimer) sample(rtt time.Duration) {
	if !r.measured {
		r.srtt, r.rttvar, r.measured = rtt, rtt/2, true
	} else {
		diff := r.srtt - rtt
		if diff < 0 {
			diff = -diff
		}
		r.rttvar = (3*r.rttvar + diff) / 4
		r.srtt = (7*r.srtt + rtt) / 8
	}
	r.doublings = 0
}

// backOff doubles the wait after a timeout, until the next sample.
func (r *retransmitTimer) backOff() {
	if r.doublings < 32 {
		r.doublings++
	}
}

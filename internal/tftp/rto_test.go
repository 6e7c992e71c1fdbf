// Copyright (c) 2016 Dmitri Popov and the contributors in CONTRIBUTORS.
// Use of this source code is governed by the MIT License in LICENSE.
// Forked from github.com/pin/tftp/v3 v3.2.0: see README.md for what changed.

package tftp

import (
	"testing"
	"time"
)

// TestRetransmitTimer follows the wait through the events of a transfer:
// the timeout until a round trip is measured, then the measured round
// trip with its variation, never below the floor nor above the timeout,
// doubled by timeouts until the next measurement.
func TestRetransmitTimer(t *testing.T) {
	const (
		floor   = 200 * time.Millisecond
		timeout = 2 * time.Second
		ms      = time.Millisecond
	)
	r := retransmitTimer{floor: floor}
	steps := []struct {
		name string
		do   func()
		want time.Duration
	}{
		{"nothing measured", nil, timeout},
		{"one round trip of 1ms", func() { r.sample(ms) }, floor},
		{"a timeout", r.backOff, 2 * floor},
		{"another", r.backOff, 4 * floor},
		{"two more: not beyond the timeout", func() { r.backOff(); r.backOff() }, timeout},
		{"a new measurement", func() { r.sample(ms) }, floor},
		// srtt 1ms and rttvar 0.375ms (3/4 of 0.5ms) before; after a
		// 500ms sample srtt is 63.375ms (7/8 of 1ms + 1/8 of 500ms) and
		// rttvar 125.03125ms (3/4 of 0.375ms + 1/4 of 499ms).
		{"a slow round trip", func() { r.sample(500 * ms) }, 63375*time.Microsecond + 4*125031250*time.Nanosecond},
	}
	for _, s := range steps {
		if s.do != nil {
			s.do()
		}
		if got := r.wait(timeout); got != s.want {
			t.Errorf("%s: wait %s, want %s", s.name, got, s.want)
		}
	}
	if got := (&retransmitTimer{}).wait(timeout); got != timeout {
		t.Errorf("no floor: wait %s, want the timeout", got)
	}
	off := retransmitTimer{floor: timeout}
	off.sample(ms)
	if got := off.wait(timeout); got != timeout {
		t.Errorf("floor at the timeout: wait %s, want the timeout", got)
	}
}

// Package tftp is the rack's read-only TFTP server. It serves whatever the
// hand-off decides (rack/handoff) through internal/tftp, a fork of
// github.com/pin/tftp/v3 whose sender survives loss with a window of
// blocks in flight. It takes the blksize, tsize, timeout and windowsize
// options, and reports every decision, transfer outcome and refused
// request (write requests, malformed packets) as an event.
package tftp

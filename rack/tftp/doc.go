// Package tftp is the rack's read-only TFTP server. It serves whatever the
// hand-off decides (rack/handoff) through github.com/pin/tftp/v3, with the
// blksize and tsize options, and reports every decision, transfer outcome
// and refused request (write requests, malformed packets) as an event.
package tftp

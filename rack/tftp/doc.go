// Package tftp is the rack's read-only TFTP server. It serves whatever the
// hand-off decides (rack/handoff) through internal/tftp, a fork of
// github.com/pin/tftp/v3 whose sender survives loss with a window of
// blocks in flight, and sends again after the client's measured round
// trip (at least Config.MinTimeout) rather than a whole timeout. It takes
// the blksize, tsize, timeout and windowsize options, and reports every
// decision, transfer outcome and refused request (write requests,
// malformed packets) as an event.
//
// TFTP runs over UDP, so a read request may come with a forged source
// address: the server would then send a file's blocks to a host that
// never asked. Until the client has answered from the address of its
// request, it gets one packet at a time (the first block or the option
// acknowledgement, never a window), sent again at most UnheardRetries
// times, and no error when the server gives up; errors are short. A
// forged request so draws no more bytes from rackd than from tftpd-hpa
// (TestAmplificationNoWorseThanTFTPDHPA measures both side by side:
// ×129 against ×193 for a read without options, where rackd sent ×1555
// before).
package tftp

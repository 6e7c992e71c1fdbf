# Sourced by the qmpvm scripts: a power driver written in shell, as an
# operator would write one, for a QEMU VM that was started paused (-S)
# with a QMP socket. POWER_ADDRESS is the socket's path; power on runs
# the VM, off stops and resets it (as a machine switched off and on again
# starts from its firmware).
set -eu
[ -S "$POWER_ADDRESS" ] || { echo "no QMP socket at $POWER_ADDRESS" >&2; exit 4; }

# qmp COMMAND...: each command after the handshake; prints the replies.
qmp() {
	{
		printf '{"execute":"qmp_capabilities"}\n'
		for c in "$@"; do printf '{"execute":"%s"}\n' "$c"; done
		sleep 0.5
	} | socat -t 2 - "UNIX-CONNECT:$POWER_ADDRESS" || exit 4
}

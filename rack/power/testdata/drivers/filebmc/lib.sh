# Sourced by the filebmc scripts. A BMC of this driver is the file named by
# POWER_ADDRESS: it holds on, off, or hang (the BMC never answers). Beside
# it: .password (when present, the password it takes), .boot (the next boot
# device), .log (one line per action: start and end, for the tests of
# order), .child (the pid a hanging BMC's script left running).
set -eu
state="$POWER_ADDRESS"
if [ -f "$state.password" ] && [ "$POWER_PASSWORD" != "$(cat "$state.password")" ]; then
	echo "BMC $POWER_ADDRESS refused user $POWER_USER with password $POWER_PASSWORD" >&2
	exit 3
fi
if [ "$(cat "$state")" = hang ]; then
	echo "BMC $POWER_ADDRESS is not answering"
	sleep 600 &
	echo $! > "$state.child"
	wait
fi
echo "start $POWER_ACTION" >> "$state.log"
if [ -n "${POWER_EXTRA_DELAY:-}" ]; then
	sleep "$POWER_EXTRA_DELAY"
fi
done_action() {
	echo "end $POWER_ACTION" >> "$state.log"
}

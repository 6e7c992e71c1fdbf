# Sourced by the shellbmc scripts, a power driver for the region's tests.
# A BMC of this driver is the file named by POWER_ADDRESS: it holds on or
# off. Beside it, .password is the password the BMC takes; a wrong one is
# refused with a message that quotes it, as careless BMCs do, so that the
# tests see the rack mask it.
set -eu
state="$POWER_ADDRESS"
if [ "$POWER_PASSWORD" != "$(cat "$state.password")" ]; then
	echo "BMC $POWER_ADDRESS refused user $POWER_USER with password $POWER_PASSWORD" >&2
	exit 3
fi
# A BMC with a .hang file beside it never answers.
if [ -e "$state.hang" ]; then
	sleep 600
fi

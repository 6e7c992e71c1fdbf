# Sourced by the ipbmc scripts, a power driver for the region's tests whose
# BMC address is an IP: the state lives in the file of extra "state".
set -eu
state="$POWER_EXTRA_STATE"

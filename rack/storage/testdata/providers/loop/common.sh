# Sourced by every script of the loop provider.
set -eu
: "${EXTP_DIR:?parameter dir is required}"
img="$EXTP_DIR/$VOL_NAME.img"
# loopdevs prints the loop devices backed by this volume's file.
loopdevs() {
	[ -e "$img" ] || return 0
	losetup --list --noheadings --output NAME --associated "$img"
}

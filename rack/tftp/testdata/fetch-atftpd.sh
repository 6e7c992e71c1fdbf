#!/bin/sh
# Extracts atftpd (Debian package atftpd) into $1 without installing it:
# atftpd conflicts with tftpd-hpa, and the benchmark runs both. Prints the
# path of the atftpd binary.
set -eu
dest=$1
if [ -x "$dest/usr/sbin/atftpd" ]; then
	echo "$dest/usr/sbin/atftpd"
	exit 0
fi
mkdir -p "$dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download atftpd >/dev/null 2>&1; then
	echo "cannot download Debian package atftpd (apt-get download atftpd failed; run apt-get update)" >&2
	exit 1
fi
dpkg-deb -x atftpd_*.deb "$dest"
echo "$dest/usr/sbin/atftpd"

#!/bin/sh
# Puts the kernel of Debian's linux-image-amd64 and its e1000 network
# driver module in directory $1 (kept between runs) and prints the kernel's
# path. Only those two files are extracted from the package: an initramfs
# needs no more to boot and reach the network.
set -eu
dest=$1
mkdir -p "$dest"
for k in "$dest"/vmlinuz-*; do
	if [ -f "$k" ] && [ -f "$dest/e1000.ko" ]; then
		echo "$k"
		exit 0
	fi
done
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
if [ -z "$pkg" ]; then
	echo "Debian package linux-image-amd64 is unknown to apt (run apt-get update)" >&2
	exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download "$pkg" >&2; then
	echo "cannot download Debian package $pkg (linux-image-amd64)" >&2
	exit 1
fi
dpkg-deb --fsys-tarfile "$pkg"_*.deb | tar -x --wildcards './boot/vmlinuz-*' './lib/modules/*/kernel/drivers/net/ethernet/intel/e1000/e1000.ko'
cp boot/vmlinuz-* "$dest/"
cp lib/modules/*/kernel/drivers/net/ethernet/intel/e1000/e1000.ko "$dest/e1000.ko"
ls "$dest"/vmlinuz-* | head -n 1

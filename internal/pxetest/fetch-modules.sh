#!/bin/sh
# Puts the modules of Debian's linux-image package of kernel $2 (the
# version of the vmlinuz-* Kernel fetched, such as 6.1.0-57-amd64) that a
# QEMU VM needs for its virtio disks and NICs, for efivarfs and for IPMI
# (its BMC) into directory $1/modules-ipmi-$2 (kept between runs), and
# prints that directory. The directory appears whole or not at all, so
# that concurrent runs never read a partial one; its name changes when
# the list grows, so that a directory of an older list is not taken as
# whole.
set -eu
dest=$1/modules-ipmi-$2
if [ -f "$dest/ipmi_si.ko" ]; then
	echo "$dest"
	exit 0
fi
pkg=linux-image-$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download "$pkg" >&2; then
	echo "cannot download Debian package $pkg (run apt-get update)" >&2
	exit 1
fi
m=./lib/modules/$2/kernel
dpkg-deb --fsys-tarfile "$pkg"_*.deb | tar -x \
	"$m/drivers/virtio/virtio.ko" "$m/drivers/virtio/virtio_ring.ko" \
	"$m/drivers/virtio/virtio_pci.ko" "$m/drivers/virtio/virtio_pci_modern_dev.ko" \
	"$m/drivers/virtio/virtio_pci_legacy_dev.ko" "$m/drivers/block/virtio_blk.ko" \
	"$m/net/core/failover.ko" "$m/drivers/net/net_failover.ko" "$m/drivers/net/virtio_net.ko" \
	"$m/fs/efivarfs/efivarfs.ko" \
	"$m/drivers/char/ipmi/ipmi_msghandler.ko" "$m/drivers/char/ipmi/ipmi_devintf.ko" \
	"$m/drivers/char/ipmi/ipmi_si.ko"
mkdir out
find lib -name '*.ko' -exec cp {} out/ \;
mkdir -p "$1"
mv out "$dest.tmp.$$"
mv -T "$dest.tmp.$$" "$dest" 2>/dev/null || rm -rf "$dest.tmp.$$"
echo "$dest"

#!/bin/sh
# /init of the disk image's initramfs: load the drivers of the disk and
# of the NICs, mount the root file system (label rootfs) read-write and
# hand over to its /sbin/init. It must never exit: the kernel panics if
# init does.
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
while read -r m; do
	[ -n "$m" ] && ! insmod "/lib/modules/$m" && echo "rackplane-initramfs: cannot load module $m"
done </etc/modules.order
# The disk's driver finds it as it loads; give it a few seconds.
i=0
while ! root=$(findfs LABEL=rootfs 2>/dev/null) && [ $i -lt 40 ]; do
	sleep 0.25
	i=$((i + 1))
done
mkdir -p /root
if [ -z "$root" ] || ! mount -t ext4 -o rw "$root" /root; then
	echo "rackplane-initramfs: no root file system with label rootfs; a shell:"
	exec sh
fi
mount --move /proc /root/proc
mount --move /sys /root/sys
mount --move /dev /root/dev
exec switch_root /root /sbin/init

#!/bin/sh
# /init of the Rackplane ephemeral environment: mount the kernel's file
# systems, load the drivers, bring up the boot NIC with DHCP, run the
# agent, power off. It must never exit: the kernel panics if init does.
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run /tmp
mount -t tmpfs tmpfs /run
exec </dev/console >/dev/console 2>&1
echo "rackplane-ephemeral: $(cat /etc/rackplane-ephemeral)"

cmdline=$(cat /proc/cmdline)
arg() {
	for w in $cmdline; do
		case "$w" in "$1"=*) echo "${w#*=}"; return;; esac
	done
}

while read -r m; do
	# efivarfs refuses to load where the firmware is not EFI.
	[ "$m" = efivarfs.ko ] && [ ! -d /sys/firmware/efi ] && continue
	# ipmi_si refuses to load where it finds no BMC (no ACPI, SMBIOS or
	# PCI IPMI device): a machine without one, not a failure.
	if [ "$m" = ipmi_si.ko ]; then
		insmod "/lib/modules/$m" 2>/dev/null || echo "rackplane-ephemeral: no IPMI system interface (BMC) found"
		continue
	fi
	[ -n "$m" ] && ! insmod "/lib/modules/$m" && echo "rackplane-ephemeral: cannot load module $m"
done </etc/modules.order
if [ -d /sys/firmware/efi/efivars ]; then
	mount -t efivarfs efivarfs /sys/firmware/efi/efivars
fi
# devtmpfs makes /dev/ipmi0 as ipmi_devintf registers the interface;
# should it not have (devtmpfs refused to mount), make the node from
# its numbers in sysfs, for the agent to ask the BMC through.
for d in /sys/class/ipmi/ipmi*; do
	[ -e "$d/dev" ] && [ ! -e "/dev/${d##*/}" ] && mknod "/dev/${d##*/}" c $(tr : ' ' <"$d/dev")
done

# The boot NIC: the one with the MAC of rackplane.mac= or of PXELINUX's
# BOOTIF=01-aa-bb-cc-dd-ee-ff, else the first there is. Drivers find
# their devices as they load, but give the NICs a few seconds to appear.
mac=$(arg rackplane.mac)
[ -z "$mac" ] && mac=$(arg BOOTIF | sed -e 's/^01-//' -e 's/-/:/g')
mac=$(echo "$mac" | tr 'A-F' 'a-f')
nic=
i=0
while [ -z "$nic" ] && [ $i -lt 20 ]; do
	first=
	for d in /sys/class/net/*; do
		n=${d##*/}
		[ "$n" = lo ] || [ ! -e "$d/address" ] && continue
		[ -z "$first" ] && first=$n
		[ -n "$mac" ] && [ "$(cat "$d/address")" = "$mac" ] && nic=$n
	done
	[ -z "$mac" ] && nic=$first
	[ -z "$nic" ] && sleep 0.5
	i=$((i + 1))
done
ip link set lo up
if [ -n "$nic" ]; then
	echo "rackplane-ephemeral: DHCP on $nic"
	ip link set "$nic" up
	udhcpc -i "$nic" -n -q -t 5 -T 2 -s /usr/share/udhcpc/default.script ||
		echo "rackplane-ephemeral: no DHCP lease on $nic"
else
	echo "rackplane-ephemeral: no NIC${mac:+ with MAC $mac}"
fi

# With rackplane.agent= the agent talks to the rack; without, it prints
# the inventory on the console, which is all a machine booted by hand
# can be asked for.
if [ -n "$(arg rackplane.agent)" ]; then
	rackplane-agent run
	rc=$?
	echo "rackplane-ephemeral: agent exited with status $rc"
	# A deploy boot's agent wrote the disk image and rebooted into it;
	# should its reboot not have happened, the machine reboots (not
	# powers off): its disk is what it boots next.
	if [ "$(arg rackplane.purpose)" = deploy ] && [ $rc -eq 0 ]; then
		echo "rackplane-ephemeral: rebooting into the installed system"
		sync
		reboot -f
		while :; do sleep 60; done
	fi
else
	echo "----- BEGIN RACKPLANE INVENTORY -----"
	rackplane-agent inventory
	rc=$?
	echo "----- END RACKPLANE INVENTORY -----"
	echo "rackplane-ephemeral: inventory exited with status $rc"
fi
echo "rackplane-ephemeral: powering off"
sync
poweroff -f
while :; do sleep 60; done

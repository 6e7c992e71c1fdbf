#!/bin/sh
# /sbin/init of the disk image's installed system: a small stand-in for
# cloud-init's NoCloud data source, which a real image would run. It
# reads the seed the deploying agent wrote into the root file system,
# brings the network up, fetches the instance's data from the seed's
# URL, prints it on the console, runs a user-data script, phones home
# and stays up. It must never exit: the kernel panics if init does.
export PATH=/bin:/sbin
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /run /tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1
say() { echo "rackplane: $*"; }

# The seed: nocloud-net (meta-data names seedfrom, the URL the rest is
# fetched from) or nocloud (the data is in the seed itself).
seed=
for d in /var/lib/cloud/seed/nocloud-net /var/lib/cloud/seed/nocloud; do
	[ -f "$d/meta-data" ] && seed=$d && break
done
data=/run/cloud
mkdir -p "$data"
[ -n "$seed" ] && cp "$seed"/* "$data"/ 2>/dev/null

# key prints the value of a top-level "key: value" of meta-data,
# without quotes: all of YAML a NoCloud meta-data needs here.
key() {
	sed -n "s/^$1:[[:space:]]*//p" "$data/meta-data" 2>/dev/null | head -n1 |
		sed -e 's/[[:space:]]*$//' -e "s/^[\"']//" -e "s/[\"']\$//"
}
iid=$(key instance-id)
host=$(key local-hostname)
seedfrom=$(key seedfrom)
# The last segment of a rack's metadata URL is the deployment's
# credential: the console (a BMC's serial log) never shows it.
shown=$(echo "$seedfrom" | sed 's|/[^/]*/$|/<credential>/|')
say "seed ${seed:-none} instance-id ${iid:-none} seedfrom ${shown:-none}"
if [ -n "$host" ]; then
	hostname "$host"
	echo "$host" >/etc/hostname
fi

# The NIC: the one whose MAC meta-data or network-config names, else the
# first with link, else the first.
mac=$(cat "$data/meta-data" "$data/network-config" 2>/dev/null |
	sed -n 's/^[[:space:]-]*mac\(_\)\{0,1\}address:[[:space:]]*["'"'"']\{0,1\}\([0-9A-Fa-f:]\{17\}\).*/\2/p' |
	head -n1 | tr 'A-F' 'a-f')
ip link set lo up
nics=
for d in /sys/class/net/*; do
	n=${d##*/}
	[ "$n" = lo ] && continue
	nics="$nics $n"
	ip link set "$n" up
done
nic=
i=0
while [ -z "$nic" ] && [ $i -lt 20 ]; do
	for n in $nics; do
		if [ -n "$mac" ]; then
			[ "$(cat /sys/class/net/$n/address)" = "$mac" ] && nic=$n
		elif [ "$(cat /sys/class/net/$n/carrier 2>/dev/null)" = 1 ]; then
			nic=$n
		fi
		[ -n "$nic" ] && break
	done
	[ -z "$nic" ] && sleep 0.5
	i=$((i + 1))
done
[ -z "$nic" ] && [ -z "$mac" ] && set -- $nics && nic=$1
if [ -n "$nic" ]; then
	say "DHCP on $nic"
	udhcpc -i "$nic" -n -q -t 10 -T 3 -s /usr/share/udhcpc/default.script || say "no DHCP lease on $nic"
else
	say "no NIC${mac:+ with MAC $mac}"
fi

# fetch URL FILE: a few tries, each bounded, as the network may take a
# moment after the lease. (Bounded by timeout: this busybox's wget -T
# crashes.)
fetch() {
	for i in 1 2 3 4 5; do
		timeout 30 wget -q -O "$2.part" "$1" && mv "$2.part" "$2" && return 0
		sleep 2
	done
	rm -f "$2.part"
	return 1
}
if [ -n "$seedfrom" ]; then
	for f in meta-data user-data vendor-data network-config; do
		fetch "$seedfrom$f" "$data/$f" || say "cannot fetch $shown$f"
	done
	# The fetched meta-data is the instance's own.
	iid=$(key instance-id)
	h=$(key local-hostname)
	[ -n "$h" ] && host=$h && hostname "$host" && echo "$host" >/etc/hostname
fi
for f in meta-data user-data vendor-data network-config; do
	[ -f "$data/$f" ] || continue
	echo "----- BEGIN RACKPLANE $f -----"
	case $f in
	# user-data and vendor-data may hold passwords and tokens.
	user-data | vendor-data) echo "($(wc -c <"$data/$f") bytes, not shown)" ;;
	*) cat "$data/$f" && echo ;;
	esac
	echo "----- END RACKPLANE $f -----"
done

# As cloud-init, run user-data and phone home once per instance.
done_for=$(cat /var/lib/cloud/data/instance-id 2>/dev/null)
if [ -n "$iid" ] && [ "$done_for" = "$iid" ]; then
	say "instance $iid has run its user-data already"
else
	if [ "$(head -c 2 "$data/user-data" 2>/dev/null)" = "#!" ]; then
		mkdir -p /var/lib/cloud/instance
		cp "$data/user-data" /var/lib/cloud/instance/user-data
		chmod 0700 /var/lib/cloud/instance/user-data
		say "running user-data"
		/var/lib/cloud/instance/user-data
		say "user-data exited with status $?"
	fi
	if [ -n "$seedfrom" ]; then
		# Instance ids and host names are URL-safe ([A-Za-z0-9.-]).
		ok=
		for i in 1 2 3 4 5; do
			timeout 30 wget -q -O /dev/null --post-data "instance_id=$iid&hostname=$host" "${seedfrom}phone-home" && ok=1 && break
			sleep 2
		done
		[ -n "$ok" ] && say "phoned home" || say "cannot phone home to ${shown}phone-home"
	fi
	mkdir -p /var/lib/cloud/data
	[ -n "$iid" ] && echo "$iid" >/var/lib/cloud/data/instance-id
fi
sync
say "installed system up"
while :; do
	setsid cttyhack sh || sh
	sleep 1
done

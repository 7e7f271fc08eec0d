#!/bin/busybox sh
# PID 1 of the guest's initramfs (ferrite-e2e): load the boot modules, mount this machine's root
# read-only over 9p under a tmpfs overlay, bring up the network, then switch root and run the
# command agent. Messages go to the serial console (console.log on the host).
B=/bin/busybox
export PATH=/bin

say() { echo "ferrite-init: [$($B cut -d' ' -f1 /proc/uptime)] $*" >/dev/console; }
die() {
	say "FATAL: $*"
	$B poweroff -f
	exit 1
}

$B mount -t devtmpfs dev /dev || die "mount devtmpfs"
$B mount -t proc proc /proc || die "mount proc"
$B mount -t sysfs sys /sys || die "mount sysfs"

say "loading modules"
for m in $($B cat /lib/modules/load-order); do
	$B insmod "/lib/modules/$m" || die "insmod $m"
done

# Parameters from the kernel command line.
hostnqn=
hostid=
for arg in $($B cat /proc/cmdline); do
	case "$arg" in
	ferrite.hostnqn=*) hostnqn=${arg#ferrite.hostnqn=} ;;
	ferrite.hostid=*) hostid=${arg#ferrite.hostid=} ;;
	esac
done

say "mounting the host root"
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /lower ||
	die "mount host root over 9p"
$B mount -t tmpfs -o mode=0755 overlay-upper /upper || die "mount tmpfs"
$B mkdir -p /upper/data /upper/work
$B mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /newroot ||
	die "mount overlay"

N=/newroot
$B mount -t proc proc $N/proc || die "mount proc in new root"
$B mount -t sysfs sys $N/sys || die "mount sysfs in new root"
$B mount -t devtmpfs dev $N/dev || die "mount devtmpfs in new root"
$B mkdir -p $N/dev/pts $N/dev/shm
$B mount -t devpts devpts $N/dev/pts
$B mount -t tmpfs tmpfs $N/dev/shm
$B mount -t tmpfs -o mode=0755 run $N/run || die "mount /run"
$B mount -t tmpfs -o mode=1777 tmp $N/tmp || die "mount /tmp"
$B mkdir -p $N/run/ferrite
$B cp /bin/busybox /agent.sh $N/run/ferrite/ || die "copy agent"

# The host's own NVMe host identity must not leak into the guest: each VM gets its own.
$B mkdir -p $N/etc/nvme
[ -n "$hostnqn" ] && echo "$hostnqn" >$N/etc/nvme/hostnqn
[ -n "$hostid" ] && echo "$hostid" >$N/etc/nvme/hostid
echo ferrite-guest >$N/etc/hostname
$B hostname ferrite-guest

# virtio-serial ports appear asynchronously: wait for both by name.
port() {
	for p in /sys/class/virtio-ports/*; do
		[ "$($B cat "$p/name" 2>/dev/null)" = "$1" ] && echo "/dev/${p##*/}" && return 0
	done
	return 1
}
say "waiting for devices"
i=0
while ! { agent=$(port ferrite.agent) && kmsg=$(port ferrite.kmsg); }; do
	i=$((i + 1))
	[ $i -gt 500 ] && die "virtio-serial ports did not appear"
	$B usleep 10000
done

i=0
while [ ! -e /sys/class/net/eth0 ]; do
	i=$((i + 1))
	[ $i -gt 500 ] && die "eth0 did not appear"
	$B usleep 10000
done
$B ip link set lo up
$B ip addr add 10.0.2.15/24 dev eth0 || die "configure eth0"
$B ip link set eth0 up || die "bring up eth0"
$B ip route add default via 10.0.2.2

say "switching root"
# Leave the initramfs' mounts behind; the console stays open on the old /dev.
$B umount /proc /sys
exec $B switch_root $N /run/ferrite/busybox sh /run/ferrite/agent.sh "$agent" "$kmsg"

# The guest's command agent (ferrite-e2e), PID 1 after switch_root, run by busybox sh.
# $1: the agent's virtio-serial port; $2: the port that streams the kernel log.
#
# Protocol (one request at a time, lines on the agent port):
#   host:  <id> <timeout-seconds> <base64 of a bash script>
#   guest: @@FERRITE-BEGIN <id>@@
#          <base64 of the script's stdout+stderr, wrapped>
#          @@FERRITE-END <id> <exit status | timeout | bad-request>@@
# Output is base64 so nothing a command prints can forge a marker; kernel messages never reach
# this port. When the host side closes the port, the agent powers the guest off.
B=/run/ferrite/busybox
W=/run/ferrite/work
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb LANG=C.UTF-8
cd /
$B mkdir -p $W

# Kernel log: /dev/kmsg yields every record regardless of the console log level. Reopening
# after an overrun starts over; the host drops records it has already seen (by sequence).
(
	while :; do
		$B cat /dev/kmsg
		$B sleep 1
	done
) >"$2" 2>/dev/null </dev/null &

exec 3<>"$1"
SH=/bin/bash
[ -x $SH ] || SH=/bin/sh

reply() {
	{
		echo "@@FERRITE-BEGIN $1@@"
		$B base64 $W/out
		echo "@@FERRITE-END $1 $2@@"
	} >&3
}

echo "ferrite-agent: [$($B cut -d' ' -f1 /proc/uptime)] ready" >/dev/console
echo "@@FERRITE-READY@@" >&3
while read -r id tmo payload <&3; do
	case "$id$tmo" in
	'' | *[!0-9A-Za-z]*) continue ;; # noise, not a request
	esac
	if ! echo "$payload" | $B base64 -d >$W/cmd 2>/dev/null; then
		echo "undecodable request" >$W/out
		reply "$id" bad-request
		continue
	fi
	$B rm -f $W/timed-out
	# Own session and process group, so a timeout can kill everything the command started.
	$B setsid $SH $W/cmd </dev/null >$W/out 2>&1 &
	pid=$!
	(
		trap 'kill $s 2>/dev/null; exit 0' TERM
		$B sleep "$tmo" &
		s=$!
		wait $s
		$B touch $W/timed-out
		$B kill -KILL -- -"$pid" 2>/dev/null
	) &
	watchdog=$!
	wait $pid
	rc=$?
	kill $watchdog 2>/dev/null
	wait $watchdog 2>/dev/null
	[ -e $W/timed-out ] && rc=timeout
	reply "$id" "$rc"
done

echo "ferrite-agent: host closed the agent port; powering off" >/dev/console
$B poweroff -f

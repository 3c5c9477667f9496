#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Case "hotremove": a filter holds no open reference of its device, so a
# tracked device can be removed and its driver unloaded, and the filter goes
# with it as on a patched kernel (removal of the disk, deletion of one
# partition, a re-read of the partition table). A device that comes back
# under the same number is not tracked by the old filter. A snapshot holds
# its devices open: their removal waits for the snapshot's destroy.
# shellcheck source=guest/common.sh
. /t/common.sh

# mark: wait_log looks at what the kernel logs from here on (a marker line
# in the kernel log: counting lines fails once the ring buffer is full).
marks=0
mark() {
	marks=$((marks + 1))
	echo "hotremove: mark $marks" >/dev/kmsg
}

# wait_log <text>: the kernel logs <text> after the mark within 10 s.
wait_log() {
	i=0
	while ! dmesg | sed -n "/hotremove: mark $marks\$/,\$p" | grep -qF "$1"; do
		[ $i -lt 100 ] || return 1
		sleep 0.1
		i=$((i + 1))
	done
}

# untracked <dev> <why>: no filter on <dev>.
untracked() {
	if out=$(bsctl cbt "$1" 2>&1); then
		fail "$1 tracked $2: $out"
	fi
}

write() {
	dd if=/dev/urandom of="$1" bs=64k count=16 seek="${2:-0}" oflag=direct \
		conv=notrunc 2>/dev/null || fail "write to $1"
}

# Only where zram is a module (the patched kernels build it in).
if modprobe zram num_devices=1 2>/dev/null && grep -q "^zram " /proc/modules; then
	echo "== zram: a tracked device removed with its driver"
	echo 64M >/sys/block/zram0/disksize || fail "zram0 disksize"
	devno=$(cat /sys/block/zram0/dev)
	write /dev/zram0
	bsctl attach /dev/zram0 || fail "attach zram0"
	write /dev/zram0 32
	bsctl cbt /dev/zram0 >/dev/null || fail "cbt zram0"
	out=$(bsctl snap /dev/vdc 262144 /dev/zram0) || fail "snapshot of zram0: $out"
	id=$(echo "$out" | sed -n 's/^ID //p')
	if modprobe -r zram 2>/dev/null; then
		fail "zram unloaded while a snapshot of zram0 was held"
	fi
	bsctl destroy "$id" || fail "destroy"
	write /dev/zram0 64
	mark
	modprobe -r zram || fail "modprobe -r zram with a filter on zram0 (the filter pins the driver)"
	! grep -q '^zram ' /proc/modules || fail "zram still loaded"
	wait_log "detached from $devno" || fail "no detach of $devno logged"
	modprobe zram num_devices=1 || fail "modprobe zram again"
	echo 64M >/sys/block/zram0/disksize || fail "zram0 disksize again"
	untracked /dev/zram0 "after its driver came back"
	write /dev/zram0
	echo "== zram: hot_remove of a tracked device"
	bsctl attach /dev/zram0 || fail "attach zram0 again"
	write /dev/zram0 16
	devno=$(cat /sys/block/zram0/dev)
	mark
	echo 0 >/sys/class/zram-control/hot_remove || fail "hot_remove of tracked zram0"
	wait_log "detached from $devno" || fail "no detach of $devno logged after hot_remove"
	modprobe -r zram || fail "modprobe -r zram after hot_remove"
else
	echo "note: no zram in this kernel, its part is not run here"
fi

echo "== loop partitions: deleted, re-read, removed with the disk"
modprobe loop 2>/dev/null || true
[ -e /dev/loop-control ] || fail "no loop driver"
loop=$(losetup -f) || fail "losetup -f"
n=${loop#/dev/loop}
losetup -P "$loop" /dev/vdc || fail "losetup -P $loop /dev/vdc"
partctl mbr "$loop" 2048 65536 67584 65536 || fail "partition table"
blockdev --rereadpt "$loop" || fail "re-read $loop"
i=0
while [ ! -b "${loop}p2" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
[ -b "${loop}p1" ] || fail "no partition 1 on $loop"
[ -b "${loop}p2" ] || fail "no partition 2 on $loop"

devno=$(cat "/sys/block/loop$n/loop${n}p1/dev")
bsctl attach "${loop}p1" || fail "attach ${loop}p1"
write "${loop}p1"
mark
partctl del "$loop" 1 || fail "delete tracked partition ${loop}p1 (the filter keeps it open)"
wait_log "detached from $devno" || fail "no detach of ${loop}p1 ($devno) logged"
partctl add "$loop" 1 2048 65536 || fail "add the partition again"
i=0
while [ ! -b "${loop}p1" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
untracked "${loop}p1" "after its deletion and a new partition 1"
write "${loop}p1"

bsctl attach "${loop}p1" || fail "attach the new ${loop}p1"
bsctl attach "${loop}p2" || fail "attach ${loop}p2"
write "${loop}p2"
dev1=$(cat "/sys/block/loop$n/loop${n}p1/dev")
dev2=$(cat "/sys/block/loop$n/loop${n}p2/dev")
mark
blockdev --rereadpt "$loop" || fail "re-read the partition table of $loop with tracked partitions"
wait_log "detached from $dev1" || fail "no detach of ${loop}p1 logged after the re-read"
wait_log "detached from $dev2" || fail "no detach of ${loop}p2 logged after the re-read"
i=0
while [ ! -b "${loop}p2" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
untracked "${loop}p1" "after the re-read"
untracked "${loop}p2" "after the re-read"

bsctl attach "$loop" || fail "attach $loop"
bsctl attach "${loop}p2" || fail "attach ${loop}p2 again"
write "$loop" 3000
write "${loop}p2"
devw=$(cat "/sys/block/loop$n/dev")
dev2=$(cat "/sys/block/loop$n/loop${n}p2/dev")
mark
losetup -d "$loop" || fail "losetup -d $loop"
partctl loopremove "$n" || fail "remove tracked $loop (LOOP_CTL_REMOVE)"
wait_log "detached from $devw" || fail "no detach of $loop ($devw) logged"
wait_log "detached from $dev2" || fail "no detach of ${loop}p2 ($dev2) logged"
[ ! -e "/sys/block/loop$n" ] || fail "$loop still in /sys/block"

#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Case "unload": an attached filter pins the module (as with the kernel's
# block-filter mechanism): rmmod is refused, cleanly, while an image is
# open, while a snapshot is held and while the filter is attached, and the
# snapshot and tracking keep working after each refusal.  Once destroyed
# and detached, rmmod succeeds with writes to the device in flight, and
# the module loads again with a new CBT generation, six times over.  No
# origin write fails and the origin reads back what is written.
# shellcheck source=guest/common.sh
. /t/common.sh
must_refuse() {
	if rmmod blksnap 2>/dev/null; then
		fail "rmmod succeeded $1"
	fi
	[ -e /dev/blksnap-control ] || fail "control device gone after the refused rmmod $1"
}

# Two writers keep bios in flight through every unload and load.
touch /tmp/writing
for w in 1 2; do
	(
		i=$w
		while [ -e /tmp/writing ]; do
			dd if=/dev/zero of=/dev/vda bs=64k count=8 seek=$((i * 37 % 3000)) \
				oflag=direct conv=notrunc 2>/dev/null || echo "WRITE-ERROR"
			i=$((i + 2))
		done
	) >/tmp/writer$w.log &
done

bsctl attach /dev/vda || fail "attach"
gen_prev=$(bsctl cbt /dev/vda | cut -d' ' -f1)
out=$(bsctl snap /dev/vdc 524288 /dev/vda) || fail "snapshot: $out"
id=$(echo "$out" | sed -n 's/^ID //p')
img=$(echo "$out" | sed -n 's/^IMAGE [^ ]* //p')
exec 3<"$img"
must_refuse "while $img was open"
exec 3<&-
must_refuse "while a snapshot was held"
dd if="$img" of=/dev/null bs=1M count=4 2>/dev/null || fail "image unreadable after the refused rmmod"
bsctl cbt /dev/vda >/dev/null || fail "tracking broken after the refused rmmod"
bsctl destroy "$id" || fail "destroy"
must_refuse "while the filter was attached"
bsctl cbt /dev/vda >/dev/null || fail "tracking broken after the refused rmmod"
bsctl detach /dev/vda || fail "detach"
rmmod blksnap || fail "rmmod after destroy and detach, writes in flight"
[ ! -e "/sys/block/${img#/dev/}" ] || fail "image ${img#/dev/} still in /sys/block after rmmod"

for cycle in 1 2 3 4 5 6; do
	bf_reload_module || fail "reload $cycle"
	bsctl attach /dev/vda || fail "attach after reload $cycle"
	gen=$(bsctl cbt /dev/vda | cut -d' ' -f1)
	[ "$gen" != "$gen_prev" ] || fail "same CBT generation $gen after reload $cycle"
	gen_prev=$gen
	out=$(bsctl snap /dev/vdc 524288 /dev/vda) || fail "snapshot after reload $cycle: $out"
	sleep 1
	bsctl destroy "$(echo "$out" | sed -n 's/^ID //p')" || fail "destroy in cycle $cycle"
	bsctl detach /dev/vda || fail "detach in cycle $cycle"
	rmmod blksnap || fail "rmmod in cycle $cycle"
done
rm -f /tmp/writing
wait
! grep -q WRITE-ERROR /tmp/writer1.log /tmp/writer2.log || fail "origin writes failed during unload/reload"

dd if=/dev/urandom of=/tmp/pattern bs=1M count=4 2>/dev/null
dd if=/tmp/pattern of=/dev/vda bs=1M seek=100 oflag=direct conv=notrunc 2>/dev/null || fail "write after unload"
dd if=/dev/vda of=/tmp/back bs=1M skip=100 count=4 iflag=direct 2>/dev/null || fail "read after unload"
cmp /tmp/pattern /tmp/back || fail "origin does not read back what was written after unload"
bf_reload_module || fail "final reload"

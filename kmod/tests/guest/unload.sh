#!/bin/sh
# Case "unload": rmmod is refused while an image is open (and nothing
# breaks); with no file open it succeeds even with a filter attached, a
# snapshot held and writes in flight, and removes the images; the module
# loads again with a new CBT generation, three times over; no origin write
# fails and the origin still reads back what is written.
# shellcheck source=guest/common.sh
. /t/common.sh
bsctl attach /dev/vda || fail "attach"
gen_first=$(bsctl cbt /dev/vda | cut -d' ' -f1)
out=$(bsctl snap /dev/vdc 524288 /dev/vda) || fail "snapshot: $out"
img=$(echo "$out" | sed -n 's/^IMAGE [^ ]* //p')
exec 3<"$img"
if rmmod blksnap 2>/dev/null; then
	fail "rmmod succeeded while $img was open"
fi
dd if="$img" of=/dev/null bs=1M count=4 2>/dev/null || fail "image unreadable after the refused rmmod"
bsctl cbt /dev/vda >/dev/null || fail "tracking broken after the refused rmmod"
exec 3<&-

touch /tmp/writing
(
	i=0
	while [ -e /tmp/writing ]; do
		dd if=/dev/urandom of=/dev/vda bs=64k count=8 seek=$((i * 37 % 3000)) \
			oflag=direct conv=notrunc 2>/dev/null || echo "WRITE-ERROR"
		i=$((i + 1))
	done
) >/tmp/writer.log &
writer=$!
sleep 1
rmmod blksnap || fail "rmmod with a snapshot held, writes in flight and no file open"
[ ! -e "/sys/block/${img#/dev/}" ] || fail "image ${img#/dev/} still in /sys/block after rmmod"
gen_prev=$gen_first
for cycle in 1 2 3; do
	bf_reload_module || fail "reload $cycle"
	bsctl attach /dev/vda || fail "attach after reload $cycle"
	gen=$(bsctl cbt /dev/vda | cut -d' ' -f1)
	[ "$gen" != "$gen_prev" ] || fail "same CBT generation $gen after reload $cycle"
	gen_prev=$gen
	out=$(bsctl snap /dev/vdc 524288 /dev/vda) || fail "snapshot after reload $cycle: $out"
	sleep 1
	rmmod blksnap || fail "rmmod in cycle $cycle"
done
rm -f /tmp/writing
wait $writer
! grep -q WRITE-ERROR /tmp/writer.log || fail "origin writes failed during unload/reload"

dd if=/dev/urandom of=/tmp/pattern bs=1M count=4 2>/dev/null
dd if=/tmp/pattern of=/dev/vda bs=1M seek=100 oflag=direct conv=notrunc 2>/dev/null || fail "write after unload"
dd if=/dev/vda of=/tmp/back bs=1M skip=100 count=4 iflag=direct 2>/dev/null || fail "read after unload"
cmp /tmp/pattern /tmp/back || fail "origin does not read back what was written after unload"
bf_reload_module || fail "final reload"

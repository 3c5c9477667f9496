#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Case "ext4": a snapshot of a mounted ext4 under a fio write load and
# metadata churn is a consistent filesystem: the image, copied out while
# the load goes on, passes "e2fsck -fy" with exit status 0 or 1, and the
# origin itself is clean after unmount.
# shellcheck source=guest/common.sh
. /t/common.sh
mkfs.ext4 -q -F /dev/vda || fail "mkfs.ext4 /dev/vda"
mount -t ext4 /dev/vda /mnt || fail "mount /dev/vda"
mkdir -p /mnt/load /mnt/meta
fio --thread --name=load --directory=/mnt/load --rw=randwrite --bs=4k --size=24M \
	--numjobs=2 --ioengine=psync --fsync=16 --time_based --runtime=20 \
	--group_reporting >/tmp/fio.out 2>&1 &
fio_pid=$!
touch /tmp/churn
(
	i=0
	while [ -e /tmp/churn ]; do
		d=/mnt/meta/$((i % 40))
		mkdir -p $d && echo "$i" >$d/f$i && rm -f /mnt/meta/$(((i + 20) % 40))/f$((i - 20))
		i=$((i + 1))
	done
) &
churn_pid=$!
sleep 6
out=$(bsctl snap /ds 262144 /dev/vda) || fail "snapshot during the load: $out"
id=$(echo "$out" | sed -n 's/^ID //p')
img=$(echo "$out" | sed -n 's/^IMAGE [^ ]* //p')
echo "snapshot $id image $img"
t0=$(date +%s)
dd if="$img" of=/dev/vdc bs=1M 2>/tmp/dd.err || fail "copying the image: $(cat /tmp/dd.err)"
echo "image copied out in $(($(date +%s) - t0)) s (256 MiB, load running)"
wait $fio_pid || fail "fio failed: $(tail -n 5 /tmp/fio.out)"
rm -f /tmp/churn
wait $churn_pid
grep -E 'WRITE: bw=' /tmp/fio.out
bsctl destroy "$id" || fail "destroy"
umount /mnt || fail "umount"
e2fsck -fy /dev/vdc >/tmp/fsck.out 2>&1
rc=$?
tail -n 3 /tmp/fsck.out
[ $rc -le 1 ] || fail "e2fsck -fy on the image copy: exit status $rc"
e2fsck -fn /dev/vda >/tmp/fsck2.out 2>&1 || fail "the origin is not clean after umount: $(tail -n 3 /tmp/fsck2.out)"
bsctl detach /dev/vda || fail "detach"
echo "image copy: e2fsck exit status $rc"

#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Case "boot": the machinery itself works (virtio disks, sizes as made by
# the host, the ext4 scratch filesystem mounted).
# shellcheck source=guest/common.sh
. /t/common.sh
for d in vda vdb vdc vdd; do
	[ -b /dev/$d ] || fail "/dev/$d missing"
done
sz=$(blockdev --getsize64 /dev/vda)
[ "$sz" -gt 0 ] || fail "/dev/vda has size $sz"
grep -q ' /ds ext4 ' /proc/mounts || fail "/ds is not mounted"
echo "vda=$sz vdb=$(blockdev --getsize64 /dev/vdb)"

#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Case "inflight": writes in flight across the take are in the take's image
# or in the next increment (cases/inflight.c). The origin is a dm-delay
# device over vda that holds every write back for 20 ms and passes reads at
# once, so that at each take several writes are marked in the CBT but not
# yet on the disk, and the copy-on-write read that follows the take sees
# the disk without them: what a slow or remote disk does on real hosts.
# shellcheck source=guest/common.sh
. /t/common.sh
takes=${1:-100}
if ! dmsetup targets 2>/dev/null | grep -q '^delay'; then
	modprobe dm_delay 2>/dev/null
fi
dmsetup targets | grep -q '^delay' || fail "no dm-delay target in this kernel"
sz=$(blockdev --getsz /dev/vda)
dmsetup create bf-slow --table "0 $sz delay /dev/vda 0 0 /dev/vda 0 20" ||
	fail "dmsetup create bf-slow"
dmsetup mknodes
rc=0
/t/inflight /dev/mapper/bf-slow /dev/vdc "$takes" || rc=$?
bsctl detach /dev/mapper/bf-slow 2>/dev/null
dmsetup remove bf-slow || echo "note: dmsetup remove bf-slow failed"
exit $rc

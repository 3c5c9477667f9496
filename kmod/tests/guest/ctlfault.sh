#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Case "ctlfault": a BLKFILTER_CTL or SNAPSHOT_COLLECT whose user buffer
# faults for seconds does not hold up the removal of another tracked device
# (cases/ctlfault.c). The buffers map a dm-delay device over vdc whose
# reads take 5 s.
# shellcheck source=guest/common.sh
. /t/common.sh
if ! dmsetup targets 2>/dev/null | grep -q '^delay'; then
	modprobe dm_delay 2>/dev/null
fi
dmsetup targets | grep -q '^delay' || fail "no dm-delay target in this kernel"
modprobe loop 2>/dev/null || true
[ -e /dev/loop-control ] || fail "no loop driver"
# 32 MiB of vdc: reads wait 5000 ms, writes pass at once.
dmsetup create bf-slowread --table "0 65536 delay /dev/vdc 0 5000 /dev/vdc 0 0" ||
	fail "dmsetup create bf-slowread"
dmsetup mknodes
rc=0
/t/ctlfault /dev/mapper/bf-slowread /dev/vdb /dev/vda /ds || rc=$?
bsctl detach /dev/vdb >/dev/null 2>&1
dmsetup remove bf-slowread || echo "note: dmsetup remove bf-slowread failed"
exit $rc

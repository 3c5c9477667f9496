#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Case "sector4k": image reads from a difference storage with 4 KiB logical
# blocks (zram) behind vda's 512-byte sectors (cases/sector4k.c).
# shellcheck source=guest/common.sh
. /t/common.sh
modprobe zram num_devices=1 2>/dev/null
[ -e /sys/block/zram0 ] || fail "no zram driver in this kernel"
echo 64M >/sys/block/zram0/disksize || fail "zram0 disksize"
rc=0
/t/sector4k /dev/vda /dev/zram0 || rc=$?
echo 1 >/sys/block/zram0/reset || echo "note: zram0 reset failed"
exit $rc

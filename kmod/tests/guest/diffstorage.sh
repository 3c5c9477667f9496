#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Case "diffstorage": file, directory and block device difference storages
# grow in steps of diff_storage_minimum within the limit; overflowing the
# limit corrupts the snapshot (event, -ENOSPC, EIO) and spares the origin.
# shellcheck source=guest/common.sh
. /t/common.sh
step=16384	# 8 MiB growth steps, so that 48 MiB of copies take several
BF_EXTRA_PARAMS="diff_storage_minimum=$step" bf_reload_module ||
	fail "cannot load blksnap with diff_storage_minimum=$step"
for storage in /ds/diff.file /ds /dev/vdc; do
	echo "== grow, storage $storage"
	/t/diffstorage grow /dev/vda "$storage" $step || exit 1
done
echo "== overflow"
/t/diffstorage overflow /dev/vda /ds/overflow.file $step || exit 1
rm -f /ds/diff.file /ds/overflow.file
echo "== a file system without fallocate (ext4 without extents)"
mkfs.ext4 -q -F -O ^extent,^64bit,^flex_bg,^has_journal /dev/vdc ||
	fail "mkfs.ext4 without extents"
mkdir -p /noext
mount -t ext4 /dev/vdc /noext || fail "mount /noext"
rc=0
/t/diffstorage nofallocate /dev/vda /noext $step || rc=$?
umount /noext
[ $rc -eq 0 ] || exit $rc
echo "== storages stacked on the origin (device mapper over vdb)"
sz=$(blockdev --getsz /dev/vdb)
dmsetup create bf-stack --table "0 $sz linear /dev/vdb 0" || fail "dmsetup create bf-stack"
dmsetup mknodes
/t/diffstorage stacked /dev/vdb /dev/mapper/bf-stack $step || rc=$?
if [ $rc -eq 0 ]; then
	mkfs.ext4 -q -F /dev/mapper/bf-stack || fail "mkfs.ext4 on bf-stack"
	mkdir -p /stack
	mount -t ext4 /dev/mapper/bf-stack /stack || fail "mount /stack"
	: >/stack/diff.file
	/t/diffstorage stacked /dev/vdb /stack/diff.file $step || rc=$?
	umount /stack
fi
dmsetup remove bf-stack || echo "note: dmsetup remove bf-stack failed"
[ $rc -eq 0 ] || exit $rc

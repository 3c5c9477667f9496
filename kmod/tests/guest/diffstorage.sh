#!/bin/sh
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

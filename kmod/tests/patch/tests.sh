#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# In-VM tests of the block device filter patches (run by the initramfs
# init of kmod/tests/patch/run).  Disks: vda (partitions 1 and 2), vdb
# (partition 1, unplugged during the tests).  Prints one PASS/FAIL line per
# check and "N passed, N failed" at the end.

pass=0
fail=0
F=testfilt
SYS=/sys/module/testfilt/parameters

check() { # name expected actual
	if [ "$2" = "$3" ]; then
		pass=$((pass + 1))
		echo "PASS $1"
	else
		fail=$((fail + 1))
		echo "FAIL $1: expected '$2', got '$3'"
	fi
}

filter_of() { # sysfs dir
	if [ -e "$1/filter" ]; then cat "$1/filter"; else echo "<no attribute>"; fi
}

field() { # stats line, field name
	for kv in $1; do
		case $kv in "$2"=*) echo "${kv#*=}";; esac
	done
}

stats() { bftest stats "$1" "$F"; }

if [ -r /proc/lockdep_stats ]; then
	echo "INFO lockdep is on: $(grep -m1 'lock-classes' /proc/lockdep_stats)"
else
	echo "INFO lockdep is off in this kernel"
fi

# --- the attribute exists and is empty without a filter
check "disk has an empty filter attribute" "" "$(filter_of /sys/block/vda)"
check "partition has an empty filter attribute" "" "$(filter_of /sys/block/vda/vda1)"

# --- errors before the module is loaded
check "attach of an unknown filter gives ENOENT" ENOENT "$(bftest attach /dev/vda1 $F)"
check "detach without a filter gives ENOENT" ENOENT "$(bftest detach /dev/vda1 $F)"
check "ctl without a filter gives ENOENT" ENOENT "$(bftest reset /dev/vda1 $F)"

insmod /testfilt.ko || echo "FAIL insmod testfilt.ko"
check "a name without NUL gives EINVAL" EINVAL "$(bftest badname /dev/vda1)"
check "attach options give EINVAL" EINVAL "$(bftest attachopt /dev/vda1 $F)"
check "attach of another unknown name gives ENOENT" ENOENT "$(bftest attach /dev/vda1 nosuchfilter)"
check "attach without CAP_SYS_ADMIN gives EACCES" EACCES "$(bftest unpriv /dev/vda1 $F)"
check "failed attaches left no filter" "" "$(filter_of /sys/block/vda/vda1)"

# --- attach to a partition
check "attach to a partition" OK "$(bftest attach /dev/vda1 $F)"
check "partition attribute shows the filter" "$F" "$(filter_of /sys/block/vda/vda1)"
check "disk attribute stays empty" "" "$(filter_of /sys/block/vda)"
check "other partition attribute stays empty" "" "$(filter_of /sys/block/vda/vda2)"
check "one instance" 1 "$(cat $SYS/instances)"
check "second attach gives EALREADY" EALREADY "$(bftest attach /dev/vda1 $F)"
check "attach of another filter gives EBUSY" EBUSY "$(bftest attach /dev/vda1 testfilt2)"
check "detach of a filter not attached gives ENOENT" ENOENT "$(bftest detach /dev/vda1 testfilt2)"
check "ctl to a filter not attached gives ENOENT" ENOENT "$(bftest reset /dev/vda1 testfilt2)"
check "still one instance" 1 "$(cat $SYS/instances)"
check "module is in use while attached" 1 "$(grep '^testfilt ' /proc/modules | cut -d' ' -f3)"
rmmod testfilt 2>/dev/null
check "rmmod fails while attached" 1 "$(grep -c '^testfilt ' /proc/modules)"

# --- the hook sees the writes, once each, with partition-relative sectors
check "ctl reset" OK "$(bftest reset /dev/vda1 $F)"
check "ctl with a small buffer reports the size needed" "ENOSPC len=56" "$(bftest statssmall /dev/vda1 $F)"
check "write 8 blocks to the partition" OK "$(bftest write /dev/vda1 16 8 0x11)"
s=$(stats /dev/vda1)
check "hook counted 8 write bios" 8 "$(field "$s" writes)"
check "hook saw the sector relative to the partition" $((23 * 8)) "$(field "$s" last)"
check "hook saw the flush" 1 "$(field "$s" flushes)"
check "data written through the hook" OK "$(bftest verify /dev/vda1 16 8 0x11)"
check "writes to the other partition are not seen" OK "$(bftest write /dev/vda2 0 4 0x22)"
check "counter unchanged by the other partition" 8 "$(field "$(stats /dev/vda1)" writes)"

# --- the filter completes bios itself
check "mode fail-writes" OK "$(bftest mode /dev/vda1 $F 1)"
check "write fails with the filter's error" EIO "$(bftest write /dev/vda1 16 1 0x33)"
check "failed write did not reach the disk" OK "$(bftest verify /dev/vda1 16 8 0x11)"
s=$(stats /dev/vda1)
check "filter failed one bio" 1 "$(field "$s" failed)"

# --- the filter takes bios and resubmits them: seen once
check "mode defer" OK "$(bftest mode /dev/vda1 $F 2)"
check "reset" OK "$(bftest reset /dev/vda1 $F)"
check "write 16 blocks through deferral" OK "$(bftest write /dev/vda1 100 16 0x44)"
s=$(stats /dev/vda1)
check "resubmitted bios are seen once" 16 "$(field "$s" writes)"
check "the 16 writes and the flush were deferred" 17 "$(field "$s" deferred)"
check "deferred writes reached the disk" OK "$(bftest verify /dev/vda1 100 16 0x44)"
check "mode pass" OK "$(bftest mode /dev/vda1 $F 0)"
check "bad mode gives EINVAL" EINVAL "$(bftest mode /dev/vda1 $F 9)"

# --- a filter may refuse a detach that user space asks for
check "mode pin" OK "$(bftest mode /dev/vda1 $F 3)"
check "refused detach gives the filter's EBUSY" EBUSY "$(bftest detach /dev/vda1 $F)"
check "filter stays after a refused detach" "$F" "$(filter_of /sys/block/vda/vda1)"
check "mode pass again" OK "$(bftest mode /dev/vda1 $F 0)"

# --- detach
check "detach" OK "$(bftest detach /dev/vda1 $F)"
check "attribute cleared on detach" "" "$(filter_of /sys/block/vda/vda1)"
check "no instance after detach" 0 "$(cat $SYS/instances)"
check "second detach gives ENOENT" ENOENT "$(bftest detach /dev/vda1 $F)"

# --- whole disk
check "attach to a whole disk" OK "$(bftest attach /dev/vda $F)"
check "disk attribute shows the filter" "$F" "$(filter_of /sys/block/vda)"
check "partition attribute stays empty" "" "$(filter_of /sys/block/vda/vda1)"
check "write to the whole disk" OK "$(bftest write /dev/vda 12000 2 0x55)"
s=$(stats /dev/vda)
check "disk filter counted 2 writes" 2 "$(field "$s" writes)"
check "disk filter saw the disk sector" $((12001 * 8)) "$(field "$s" last)"
check "attach to a partition of a filtered disk" OK "$(bftest attach /dev/vda2 testfilt2)"
check "pin the partition filter" OK "$(bftest mode /dev/vda2 testfilt2 3)"
check "both instances" 2 "$(cat $SYS/instances)"
check "detach the disk filter" OK "$(bftest detach /dev/vda $F)"
check "disk attribute cleared" "" "$(filter_of /sys/block/vda)"

# --- deleting a partition detaches its filter
before=$(cat $SYS/detaches)
check "delete the filtered, pinned partition (BLKPG)" OK "$(bftest delpart /dev/vda 2)"
check "partition is gone" no "$([ -e /sys/block/vda/vda2 ] && echo yes || echo no)"
check "deleting detached the filter without asking" $((before + 1)) "$(cat $SYS/detaches)"
check "no instance after deleting" 0 "$(cat $SYS/instances)"

# --- reading the partition table again detaches partition filters
check "re-read the table" OK "$(bftest rereadpt /dev/vda)"
check "partition is back, without a filter" "" "$(filter_of /sys/block/vda/vda2)"
check "attach to the new partition" OK "$(bftest attach /dev/vda2 $F)"
check "re-read the table with a filter attached" OK "$(bftest rereadpt /dev/vda)"
check "re-reading detached the filter" 0 "$(cat $SYS/instances)"
check "new partition has no filter" "" "$(filter_of /sys/block/vda/vda2)"

# --- loop device: detaching the backing file detaches the filter
dd if=/dev/zero of=/tmp/loop.img bs=1M count=8 2>/dev/null
losetup /dev/loop0 /tmp/loop.img
check "attach to a loop device" OK "$(bftest attach /dev/loop0 $F)"
check "loop attribute shows the filter" "$F" "$(filter_of /sys/block/loop0)"
check "write to the loop device" OK "$(bftest write /dev/loop0 0 3 0x66)"
check "loop filter counted 3 writes" 3 "$(field "$(stats /dev/loop0)" writes)"
losetup -d /dev/loop0
check "losetup -d detached the filter" 0 "$(cat $SYS/instances)"
check "loop attribute cleared" "" "$(filter_of /sys/block/loop0)"

# --- loop device with partitions: both filters go with the backing file
losetup -P /dev/loop2 /part.img
check "loop partition appears" yes "$([ -e /sys/block/loop2/loop2p1 ] && echo yes || echo no)"
check "attach to the loop disk" OK "$(bftest attach /dev/loop2 $F)"
check "attach to the loop partition" OK "$(bftest attach /dev/loop2p1 testfilt2)"
check "loop partition attribute" testfilt2 "$(filter_of /sys/block/loop2/loop2p1)"
losetup -d /dev/loop2
check "losetup -d detached disk and partition filters" 0 "$(cat $SYS/instances)"

# --- removing a loop device (del_gendisk) detaches the filter
check "attach to an unbound loop device" OK "$(bftest attach /dev/loop1 $F)"
check "remove the loop device" OK "$(bftest loopremove 1)"
check "loop device is gone" no "$([ -e /sys/block/loop1 ] && echo yes || echo no)"
check "removing the disk detached the filter" 0 "$(cat $SYS/instances)"

# --- unplugging a virtio disk detaches the disk and partition filters
check "attach to the disk to unplug" OK "$(bftest attach /dev/vdb $F)"
check "attach to its partition" OK "$(bftest attach /dev/vdb1 testfilt2)"
check "pin the disk filter" OK "$(bftest mode /dev/vdb $F 3)"
check "two instances before unplug" 2 "$(cat $SYS/instances)"
pcidev=$(readlink -f /sys/block/vdb/device/..)
echo 1 > "$pcidev/remove"
check "disk is gone" no "$([ -e /sys/block/vdb ] && echo yes || echo no)"
check "unplug detached both filters, pinned or not" 0 "$(cat $SYS/instances)"

# --- attach/detach while writes run (SRCU hook against detach)
check "attach/detach 100 times under writes" "OK failures=0" "$(bftest stress /dev/vda1 $F 100)"
check "no instance after the stress" 0 "$(cat $SYS/instances)"

# --- unload
check "module unloads once nothing is attached" OK "$(rmmod testfilt && echo OK)"
check "unknown filter after unload" ENOENT "$(bftest attach /dev/vda1 $F)"

# --- the kernel log has no splat
splat=$(dmesg | grep -E 'WARNING:|BUG:|Oops|circular locking|lockdep is turned off|INFO: task' | head -3)
check "no WARNING/BUG/lockdep report in dmesg" "" "$splat"

echo "$pass passed, $fail failed"

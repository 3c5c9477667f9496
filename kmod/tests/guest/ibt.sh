#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Case "ibt": what QEMU cannot show about indirect branch tracking.
# A CPU enforcing IBT (6.12 kernels are built with X86_KERNEL_IBT) faults
# on an indirect call or jump that does not land on an endbr64, which in
# practice means anywhere but a function's first byte. The module must
# enter kernel functions only at offset 0: on the ftrace path it logs each
# hooked function and each original it calls ("hooked X, calls Y+0x0/...");
# every such address must be a symbol's offset 0, and the interception mode
# the module reports must be the one it was built for (bf.intercept, from
# the host's look at the module's symbols).
# shellcheck source=guest/common.sh
. /t/common.sh
want=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^bf\.intercept=//p')
mode=$(cat /sys/module/blksnap/parameters/intercept 2>/dev/null) ||
	fail "no /sys/module/blksnap/parameters/intercept"
[ "$mode" = "$want" ] || fail "intercept mode '$mode', the module was built for '$want'"
if echo native >/sys/module/blksnap/parameters/intercept 2>/dev/null; then
	fail "the intercept parameter could be written"
fi
if [ "$mode" = native ]; then
	echo "native filter API: no hooks, no calls into the kernel by address"
	exit 0
fi
dmesg | grep 'blksnap: hooked ' >/tmp/hooks || true
cat /tmp/hooks
for f in submit_bio_noacct blkdev_ioctl del_gendisk; do
	grep -q "hooked $f," /tmp/hooks || fail "no 'hooked $f' line in the kernel log"
done
n=0
while read -r line; do
	case $line in
	*"calls nothing"*) ;;
	*"+0x0/"*) n=$((n + 1)) ;;
	*) fail "not a function entry: $line" ;;
	esac
done </tmp/hooks
[ "$n" -ge 2 ] || fail "only $n called originals logged"
echo "every kernel function the module calls is entered at offset 0 ($n)"

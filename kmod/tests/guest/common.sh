# SPDX-License-Identifier: GPL-2.0-only
# shellcheck shell=sh
# Helpers shared by the guest's init and its shell cases (busybox sh).

# Unloads blksnap if it is loaded and loads it again with $BLKSNAP_PARAMS
# and $BF_EXTRA_PARAMS.  Status 2: it would not unload; 1: it does not load.
bf_reload_module() {
	if grep -q '^blksnap ' /proc/modules; then
		rmmod blksnap || return 2
	fi
	[ -f /lib/blksnap.ko ] || return 1
	# shellcheck disable=SC2086
	insmod /lib/blksnap.ko $BLKSNAP_PARAMS ${BF_EXTRA_PARAMS:-} || return 1
	i=0
	while [ ! -e /dev/blksnap-control ] && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ -e /dev/blksnap-control ]
}

# fail <reason>: the first line a case prints that starts with FAIL is the
# reason the host reports.
fail() {
	echo "FAIL: $*"
	exit 1
}

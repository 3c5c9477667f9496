#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Case "removerace": a snapshot's destroy racing the removal of its device
# (cases/removerace.c), 1,000 rounds by default, on loop devices over vdb.
# shellcheck source=guest/common.sh
. /t/common.sh
modprobe loop 2>/dev/null || true
[ -e /dev/loop-control ] || fail "no loop driver"
exec /t/removerace /dev/vdb /dev/vdc "${1:-1000}"

#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Case "grown": a tracked loop device over vda grown and shrunk between
# takes (cases/grown.c).
# shellcheck source=guest/common.sh
. /t/common.sh
modprobe loop 2>/dev/null || true
[ -e /dev/loop-control ] || fail "no loop driver"
exec /t/grown /dev/vda /dev/vdc

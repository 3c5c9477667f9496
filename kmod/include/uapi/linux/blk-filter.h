/* SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note */
/*
 * Block device filter control: ioctls issued on an open block device to
 * attach a named filter to it, detach it, and pass commands to it.
 */
#ifndef _UAPI_LINUX_BLK_FILTER_H
#define _UAPI_LINUX_BLK_FILTER_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Length of the filter name buffer, including the terminating NUL. */
#define BLKFILTER_NAME_LENGTH	32

/**
 * struct blkfilter_attach - argument of BLKFILTER_ATTACH
 * @name:	filter name, NUL-terminated (e.g. "blksnap")
 * @opt:	user pointer to filter-specific options, or 0
 * @optlen:	size of the options in bytes
 */
struct blkfilter_attach {
	__u8 name[BLKFILTER_NAME_LENGTH];
	__u64 opt;
	__u32 optlen;
};

/**
 * struct blkfilter_detach - argument of BLKFILTER_DETACH
 * @name:	filter name, NUL-terminated
 */
struct blkfilter_detach {
	__u8 name[BLKFILTER_NAME_LENGTH];
};

/**
 * struct blkfilter_ctl - argument of BLKFILTER_CTL
 * @name:	filter name, NUL-terminated
 * @cmd:	filter-specific command
 * @optlen:	in: size of the buffer at @opt; out: bytes used by the filter
 * @opt:	user pointer to the command's buffer
 */
struct blkfilter_ctl {
	__u8 name[BLKFILTER_NAME_LENGTH];
	__u32 cmd;
	__u32 optlen;
	__u64 opt;
};

/* Same ioctl type as the other block device ioctls (BLKROSET and friends). */
#define BLKFILTER_ATTACH	_IOWR(0x12, 142, struct blkfilter_attach)
#define BLKFILTER_DETACH	_IOWR(0x12, 143, struct blkfilter_detach)
#define BLKFILTER_CTL		_IOWR(0x12, 144, struct blkfilter_ctl)

/* Layout checks, usable from the kernel and from C11 / C++11 user space. */
#ifndef BLKFILTER_UAPI_CHECK
#ifdef __cplusplus
#define BLKFILTER_UAPI_CHECK(expr) static_assert(expr, #expr)
#else
#define BLKFILTER_UAPI_CHECK(expr) _Static_assert(expr, #expr)
#endif
#endif

BLKFILTER_UAPI_CHECK(sizeof(struct blkfilter_attach) == 48);
BLKFILTER_UAPI_CHECK(__builtin_offsetof(struct blkfilter_attach, opt) == 32);
BLKFILTER_UAPI_CHECK(__builtin_offsetof(struct blkfilter_attach, optlen) == 40);
BLKFILTER_UAPI_CHECK(sizeof(struct blkfilter_detach) == 32);
BLKFILTER_UAPI_CHECK(sizeof(struct blkfilter_ctl) == 48);
BLKFILTER_UAPI_CHECK(__builtin_offsetof(struct blkfilter_ctl, cmd) == 32);
BLKFILTER_UAPI_CHECK(__builtin_offsetof(struct blkfilter_ctl, optlen) == 36);
BLKFILTER_UAPI_CHECK(__builtin_offsetof(struct blkfilter_ctl, opt) == 40);

#endif /* _UAPI_LINUX_BLK_FILTER_H */

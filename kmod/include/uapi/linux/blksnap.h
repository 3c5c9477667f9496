/* SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note */
/*
 * blksnap: user-space interface of the block device snapshot module.
 *
 * Two entry points:
 *  - BLKFILTER_CTL on a block device with the "blksnap" filter attached
 *    (see <linux/blk-filter.h>); the commands are enum blkfilter_ctl_blksnap;
 *  - ioctls on the control device /dev/blksnap-control.
 *
 * Binary compatible with blksnap interface version 2.0. All structures use
 * the natural C layout on 64-bit architectures; user pointers travel as
 * __u64. The layout is checked at the end of this file.
 */
#ifndef _UAPI_LINUX_BLKSNAP_H
#define _UAPI_LINUX_BLKSNAP_H

#include <linux/ioctl.h>
#include <linux/types.h>
/* BLKFILTER_CTL carries the commands below (next to this file). */
#include "blk-filter.h"

#define BLKSNAP_CTL		"blksnap-control"
#define BLKSNAP_IMAGE_NAME	"blksnap-image"
#define BLKSNAP_FILTER_NAME	"blksnap"
#define BLKSNAP			'V'

/* Interface version reported by IOCTL_BLKSNAP_VERSION. */
#define BLKSNAP_VERSION_MAJOR	2
#define BLKSNAP_VERSION_MINOR	0

/**
 * struct blksnap_uuid - 128-bit identifier (snapshot id, CBT generation)
 * @b:	the bytes
 */
struct blksnap_uuid {
	__u8 b[16];
};

/*
 * Commands of BLKFILTER_CTL for the blksnap filter. The names are those of
 * the reference interface; the lower-case spellings of its earlier
 * versions stay usable.
 */
enum blkfilter_ctl_blksnap {
	BLKFILTER_CTL_BLKSNAP_CBTINFO = 0,
	BLKFILTER_CTL_BLKSNAP_CBTMAP = 1,
	BLKFILTER_CTL_BLKSNAP_CBTDIRTY = 2,
	BLKFILTER_CTL_BLKSNAP_SNAPSHOTADD = 3,
	BLKFILTER_CTL_BLKSNAP_SNAPSHOTINFO = 4,
};
#define blkfilter_ctl_blksnap_cbtinfo		BLKFILTER_CTL_BLKSNAP_CBTINFO
#define blkfilter_ctl_blksnap_cbtmap		BLKFILTER_CTL_BLKSNAP_CBTMAP
#define blkfilter_ctl_blksnap_cbtdirty		BLKFILTER_CTL_BLKSNAP_CBTDIRTY
#define blkfilter_ctl_blksnap_snapshotadd	BLKFILTER_CTL_BLKSNAP_SNAPSHOTADD
#define blkfilter_ctl_blksnap_snapshotinfo	BLKFILTER_CTL_BLKSNAP_SNAPSHOTINFO

/**
 * struct blksnap_cbtinfo - out: change block tracking state of a device
 * @device_capacity:	device size in bytes (the sector count shifted by 9)
 * @block_size:		tracking block size in bytes
 * @block_count:	number of tracking blocks (bytes of the CBT map)
 * @generation_id:	changes when the map is reset; numbers of different
 *			generations cannot be compared
 * @changes_number:	change number of the last snapshot taken
 */
struct blksnap_cbtinfo {
	__u64 device_capacity;
	__u32 block_size;
	__u32 block_count;
	struct blksnap_uuid generation_id;
	__u8 changes_number;
};

/**
 * struct blksnap_cbtmap - in: read a part of the frozen CBT map
 * @offset:	first block to read
 * @length:	number of bytes (blocks) to copy
 * @buffer:	user pointer to at least @length bytes
 */
struct blksnap_cbtmap {
	__u32 offset;
	__u32 length;
	__u64 buffer;
};

/**
 * struct blksnap_sectors - a range of sectors
 * @offset:	first sector
 * @count:	number of sectors
 */
struct blksnap_sectors {
	__u64 offset;
	__u64 count;
};

/**
 * struct blksnap_cbtdirty - in: mark ranges of the device as changed
 * @count:		number of elements at @dirty_sectors
 * @dirty_sectors:	user pointer to an array of struct blksnap_sectors
 */
struct blksnap_cbtdirty {
	__u32 count;
	__u64 dirty_sectors;
};

/**
 * struct blksnap_snapshotadd - in: add the device to a snapshot
 * @id:	snapshot id returned by IOCTL_BLKSNAP_SNAPSHOT_CREATE
 */
struct blksnap_snapshotadd {
	struct blksnap_uuid id;
};

/* Size of the image name buffer, including the terminating NUL. */
#define IMAGE_DISK_NAME_LEN	32

/**
 * struct blksnap_snapshotinfo - out: snapshot state of the device
 * @error_code:	0, or the negative errno that corrupted the snapshot
 * @image:	name of the image block device ("blksnap-<MAJ>-<MIN>"),
 *		empty while the snapshot is not taken
 */
struct blksnap_snapshotinfo {
	__s32 error_code;
	__u8 image[IMAGE_DISK_NAME_LEN];
};

/* ioctl numbers of the control device (reference names; lower-case aliases). */
enum blksnap_ioctl {
	BLKSNAP_IOCTL_VERSION = 0,
	BLKSNAP_IOCTL_SNAPSHOT_CREATE = 1,
	BLKSNAP_IOCTL_SNAPSHOT_DESTROY = 2,
	BLKSNAP_IOCTL_SNAPSHOT_TAKE = 3,
	BLKSNAP_IOCTL_SNAPSHOT_COLLECT = 4,
	BLKSNAP_IOCTL_SNAPSHOT_WAIT_EVENT = 5,
};
#define blksnap_ioctl_version			BLKSNAP_IOCTL_VERSION
#define blksnap_ioctl_snapshot_create		BLKSNAP_IOCTL_SNAPSHOT_CREATE
#define blksnap_ioctl_snapshot_destroy		BLKSNAP_IOCTL_SNAPSHOT_DESTROY
#define blksnap_ioctl_snapshot_take		BLKSNAP_IOCTL_SNAPSHOT_TAKE
#define blksnap_ioctl_snapshot_collect		BLKSNAP_IOCTL_SNAPSHOT_COLLECT
#define blksnap_ioctl_snapshot_wait_event	BLKSNAP_IOCTL_SNAPSHOT_WAIT_EVENT

/**
 * struct blksnap_version - out: module interface version
 * @major:	BLKSNAP_VERSION_MAJOR
 * @minor:	BLKSNAP_VERSION_MINOR
 * @revision:	revision
 * @build:	build number
 */
struct blksnap_version {
	__u16 major;
	__u16 minor;
	__u16 revision;
	__u16 build;
};

#define IOCTL_BLKSNAP_VERSION \
	_IOR(BLKSNAP, BLKSNAP_IOCTL_VERSION, struct blksnap_version)

/**
 * struct blksnap_snapshot_create - create an empty snapshot
 * @diff_storage_limit_sect:	in: most sectors the difference storage may
 *				grow to
 * @diff_storage_filename:	in: user pointer to a NUL-terminated path of a
 *				block device, a directory or a regular file
 * @id:				out: id of the new snapshot
 */
struct blksnap_snapshot_create {
	__u64 diff_storage_limit_sect;
	__u64 diff_storage_filename;
	struct blksnap_uuid id;
};

#define IOCTL_BLKSNAP_SNAPSHOT_CREATE \
	_IOWR(BLKSNAP, BLKSNAP_IOCTL_SNAPSHOT_CREATE, \
	      struct blksnap_snapshot_create)

/* Destroy a snapshot: the argument is its struct blksnap_uuid. */
#define IOCTL_BLKSNAP_SNAPSHOT_DESTROY \
	_IOW(BLKSNAP, BLKSNAP_IOCTL_SNAPSHOT_DESTROY, struct blksnap_uuid)

/* Take a snapshot: the argument is its struct blksnap_uuid. */
#define IOCTL_BLKSNAP_SNAPSHOT_TAKE \
	_IOW(BLKSNAP, BLKSNAP_IOCTL_SNAPSHOT_TAKE, struct blksnap_uuid)

/**
 * struct blksnap_snapshot_collect - list the snapshots
 * @count:	in: room at @ids (in elements); out: number of snapshots
 * @ids:	user pointer to an array of struct blksnap_uuid, or 0 to
 *		learn the count only
 */
struct blksnap_snapshot_collect {
	__u32 count;
	__u64 ids;
};

#define IOCTL_BLKSNAP_SNAPSHOT_COLLECT \
	_IOR(BLKSNAP, BLKSNAP_IOCTL_SNAPSHOT_COLLECT, \
	     struct blksnap_snapshot_collect)

/* Event codes of struct blksnap_snapshot_event. */
enum blksnap_event_codes {
	blksnap_event_code_corrupted = 0,
	blksnap_event_code_no_space = 1,
};

/**
 * struct blksnap_snapshot_event - wait for an event of a snapshot
 * @id:		in: snapshot id
 * @timeout_ms:	in: how long to wait
 * @code:	out: enum blksnap_event_codes
 * @time_label:	out: when the event happened (ktime, nanoseconds)
 * @data:	out: struct blksnap_event_corrupted or
 *		struct blksnap_event_no_space, according to @code
 */
struct blksnap_snapshot_event {
	struct blksnap_uuid id;
	__u32 timeout_ms;
	__u32 code;
	__s64 time_label;
	__u8 data[4096 - 32];
};

#define IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT \
	_IOR(BLKSNAP, BLKSNAP_IOCTL_SNAPSHOT_WAIT_EVENT, \
	     struct blksnap_snapshot_event)

/**
 * struct blksnap_event_no_space - data of blksnap_event_code_no_space
 * @requested_nr_sect:	the total size, in sectors, that the storage was asked
 *			to grow to when the limit was hit (its used size plus
 *			the allocation that failed)
 */
struct blksnap_event_no_space {
	__u64 requested_nr_sect;
};

/**
 * struct blksnap_event_corrupted - data of blksnap_event_code_corrupted
 * @dev_id_mj:	major number of the original device
 * @dev_id_mn:	minor number of the original device
 * @err_code:	negative errno that corrupted the snapshot
 */
struct blksnap_event_corrupted {
	__u32 dev_id_mj;
	__u32 dev_id_mn;
	__s32 err_code;
};

/* Layout checks, usable from the kernel and from C11 / C++11 user space. */
#ifndef BLKSNAP_UAPI_CHECK
#ifdef __cplusplus
#define BLKSNAP_UAPI_CHECK(expr) static_assert(expr, #expr)
#else
#define BLKSNAP_UAPI_CHECK(expr) _Static_assert(expr, #expr)
#endif
#endif
#define BLKSNAP_UAPI_OFF(type, field) __builtin_offsetof(struct type, field)

BLKSNAP_UAPI_CHECK(sizeof(struct blksnap_uuid) == 16);
BLKSNAP_UAPI_CHECK(sizeof(struct blksnap_cbtinfo) == 40);
BLKSNAP_UAPI_CHECK(BLKSNAP_UAPI_OFF(blksnap_cbtinfo, block_size) == 8);
BLKSNAP_UAPI_CHECK(BLKSNAP_UAPI_OFF(blksnap_cbtinfo, block_count) == 12);
BLKSNAP_UAPI_CHECK(BLKSNAP_UAPI_OFF(blksnap_cbtinfo, generation_id) == 16);
BLKSNAP_UAPI_CHECK(BLKSNAP_UAPI_OFF(blksnap_cbtinfo, changes_number) == 32);
BLKSNAP_UAPI_CHECK(sizeof(struct blksnap_cbtmap) == 16);
BLKSNAP_UAPI_CHECK(BLKSNAP_UAPI_OFF(blksnap_cbtmap, buffer) == 8);
BLKSNAP_UAPI_CHECK(sizeof(struct blksnap_sectors) == 16);
BLKSNAP_UAPI_CHECK(sizeof(struct blksnap_cbtdirty) == 16);
BLKSNAP_UAPI_CHECK(BLKSNAP_UAPI_OFF(blksnap_cbtdirty, dirty_sectors) == 8);
BLKSNAP_UAPI_CHECK(sizeof(struct blksnap_snapshotadd) == 16);
BLKSNAP_UAPI_CHECK(sizeof(struct blksnap_snapshotinfo) == 36);
BLKSNAP_UAPI_CHECK(BLKSNAP_UAPI_OFF(blksnap_snapshotinfo, image) == 4);
BLKSNAP_UAPI_CHECK(sizeof(struct blksnap_version) == 8);
BLKSNAP_UAPI_CHECK(sizeof(struct blksnap_snapshot_create) == 32);
BLKSNAP_UAPI_CHECK(BLKSNAP_UAPI_OFF(blksnap_snapshot_create, id) == 16);
BLKSNAP_UAPI_CHECK(sizeof(struct blksnap_snapshot_collect) == 16);
BLKSNAP_UAPI_CHECK(BLKSNAP_UAPI_OFF(blksnap_snapshot_collect, ids) == 8);
BLKSNAP_UAPI_CHECK(sizeof(struct blksnap_snapshot_event) == 4096);
BLKSNAP_UAPI_CHECK(BLKSNAP_UAPI_OFF(blksnap_snapshot_event, timeout_ms) == 16);
BLKSNAP_UAPI_CHECK(BLKSNAP_UAPI_OFF(blksnap_snapshot_event, code) == 20);
BLKSNAP_UAPI_CHECK(BLKSNAP_UAPI_OFF(blksnap_snapshot_event, time_label) == 24);
BLKSNAP_UAPI_CHECK(BLKSNAP_UAPI_OFF(blksnap_snapshot_event, data) == 32);
BLKSNAP_UAPI_CHECK(sizeof(struct blksnap_event_no_space) == 8);
BLKSNAP_UAPI_CHECK(sizeof(struct blksnap_event_corrupted) == 12);

#endif /* _UAPI_LINUX_BLKSNAP_H */

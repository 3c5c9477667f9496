// SPDX-License-Identifier: GPL-2.0-only
/*
 * badinput DEV_A DEV_B DIFF_STORAGE
 *
 * Wrong input gets a clean error and changes nothing.  Where the UAPI
 * names the errno (EALREADY for a second attach, ENOENT for detaching what
 * is not attached and for unknown snapshot ids, ENODATA for a too small
 * COLLECT buffer, EFAULT for bad user pointers, ENOTTY for unknown ioctls)
 * exactly that errno is required; elsewhere any of a few sane errnos, and
 * the one returned is printed.  At the end a normal snapshot still works
 * and no snapshot is left over.
 */
#include "bsnap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define BAD_PTR ((void *)16)

static int checks;

/* Fails unless @ret is one of the negative errnos listed (0-terminated). */
static void expect_one_of(int ret, const char *what, ...)
{
	char list[128] = "";
	va_list ap;
	int e;

	checks++;
	va_start(ap, what);
	while ((e = va_arg(ap, int))) {
		if (ret == -e) {
			va_end(ap);
			t_info("  %-52s -> %s", what, strerror(e));
			return;
		}
		snprintf(list + strlen(list), sizeof(list) - strlen(list), " %s", strerror(e));
	}
	va_end(ap);
	if (!ret)
		t_fail("%s: succeeded, want one of:%s", what, list);
	t_fail("%s: %s, want one of:%s", what, strerror(-ret), list);
}

static int raw_ioctl(int fd, unsigned long req, void *arg)
{
	return ioctl(fd, req, arg) < 0 ? -errno : 0;
}

static int ctl_raw(int bdev, const char *name, unsigned int cmd, void *opt, uint32_t optlen)
{
	struct blkfilter_ctl arg = { .cmd = cmd, .optlen = optlen, .opt = (uintptr_t)opt };

	strncpy((char *)arg.name, name, sizeof(arg.name) - 1);
	return raw_ioctl(bdev, BLKFILTER_CTL, &arg);
}

int main(int argc, char **argv)
{
	struct blksnap_uuid unknown = { { 0xde, 0xad, 0xbe, 0xef } }, id1, id2, ids[4];
	struct blksnap_snapshot_create create;
	struct blksnap_snapshot_collect collect;
	struct blksnap_snapshot_event ev;
	struct blksnap_snapshotinfo info;
	struct blksnap_cbtinfo cbt;
	struct blksnap_version ver;
	struct blkfilter_attach att;
	struct blksnap_cbtmap map;
	struct blksnap_sectors sect;
	struct blksnap_cbtdirty dirty;
	struct t_snap snap;
	uint8_t *buf = t_alloc(1 << 16);
	uint64_t limit;
	uint32_t count;
	double t0;
	int ctl, a, b, ret;

	if (argc != 4)
		t_fail("usage: badinput DEV_A DEV_B DIFF_STORAGE");
	limit = path_sectors(argv[3]);
	ctl = bs_ctl_open();
	if (ctl < 0)
		t_fail("open control device: %s", strerror(-ctl));
	a = t_open_bdev(argv[1], O_RDWR);
	b = t_open_bdev(argv[2], O_RDWR);

	/* Control device. */
	t_expect_ok(bs_version(ctl, &ver), "VERSION");
	if (ver.major != 2 || ver.minor != 0)
		t_fail("VERSION %u.%u, want 2.0", ver.major, ver.minor);
	expect_one_of(raw_ioctl(ctl, _IO(BLKSNAP, 99), NULL), "unknown control ioctl", ENOTTY, 0);
	expect_one_of(raw_ioctl(ctl, IOCTL_BLKSNAP_VERSION, NULL), "VERSION, NULL", EFAULT, 0);
	expect_one_of(raw_ioctl(ctl, IOCTL_BLKSNAP_SNAPSHOT_CREATE, NULL), "CREATE, NULL",
		      EFAULT, 0);
	expect_one_of(raw_ioctl(ctl, IOCTL_BLKSNAP_SNAPSHOT_DESTROY, BAD_PTR), "DESTROY, bad pointer",
		      EFAULT, 0);
	expect_one_of(raw_ioctl(ctl, IOCTL_BLKSNAP_SNAPSHOT_TAKE, BAD_PTR), "TAKE, bad pointer",
		      EFAULT, 0);
	expect_one_of(raw_ioctl(ctl, IOCTL_BLKSNAP_SNAPSHOT_COLLECT, NULL), "COLLECT, NULL",
		      EFAULT, 0);
	expect_one_of(raw_ioctl(ctl, IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, BAD_PTR),
		      "WAIT_EVENT, bad pointer", EFAULT, 0);
	memset(&create, 0, sizeof(create));
	create.diff_storage_limit_sect = limit;
	create.diff_storage_filename = (uintptr_t)BAD_PTR;
	expect_one_of(raw_ioctl(ctl, IOCTL_BLKSNAP_SNAPSHOT_CREATE, &create),
		      "CREATE, bad file name pointer", EFAULT, 0);
	expect_one_of(bs_create(ctl, "/nonexistent/storage", limit, &id1),
		      "CREATE, storage path does not exist", ENOENT, 0);
	expect_one_of(bs_create(ctl, "", limit, &id1), "CREATE, empty storage path", ENOENT, EINVAL, 0);
	expect_one_of(bs_create(ctl, "/dev/null", limit, &id1), "CREATE, storage is a char device",
		      EINVAL, ENOTBLK, EPERM, 0);
	expect_one_of(bs_create(ctl, argv[3], 0, &id1), "CREATE, zero limit", EINVAL, 0);
	expect_one_of(bs_destroy(ctl, &unknown), "DESTROY, unknown id", ENOENT, 0);
	expect_one_of(bs_take(ctl, &unknown), "TAKE, unknown id", ENOENT, 0);
	t0 = t_now();
	ret = bs_wait_event(ctl, &unknown, 3000, &ev);
	if (t_now() - t0 > 2.0)
		t_fail("WAIT_EVENT for an unknown id waited for its timeout");
	expect_one_of(ret, "WAIT_EVENT, unknown id", ENOENT, ESRCH, 0);

	/* Filter attach and detach. */
	t_expect_ok(bs_attach(a), "attach");
	t_expect_err(bs_attach(a), EALREADY, "second attach");
	checks++;
	t_expect_err(bs_detach(b), ENOENT, "detach of a device without the filter");
	checks++;
	memset(&att, 0, sizeof(att));
	strcpy((char *)att.name, "nosuchfilter");
	expect_one_of(raw_ioctl(b, BLKFILTER_ATTACH, &att), "attach of an unknown filter",
		      ENOENT, EINVAL, ENODEV, 0);
	/* Attach options are reserved, as in the patched kernel's API. */
	memset(&att, 0, sizeof(att));
	strcpy((char *)att.name, "blksnap");
	att.optlen = 8;
	expect_one_of(raw_ioctl(b, BLKFILTER_ATTACH, &att), "ATTACH with options", EINVAL, 0);
	t_expect_err(bs_detach(b), ENOENT, "detach after the refused ATTACH with options");
	checks++;
	expect_one_of(raw_ioctl(b, BLKFILTER_ATTACH, BAD_PTR), "ATTACH, bad pointer", EFAULT, 0);
	expect_one_of(raw_ioctl(b, BLKFILTER_DETACH, BAD_PTR), "DETACH, bad pointer", EFAULT, 0);
	expect_one_of(raw_ioctl(b, BLKFILTER_CTL, BAD_PTR), "CTL, bad pointer", EFAULT, 0);
	expect_one_of(bs_cbtinfo(b, &cbt), "CBTINFO without the filter", ENOENT, EINVAL, 0);

	/* Filter commands. */
	t_expect_ok(bs_cbtinfo(a, &cbt), "CBTINFO");
	expect_one_of(ctl_raw(a, BLKSNAP_FILTER_NAME, 99, buf, 64), "CTL, unknown command",
		      ENOTTY, EINVAL, 0);
	expect_one_of(ctl_raw(a, "nosuchfilter", BLKFILTER_CTL_BLKSNAP_CBTINFO, buf, 64),
		      "CTL, other filter name", ENOENT, EINVAL, 0);
	expect_one_of(ctl_raw(a, BLKSNAP_FILTER_NAME, BLKFILTER_CTL_BLKSNAP_CBTINFO, buf, 4),
		      "CBTINFO, optlen too small", EINVAL, 0);
	expect_one_of(ctl_raw(a, BLKSNAP_FILTER_NAME, BLKFILTER_CTL_BLKSNAP_CBTINFO, BAD_PTR,
			      sizeof(cbt)), "CBTINFO, bad pointer", EFAULT, 0);
	map = (struct blksnap_cbtmap){ .offset = 0, .length = 16, .buffer = (uintptr_t)buf };
	expect_one_of(ctl_raw(a, BLKSNAP_FILTER_NAME, BLKFILTER_CTL_BLKSNAP_CBTMAP, &map, 8),
		      "CBTMAP, optlen too small", EINVAL, 0);
	map.offset = cbt.block_count;
	expect_one_of(ctl_raw(a, BLKSNAP_FILTER_NAME, BLKFILTER_CTL_BLKSNAP_CBTMAP, &map,
			      sizeof(map)), "CBTMAP, offset past the end", EINVAL, ERANGE, 0);
	map.offset = 0;
	map.length = cbt.block_count + 1;
	expect_one_of(ctl_raw(a, BLKSNAP_FILTER_NAME, BLKFILTER_CTL_BLKSNAP_CBTMAP, &map,
			      sizeof(map)), "CBTMAP, length past the end", EINVAL, ERANGE, 0);
	map.length = 16;
	map.buffer = (uintptr_t)BAD_PTR;
	expect_one_of(ctl_raw(a, BLKSNAP_FILTER_NAME, BLKFILTER_CTL_BLKSNAP_CBTMAP, &map,
			      sizeof(map)), "CBTMAP, bad buffer", EFAULT, ENOENT, EINVAL, 0);
	sect = (struct blksnap_sectors){ .offset = cbt.device_capacity / SECTOR, .count = 8 };
	expect_one_of(bs_cbtdirty(a, &sect, 1), "CBTDIRTY, range past the end", EINVAL, ERANGE, 0);
	sect = (struct blksnap_sectors){ .offset = 0, .count = ~0ull };
	expect_one_of(bs_cbtdirty(a, &sect, 1), "CBTDIRTY, overflowing range", EINVAL, ERANGE, 0);
	dirty = (struct blksnap_cbtdirty){ .count = 4, .dirty_sectors = (uintptr_t)BAD_PTR };
	expect_one_of(ctl_raw(a, BLKSNAP_FILTER_NAME, BLKFILTER_CTL_BLKSNAP_CBTDIRTY, &dirty,
			      sizeof(dirty)), "CBTDIRTY, bad array pointer", EFAULT, 0);
	dirty = (struct blksnap_cbtdirty){ .count = 1u << 31, .dirty_sectors = (uintptr_t)BAD_PTR };
	expect_one_of(ctl_raw(a, BLKSNAP_FILTER_NAME, BLKFILTER_CTL_BLKSNAP_CBTDIRTY, &dirty,
			      sizeof(dirty)), "CBTDIRTY, 2^31 ranges", EFAULT, EINVAL, ENOMEM, E2BIG, 0);
	expect_one_of(bs_snapshot_add(a, &unknown), "SNAPSHOTADD, unknown id", ENOENT, 0);
	expect_one_of(bs_snapshot_info(a, &info), "SNAPSHOTINFO, not in a snapshot",
		      ENOENT, EINVAL, ENODEV, 0);

	/* Snapshot misuse. */
	t_expect_ok(bs_create(ctl, argv[3], limit, &id1), "create");
	t0 = t_now();
	ret = bs_wait_event(ctl, &id1, 300, &ev);
	expect_one_of(ret, "WAIT_EVENT, no event within 300 ms", ENOENT, 0);
	if (t_now() - t0 < 0.25)
		t_fail("WAIT_EVENT with no event returned after %.3f s, before its timeout",
		       t_now() - t0);
	t_expect_ok(bs_snapshot_add(a, &id1), "add");
	expect_one_of(bs_snapshot_add(a, &id1), "SNAPSHOTADD twice", EALREADY, EBUSY, EEXIST, 0);
	expect_one_of(bs_create(ctl, argv[3], limit, &id2),
		      "CREATE on a block device storage in use", EBUSY, 0);
	t_expect_ok(bs_create(ctl, "/ds", 262144, &id2), "create a second snapshot");
	expect_one_of(bs_snapshot_add(a, &id2), "SNAPSHOTADD to a second snapshot",
		      EALREADY, EBUSY, EEXIST, 0);
	count = 1;
	collect = (struct blksnap_snapshot_collect){ .count = 1, .ids = (uintptr_t)ids };
	expect_one_of(raw_ioctl(ctl, IOCTL_BLKSNAP_SNAPSHOT_COLLECT, &collect),
		      "COLLECT, buffer too small", ENODATA, 0);
	if (collect.count != 2)
		t_fail("COLLECT with a small buffer reports %u snapshots, want 2", collect.count);
	collect = (struct blksnap_snapshot_collect){ .count = 4, .ids = (uintptr_t)BAD_PTR };
	expect_one_of(raw_ioctl(ctl, IOCTL_BLKSNAP_SNAPSHOT_COLLECT, &collect),
		      "COLLECT, bad array pointer", EFAULT, 0);
	count = 4;
	t_expect_ok(bs_collect(ctl, ids, &count), "collect");
	if (count != 2)
		t_fail("COLLECT lists %u snapshots, want 2", count);
	t_expect_ok(bs_take(ctl, &id1), "take");
	expect_one_of(bs_take(ctl, &id1), "TAKE twice", EALREADY, EBUSY, EINVAL, 0);
	expect_one_of(bs_snapshot_add(b, &id1), "SNAPSHOTADD of a device without the filter",
		      ENOENT, EINVAL, 0);
	t_expect_ok(bs_attach(b), "attach b");
	expect_one_of(bs_snapshot_add(b, &id1), "SNAPSHOTADD after the take",
		      EALREADY, EBUSY, EINVAL, EPERM, 0);
	expect_one_of(bs_detach(a), "DETACH while in a taken snapshot", EBUSY, 0);
	t_expect_ok(bs_destroy(ctl, &id1), "destroy");
	expect_one_of(bs_destroy(ctl, &id1), "DESTROY twice", ENOENT, 0);
	t_expect_ok(bs_destroy(ctl, &id2), "destroy second");
	expect_one_of(bs_create(ctl, argv[2], 0, &id1), "CREATE, zero limit on a block device",
		      EINVAL, 0);

	/* The difference storage must not be in the snapshot. */
	ret = bs_create(ctl, argv[2], path_sectors(argv[2]), &id1);
	t_expect_ok(ret, "create with storage on device b");
	ret = bs_snapshot_add(b, &id1);
	if (!ret)
		ret = bs_take(ctl, &id1);
	expect_one_of(ret, "snapshot of the device holding the storage", EINVAL, EBUSY, EPERM, 0);
	t_expect_ok(bs_destroy(ctl, &id1), "destroy");

	/* Nothing left behind, and a normal snapshot works. */
	count = 0;
	t_expect_ok(bs_collect(ctl, NULL, &count), "collect");
	if (count)
		t_fail("%u snapshots left over", count);
	t_snap_take(&snap, argv[3], limit, &a, 1);
	t_expect_ok(bs_snapshot_info(a, &info), "SNAPSHOTINFO");
	if (info.error_code)
		t_fail("fresh snapshot reports error %d", info.error_code);
	t_snap_destroy(&snap);
	t_expect_ok(bs_detach(a), "detach a");
	t_expect_ok(bs_detach(b), "detach b");
	t_info("ok: %d checks", checks);
	return 0;
}

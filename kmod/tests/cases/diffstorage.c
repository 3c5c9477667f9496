// SPDX-License-Identifier: GPL-2.0-only
/*
 * diffstorage grow ORIGIN STORAGE STEP_SECT
 * diffstorage overflow ORIGIN FILE STEP_SECT
 * diffstorage nofallocate ORIGIN DIR STEP_SECT
 * diffstorage stacked ORIGIN STORAGE STEP_SECT
 *
 * Run with the module's diff_storage_minimum set to STEP_SECT.
 *
 * grow: STORAGE is a regular file (made empty here), a directory (an
 * unnamed file is made there) or a block device.  48 MiB of the origin is
 * overwritten in eight batches; a file or directory storage must grow in
 * several steps, never past the limit, and hold all the copied data; the
 * image must still show the data of the take, the origin the new data.
 * A directory storage gives its space back on destroy.
 *
 * overflow: the limit is two steps and 48 MiB is overwritten: the no-space
 * event arrives (WAIT_EVENT), SNAPSHOTINFO reports -ENOSPC, image reads
 * fail with EIO (and never return wrong data), every origin write
 * succeeded and the origin holds exactly the new data.
 *
 * nofallocate: DIR is on a file system that cannot preallocate (ext4
 * without extents: fallocate() fails with EOPNOTSUPP). A storage there
 * could not hold the space it counts on, and a full file system would
 * corrupt the snapshot at some later copy: creating a snapshot with DIR,
 * or with an empty file in it, as storage fails with EOPNOTSUPP.
 *
 * stacked: STORAGE is a block device stacked on ORIGIN (device mapper), or
 * a file on a file system there: its writes would pass ORIGIN's filter and
 * be copied on write into the storage again. Adding ORIGIN to a snapshot
 * with that storage fails with EINVAL, as for a storage on ORIGIN itself.
 */
#include "bsnap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define TAG 0xd1ff5702
#define REGION_SECT (48u * 2048)	/* 48 MiB */
#define STRIDE 128u			/* one write per 64 KiB: every chunk */

enum kind { FILE_STORAGE, DIR_STORAGE, BDEV_STORAGE };

static int origin;
static uint64_t nsect;
static uint32_t *expect;
static uint32_t seq = 2;

/* Bytes the storage occupies: the file's blocks, or the filesystem's use. */
static uint64_t usage(enum kind k, const char *path)
{
	struct statvfs vfs;
	struct stat st;

	if (k == FILE_STORAGE) {
		if (stat(path, &st))
			t_fail("stat %s: %s", path, strerror(errno));
		return (uint64_t)st.st_blocks * 512;
	}
	if (k == DIR_STORAGE) {
		if (statvfs(path, &vfs))
			t_fail("statvfs %s: %s", path, strerror(errno));
		return (uint64_t)(vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize;
	}
	return 0;
}

/* Overwrites one sector per STRIDE in [first, first + count). */
static void overwrite(uint64_t first, uint64_t count)
{
	uint8_t *buf = t_alloc(SECTOR);
	uint64_t s;

	for (s = first; s < first + count; s += STRIDE) {
		stamp_sector(buf, TAG, s, seq);
		t_pwrite(origin, buf, SECTOR, s * SECTOR);
		expect[s] = seq;
	}
	seq++;
	free(buf);
}

static enum kind kind_of(const char *path)
{
	struct stat st;

	if (stat(path, &st))
		return FILE_STORAGE;	/* made below */
	if (S_ISDIR(st.st_mode))
		return DIR_STORAGE;
	return S_ISBLK(st.st_mode) ? BDEV_STORAGE : FILE_STORAGE;
}

static void prepare_file(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);

	if (fd < 0)
		t_fail("create %s: %s", path, strerror(errno));
	close(fd);
}

static void grow(const char *path, uint64_t step)
{
	enum kind k = kind_of(path);
	uint64_t limit = 16 * step, u0, u, last;
	struct t_snap snap;
	char image[64];
	int b, increases = 0, img;

	if (k == FILE_STORAGE)
		prepare_file(path);
	if (k == BDEV_STORAGE)
		limit = path_sectors(path);
	sync();
	u0 = usage(k, path);
	last = 0;
	t_snap_take(&snap, path, limit, &origin, 1);
	for (b = 0; b < 8; b++) {
		overwrite((uint64_t)b * REGION_SECT / 8, REGION_SECT / 8);
		usleep(300000);
		u = usage(k, path);
		u = u > u0 ? u - u0 : 0;
		t_info("after %d MiB overwritten: storage uses %llu KiB more", (b + 1) * 6,
		       (unsigned long long)u / 1024);
		if (u > last)
			increases++;
		last = u;
		if (k != BDEV_STORAGE && u > limit * SECTOR + (1 << 20))
			t_fail("storage grew to %llu bytes, past the limit of %llu",
			       (unsigned long long)u, (unsigned long long)(limit * SECTOR));
	}
	if (k != BDEV_STORAGE) {
		if (increases < 3)
			t_fail("the storage grew %d times (want several steps)", increases);
		if (last < (uint64_t)REGION_SECT * SECTOR)
			t_fail("the storage holds %llu bytes, but %u were copied",
			       (unsigned long long)last, REGION_SECT * SECTOR);
	}
	img = t_open_image(origin, O_RDONLY | O_DIRECT, image, sizeof(image));
	t_verify(img, TAG, nsect, NULL, 1, "image");
	close(img);
	t_snap_destroy(&snap);
	t_verify(origin, TAG, nsect, expect, 0, "origin");
	if (k == DIR_STORAGE) {
		sync();
		usleep(500000);
		u = usage(k, path);
		if (u > u0 + (1 << 20))
			t_fail("destroy left %llu KiB used in the directory's filesystem",
			       (unsigned long long)(u - u0) / 1024);
	}
}

static void overflow(const char *path, uint64_t step)
{
	struct blksnap_snapshot_event ev;
	struct blksnap_snapshotinfo info;
	uint64_t limit = 2 * step, s;
	int ret, no_space = 0, corrupted = 0, img, n;
	struct t_snap snap;
	char image[64];
	struct stat st;
	uint8_t *buf;

	prepare_file(path);
	if (fstat(origin, &st))
		t_fail("fstat: %s", strerror(errno));
	t_snap_take(&snap, path, limit, &origin, 1);
	overwrite(0, REGION_SECT);
	for (n = 0; n < 16; n++) {
		ret = bs_wait_event(snap.ctl, &snap.id, 3000, &ev);
		if (ret == -ENOENT)
			break;
		t_expect_ok(ret, "WAIT_EVENT");
		if (ev.code == blksnap_event_code_no_space) {
			struct blksnap_event_no_space *d = (void *)ev.data;

			t_info("event: no space (asked to grow to %llu sectors, limit %llu)",
			       (unsigned long long)d->requested_nr_sect, (unsigned long long)limit);
			/* As the reference: the total size asked for, past the limit. */
			if (d->requested_nr_sect <= limit)
				t_fail("no-space event asks for %llu sectors, not more than the limit %llu: not the total size",
				       (unsigned long long)d->requested_nr_sect,
				       (unsigned long long)limit);
			no_space++;
		} else if (ev.code == blksnap_event_code_corrupted) {
			struct blksnap_event_corrupted *d = (void *)ev.data;

			t_info("event: corrupted %u:%u %d", d->dev_id_mj, d->dev_id_mn, d->err_code);
			if (d->dev_id_mj != major(st.st_rdev) || d->dev_id_mn != minor(st.st_rdev) ||
			    d->err_code != -ENOSPC)
				t_fail("corrupted event names %u:%u error %d, want %u:%u -ENOSPC",
				       d->dev_id_mj, d->dev_id_mn, d->err_code,
				       major(st.st_rdev), minor(st.st_rdev));
			corrupted++;
		} else {
			t_fail("unknown event code %u", ev.code);
		}
	}
	if (!no_space)
		t_fail("no no-space event after overflowing the limit (%d corrupted events)",
		       corrupted);
	t_expect_ok(bs_snapshot_info(origin, &info), "SNAPSHOTINFO");
	if (info.error_code != -ENOSPC)
		t_fail("SNAPSHOTINFO error_code %d, want -ENOSPC", info.error_code);

	img = t_open_image(origin, O_RDONLY | O_DIRECT, image, sizeof(image));
	buf = t_alloc(1 << 20);
	ret = pread(img, buf, 1 << 20, 0);
	if (ret >= 0 || errno != EIO)
		t_fail("reading the overwritten start of a corrupted image: %s, want EIO",
		       ret >= 0 ? "success" : strerror(errno));
	for (s = 0; s < nsect; s += 2048) {
		uint64_t i, got;

		if (pread(img, buf, 1 << 20, s * SECTOR) != 1 << 20)
			continue;
		for (i = 0; i < 2048 && s + i < nsect; i++)
			if (stamp_check(buf + i * SECTOR, TAG, s + i, &got) || got != 1)
				t_fail("a read of the corrupted image returned wrong data at %llu",
				       (unsigned long long)(s + i));
	}
	close(img);
	t_verify(origin, TAG, nsect, expect, 0, "origin");
	t_snap_destroy(&snap);
	free(buf);
}

static void nofallocate(const char *dir, uint64_t step)
{
	struct blksnap_uuid id;
	char file[256];
	int ctl = bs_ctl_open();

	if (ctl < 0)
		t_fail("open control device: %s", strerror(-ctl));
	t_expect_err(bs_create(ctl, dir, 16 * step, &id), EOPNOTSUPP,
		     "create with a directory storage that cannot preallocate");
	snprintf(file, sizeof(file), "%s/diff.file", dir);
	prepare_file(file);
	t_expect_err(bs_create(ctl, file, 16 * step, &id), EOPNOTSUPP,
		     "create with an empty file storage that cannot preallocate");
	unlink(file);
	close(ctl);
}

static void stacked(const char *path, uint64_t step)
{
	struct blksnap_uuid id;
	int ctl = bs_ctl_open();

	if (ctl < 0)
		t_fail("open control device: %s", strerror(-ctl));
	t_expect_ok(bs_attach(origin), "attach");
	t_expect_ok(bs_create(ctl, path, 16 * step, &id), "create");
	t_expect_err(bs_snapshot_add(origin, &id), EINVAL,
		     "add a device to a snapshot whose storage is stacked on it");
	t_expect_ok(bs_destroy(ctl, &id), "destroy");
	t_expect_ok(bs_detach(origin), "detach");
	close(ctl);
}

int main(int argc, char **argv)
{
	uint64_t step;

	if (argc != 5)
		t_fail("usage: diffstorage grow|overflow|nofallocate|stacked ORIGIN STORAGE STEP_SECT");
	if (!strcmp(argv[1], "nofallocate") || !strcmp(argv[1], "stacked")) {
		origin = t_open_bdev(argv[2], O_RDWR | O_DIRECT);
		if (argv[1][0] == 'n')
			nofallocate(argv[3], strtoull(argv[4], NULL, 0));
		else
			stacked(argv[3], strtoull(argv[4], NULL, 0));
		t_info("ok");
		return 0;
	}
	origin = t_open_bdev(argv[2], O_RDWR | O_DIRECT);
	nsect = bdev_size(origin) / SECTOR;
	step = strtoull(argv[4], NULL, 0);
	if (!step || nsect < REGION_SECT)
		t_fail("bad step or origin too small");
	expect = t_expect_new(nsect, 1);
	t_stamp_range(origin, TAG, 0, nsect, 1);
	if (!strcmp(argv[1], "grow"))
		grow(argv[3], step);
	else if (!strcmp(argv[1], "overflow"))
		overflow(argv[3], step);
	else
		t_fail("unknown mode %s", argv[1]);
	t_expect_ok(bs_detach(origin), "detach");
	t_info("ok");
	return 0;
}

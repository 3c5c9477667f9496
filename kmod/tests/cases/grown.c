// SPDX-License-Identifier: GPL-2.0-only
/*
 * grown BACKING DIFF_STORAGE
 *
 * A tracked device that grows and shrinks: a loop device over BACKING,
 * 16 MiB, then 32 MiB (its size limit raised), then 20 MiB. Writes past
 * the old end are not in the old map, so the take after a size change must
 * start a new change tracking generation (the next backup reads the device
 * whole) with a map of the new size; CBTINFO reports the new capacity in
 * bytes. Within the new generation, writes in the grown part are tracked:
 * the next take's map marks exactly the blocks written since the previous
 * take. The images have the new size and the data of their take.
 */
#include "bsnap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define TAG	0x67726f77
#define MIB	(1ull << 20)

static int dev, loopfd;
static const char *storage;

static void set_size(uint64_t bytes)
{
	struct loop_info64 info;

	if (ioctl(loopfd, LOOP_GET_STATUS64, &info))
		t_fail("LOOP_GET_STATUS64: %s", strerror(errno));
	info.lo_sizelimit = bytes;
	if (ioctl(loopfd, LOOP_SET_STATUS64, &info))
		t_fail("LOOP_SET_STATUS64 (size %llu): %s",
		       (unsigned long long)bytes, strerror(errno));
	if (bdev_size(dev) != bytes)
		t_fail("the loop device has %llu bytes, not %llu",
		       (unsigned long long)bdev_size(dev),
		       (unsigned long long)bytes);
}

/* Take a snapshot, check CBTINFO and the image, return CBTINFO. */
static struct blksnap_cbtinfo take(struct t_snap *s, uint64_t bytes,
				   uint32_t seq, const char *what)
{
	struct blksnap_cbtinfo info;
	char image[64];
	int img;

	t_snap_take(s, storage, path_sectors(storage), &dev, 1);
	t_expect_ok(bs_cbtinfo(dev, &info), "CBTINFO");
	if (info.device_capacity != bytes)
		t_fail("%s: CBTINFO capacity %llu bytes, the device has %llu",
		       what, (unsigned long long)info.device_capacity,
		       (unsigned long long)bytes);
	if ((uint64_t)info.block_count * info.block_size < bytes)
		t_fail("%s: the map covers %llu bytes of %llu", what,
		       (unsigned long long)info.block_count * info.block_size,
		       (unsigned long long)bytes);
	img = t_open_image(dev, O_RDONLY | O_DIRECT, image, sizeof(image));
	t_verify(img, TAG, bytes / SECTOR, NULL, seq, what);
	close(img);
	return info;
}

int main(int argc, char **argv)
{
	struct blksnap_cbtinfo i1, i2, i3, i4;
	uint64_t first, last, b;
	struct t_snap s;
	int backing, loopctl, n;
	char path[32];
	uint8_t *map;

	if (argc != 3)
		t_fail("usage: grown BACKING DIFF_STORAGE");
	storage = argv[2];
	backing = t_open_bdev(argv[1], O_RDWR);
	loopctl = open("/dev/loop-control", O_RDWR);
	if (loopctl < 0)
		t_fail("open /dev/loop-control: %s", strerror(errno));
	n = t_loop_setup(loopctl, backing, 16 * MIB);
	snprintf(path, sizeof(path), "/dev/loop%d", n);
	dev = t_open_bdev(path, O_RDWR | O_DIRECT);
	loopfd = dev;

	t_stamp_range(dev, TAG, 0, 16 * MIB / SECTOR, 1);
	i1 = take(&s, 16 * MIB, 1, "16 MiB");
	t_snap_destroy(&s);

	/* Grown: the whole device written anew, half of it past the old end. */
	set_size(32 * MIB);
	t_stamp_range(dev, TAG, 0, 32 * MIB / SECTOR, 2);
	i2 = take(&s, 32 * MIB, 2, "grown to 32 MiB");
	if (!memcmp(&i2.generation_id, &i1.generation_id, sizeof(i1.generation_id)))
		t_fail("the device grew and the CBT generation stayed: the last increment misses the writes past the old end");
	t_snap_destroy(&s);

	/* Within the new generation: 1 MiB written in the grown part. */
	t_stamp_range(dev, TAG, 24 * MIB / SECTOR, MIB / SECTOR, 3);
	t_snap_take(&s, storage, path_sectors(storage), &dev, 1);
	t_expect_ok(bs_cbtinfo(dev, &i3), "CBTINFO");
	if (memcmp(&i3.generation_id, &i2.generation_id, sizeof(i2.generation_id)))
		t_fail("the generation changed again without a size change");
	map = t_alloc(i3.block_count);
	t_expect_ok(bs_cbtmap(dev, 0, i3.block_count, map), "CBTMAP");
	first = 24 * MIB / i3.block_size;
	last = (25 * MIB - 1) / i3.block_size;
	for (b = 0; b < i3.block_count; b++) {
		bool changed = map[b] > i2.changes_number;

		if (changed != (b >= first && b <= last))
			t_fail("block %llu (of %u bytes) %s since the previous take, map byte %u, previous change number %u",
			       (unsigned long long)b, i3.block_size,
			       changed ? "marked changed" : "not marked changed",
			       map[b], i2.changes_number);
	}
	t_snap_destroy(&s);

	/* Shrunk: a new generation again, of the smaller size. */
	set_size(20 * MIB);
	t_stamp_range(dev, TAG, 0, 20 * MIB / SECTOR, 4);
	i4 = take(&s, 20 * MIB, 4, "shrunk to 20 MiB");
	if (!memcmp(&i4.generation_id, &i3.generation_id, sizeof(i3.generation_id)))
		t_fail("the device shrank and the CBT generation stayed");
	t_snap_destroy(&s);

	t_expect_ok(bs_detach(dev), "detach");
	close(dev);
	t_loop_remove(loopctl, n);
	printf("PASS: grown: 16 -> 32 -> 20 MiB, a new generation at each size change, grown part tracked\n");
	return 0;
}

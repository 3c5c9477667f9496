// SPDX-License-Identifier: GPL-2.0-only
/*
 * cbt ORIGIN DIFF_STORAGE
 *
 * Change block tracking as the UAPI defines it:
 *  - CBTINFO describes the device (capacity, block size, block count);
 *  - after each take, the blocks whose byte in the frozen map is greater
 *    than the change number of the previous take are exactly the blocks
 *    written (on the origin or on the image) or marked with CBTDIRTY since;
 *  - while the snapshot is held, the change number and the frozen map do
 *    not move for origin writes; writes to the image and CBTDIRTY change
 *    what the snapshot holds, so they mark their blocks in the frozen map
 *    with the current change number (and in the active map for the next
 *    take) and nothing else;
 *  - each take increments the change number; the take that would pass 255
 *    makes a new generation id and restarts the numbering at 1; tracking
 *    keeps working in the new generation.
 */
#include "bsnap.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t nsect, rnd = 42;
static uint32_t bsize, nblocks;
static uint8_t *changed;	/* blocks changed since the last take */
static uint8_t *in_image;	/* blocks changed in the image while held */

static void mark(uint64_t first, uint64_t len)
{
	uint64_t b;

	for (b = first * SECTOR / bsize; b <= (first + len - 1) * SECTOR / bsize; b++) {
		changed[b] = 1;
		if (in_image)
			in_image[b] = 1;
	}
}

/* @n writes of 1 sector to two blocks' worth at random places of @fd. */
static void scribble(int fd, int n)
{
	uint64_t maxlen = 2 * bsize / SECTOR;
	uint8_t *buf = t_alloc(maxlen * SECTOR);

	while (n--) {
		uint64_t len = 1 + rnd_below(&rnd, maxlen);
		uint64_t first = rnd_below(&rnd, nsect - len + 1);

		memset(buf, n, len * SECTOR);
		t_pwrite(fd, buf, len * SECTOR, first * SECTOR);
		mark(first, len);
	}
	free(buf);
}

static void info(int fd, struct blksnap_cbtinfo *i)
{
	t_expect_ok(bs_cbtinfo(fd, i), "CBTINFO");
}

/* The frozen map must show exactly changed[] as newer than @prev. */
static void check_map(const uint8_t *map, unsigned int prev, unsigned int cur, const char *when)
{
	uint32_t b, missed = 0, extra = 0, above = 0;

	for (b = 0; b < nblocks; b++) {
		if (map[b] > cur)
			above++;
		if (map[b] > prev && !changed[b])
			extra++;
		if (map[b] <= prev && changed[b]) {
			if (!missed)
				t_info("block %u changed but its byte is %u (previous take %u)",
				       b, map[b], prev);
			missed++;
		}
	}
	if (missed || extra || above)
		t_fail("%s: %u changed blocks not marked, %u unchanged blocks marked, "
		       "%u bytes above the current change number %u",
		       when, missed, extra, above, cur);
}

int main(int argc, char **argv)
{
	struct blksnap_cbtinfo i0, i1;
	uint8_t *map, *map2, *image_blocks;
	uint32_t b;
	struct t_snap snap;
	char image[64], what[64];
	unsigned int prev, takes;
	uint64_t limit;
	int fd, img, round;

	if (argc != 3)
		t_fail("usage: cbt ORIGIN DIFF_STORAGE");
	fd = t_open_bdev(argv[1], O_RDWR | O_DIRECT);
	nsect = bdev_size(fd) / SECTOR;
	limit = path_sectors(argv[2]);
	t_expect_ok(bs_attach(fd), "attach");
	info(fd, &i0);
	bsize = i0.block_size;
	nblocks = i0.block_count;
	t_info("capacity %llu bytes, block %u bytes, %u blocks, change number %u",
	       (unsigned long long)i0.device_capacity, bsize, nblocks, i0.changes_number);
	if (i0.device_capacity != nsect * SECTOR)
		t_fail("capacity %llu bytes (must be bytes, as the reference UAPI), device has %llu sectors",
		       (unsigned long long)i0.device_capacity, (unsigned long long)nsect);
	if (bsize < SECTOR || (bsize & (bsize - 1)))
		t_fail("block size %u is not a power of two >= 512", bsize);
	if (nblocks != (nsect * SECTOR + bsize - 1) / bsize)
		t_fail("%u blocks do not cover %llu sectors of %u-byte blocks", nblocks,
		       (unsigned long long)nsect, bsize);
	changed = calloc(nblocks, 1);
	map = malloc(nblocks);
	map2 = malloc(nblocks);
	image_blocks = malloc(nblocks);
	if (!changed || !map || !map2 || !image_blocks)
		t_fail("out of memory");

	prev = i0.changes_number;
	for (round = 1; round <= 6; round++) {
		scribble(fd, 20);
		if (round == 3) {
			struct blksnap_sectors r[3] = {
				{ 0, 1 }, { nsect / 2, 3 * bsize / SECTOR }, { nsect - 1, 1 },
			};

			t_expect_ok(bs_cbtdirty(fd, r, 3), "CBTDIRTY");
			mark(0, 1);
			mark(nsect / 2, 3 * bsize / SECTOR);
			mark(nsect - 1, 1);
		}
		t_snap_take(&snap, argv[2], limit, &fd, 1);
		info(fd, &i1);
		if (memcmp(&i1.generation_id, &i0.generation_id, 16))
			t_fail("round %d: generation changed at change number %u", round,
			       i1.changes_number);
		if (i1.changes_number != prev + 1)
			t_fail("round %d: change number %u after %u", round, i1.changes_number, prev);
		t_expect_ok(bs_cbtmap(fd, 0, nblocks, map), "CBTMAP");
		snprintf(what, sizeof(what), "round %d", round);
		check_map(map, prev, i1.changes_number, what);
		memset(changed, 0, nblocks);

		/* While held: origin writes leave the frozen map alone... */
		scribble(fd, 20);
		t_expect_ok(bs_cbtmap(fd, 0, nblocks, map2), "CBTMAP while held");
		if (memcmp(map, map2, nblocks))
			t_fail("round %d: origin writes changed the frozen map", round);
		/* ...image writes and CBTDIRTY mark exactly their blocks in it. */
		if (round >= 2) {
			memset(image_blocks, 0, nblocks);
			in_image = image_blocks;
			img = t_open_image(fd, O_RDWR | O_DIRECT, image, sizeof(image));
			scribble(img, 10);
			close(img);
			if (round == 4) {
				struct blksnap_sectors r = { nsect / 3, 1 };

				t_expect_ok(bs_cbtdirty(fd, &r, 1), "CBTDIRTY while held");
				mark(nsect / 3, 1);
			}
			in_image = NULL;
			t_expect_ok(bs_cbtmap(fd, 0, nblocks, map2), "CBTMAP after image writes");
			for (b = 0; b < nblocks; b++) {
				uint8_t want = image_blocks[b] ? i1.changes_number : map[b];

				if (map2[b] != want)
					t_fail("round %d: after image writes block %u of the frozen map "
					       "is %u, want %u", round, b, map2[b], want);
			}
		}
		info(fd, &i0);
		if (i0.changes_number != i1.changes_number)
			t_fail("round %d: change number moved from %u to %u while held", round,
			       i1.changes_number, i0.changes_number);
		t_snap_destroy(&snap);
		prev = i1.changes_number;
	}

	/* Wrap: the generation must change exactly at the take after 255. */
	for (takes = 0; takes < 300; takes++) {
		t_snap_take(&snap, argv[2], limit, &fd, 1);
		info(fd, &i1);
		t_snap_destroy(&snap);
		if (i1.changes_number >= 250 || i1.changes_number <= 2)
			t_info("take: change number %u, %s generation", i1.changes_number,
			       memcmp(&i1.generation_id, &i0.generation_id, 16) ? "new" : "same");
		if (memcmp(&i1.generation_id, &i0.generation_id, 16))
			break;
		if (i1.changes_number != prev + 1)
			t_fail("change number %u after %u", i1.changes_number, prev);
		prev = i1.changes_number;
	}
	if (takes == 300)
		t_fail("no new generation after %u more takes", takes);
	if (prev != 255 || i1.changes_number != 1)
		t_fail("generation changed going from change number %u to %u (want 255 to 1)",
		       prev, i1.changes_number);
	t_info("new generation after %u more takes", takes + 1);

	/* Tracking works in the new generation. */
	memset(changed, 0, nblocks);
	prev = i1.changes_number;
	scribble(fd, 20);
	t_snap_take(&snap, argv[2], limit, &fd, 1);
	info(fd, &i0);
	if (i0.changes_number != prev + 1 || memcmp(&i1.generation_id, &i0.generation_id, 16))
		t_fail("after the wrap: change number %u after %u or generation moved",
		       i0.changes_number, prev);
	t_expect_ok(bs_cbtmap(fd, 0, nblocks, map), "CBTMAP");
	check_map(map, prev, i0.changes_number, "after the wrap");
	t_snap_destroy(&snap);

	/*
	 * The largest CBTDIRTY there is: 65,536 ranges of the whole device.
	 * It is marked in pieces with the scheduler given a turn between
	 * them (the suite fails on a soft lockup or RCU stall), and it marks
	 * every block.
	 */
	{
		struct blksnap_sectors *all = calloc(65536, sizeof(*all));
		double t;
		unsigned int b;

		if (!all)
			t_fail("out of memory");
		for (b = 0; b < 65536; b++)
			all[b] = (struct blksnap_sectors){ .offset = 0, .count = nsect };
		prev = i0.changes_number;
		t = t_now();
		t_expect_ok(bs_cbtdirty(fd, all, 65536), "CBTDIRTY of 65536 whole-device ranges");
		t_info("CBTDIRTY of 65536 whole-device ranges took %.2f s", t_now() - t);
		free(all);
		t_snap_take(&snap, argv[2], limit, &fd, 1);
		t_expect_ok(bs_cbtmap(fd, 0, nblocks, map), "CBTMAP");
		for (b = 0; b < nblocks; b++)
			if (map[b] <= prev)
				t_fail("block %u not marked by the whole-device CBTDIRTY", b);
		t_snap_destroy(&snap);
	}
	t_expect_ok(bs_detach(fd), "detach");
	t_info("ok");
	return 0;
}

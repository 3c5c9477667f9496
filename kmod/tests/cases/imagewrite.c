// SPDX-License-Identifier: GPL-2.0-only
/*
 * imagewrite ORIGIN DIFF_STORAGE
 *
 * Snapshot images are writable: random stamped writes to the image read
 * back at once and in a final full pass (direct and through the page
 * cache, after the image was closed and reopened); the origin never sees
 * them.
 */
#include "bsnap.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#define TAG 0x1e4a9e00

int main(int argc, char **argv)
{
	uint64_t nsect, i, rnd = 7;
	uint8_t *buf, *back;
	uint32_t *expect;
	struct t_snap snap;
	char image[64];
	int origin, img, n;

	if (argc != 3)
		t_fail("usage: imagewrite ORIGIN DIFF_STORAGE");
	origin = t_open_bdev(argv[1], O_RDWR | O_DIRECT);
	nsect = bdev_size(origin) / SECTOR;
	expect = t_expect_new(nsect, 1);
	buf = t_alloc(1 << 20);
	back = t_alloc(1 << 20);
	t_stamp_range(origin, TAG, 0, nsect, 1);
	t_snap_take(&snap, argv[2], path_sectors(argv[2]), &origin, 1);
	img = t_open_image(origin, O_RDWR | O_DIRECT, image, sizeof(image));

	for (n = 0; n < 300; n++) {
		uint64_t len = 1 + rnd_below(&rnd, n % 10 ? 16 : 2048);
		uint64_t first = rnd_below(&rnd, nsect - len + 1);
		uint32_t seq = 2 + n;

		for (i = 0; i < len; i++) {
			stamp_sector(buf + i * SECTOR, TAG, first + i, seq);
			expect[first + i] = seq;
		}
		t_pwrite(img, buf, len * SECTOR, first * SECTOR);
		t_pread(img, back, len * SECTOR, first * SECTOR);
		for (i = 0; i < len; i++) {
			uint64_t got;

			if (stamp_check(back + i * SECTOR, TAG, first + i, &got) || got != seq)
				t_fail("write %d: sector %llu does not read back", n,
				       (unsigned long long)(first + i));
		}
	}
	t_verify(img, TAG, nsect, expect, 0, "image");
	close(img);
	img = t_open_bdev(image, O_RDONLY);
	t_verify(img, TAG, nsect, expect, 0, "image (buffered, reopened)");
	close(img);
	t_verify(origin, TAG, nsect, NULL, 1, "origin");
	t_snap_destroy(&snap);
	t_expect_ok(bs_detach(origin), "detach");
	t_info("ok");
	return 0;
}

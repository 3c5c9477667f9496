// SPDX-License-Identifier: GPL-2.0-only
/*
 * boundaries ORIGIN DIFF_STORAGE
 *
 * Writes at the edges: the first and the last sector and two-sector writes
 * straddling every power-of-two boundary from 4 KiB to 64 MiB (so every
 * possible chunk and tracking block boundary), on the origin and on the
 * image, in both orders (origin first, then image, and the reverse).  Every
 * other sector of both devices must stay as it was.  ORIGIN should have a
 * size that is not a multiple of the chunk size, so that the last chunk is
 * partial.
 */
#include "bsnap.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#define TAG 0xb0dda1e5

static uint32_t seq = 2;

static void put(int fd, uint32_t *expect, uint64_t nsect, uint64_t first, uint64_t len)
{
	uint8_t *buf;
	uint64_t i;

	if (first + len > nsect)
		return;
	buf = t_alloc(len * SECTOR);
	for (i = 0; i < len; i++) {
		stamp_sector(buf + i * SECTOR, TAG, first + i, seq);
		expect[first + i] = seq;
	}
	t_pwrite(fd, buf, len * SECTOR, first * SECTOR);
	seq++;
	free(buf);
}

int main(int argc, char **argv)
{
	uint32_t *exp_o, *exp_i;
	struct t_snap snap;
	char image[64], *buf;
	uint64_t nsect;
	int origin, img, k;

	if (argc != 3)
		t_fail("usage: boundaries ORIGIN DIFF_STORAGE");
	origin = t_open_bdev(argv[1], O_RDWR | O_DIRECT);
	nsect = bdev_size(origin) / SECTOR;
	exp_o = t_expect_new(nsect, 1);
	exp_i = t_expect_new(nsect, 1);
	t_stamp_range(origin, TAG, 0, nsect, 1);
	t_snap_take(&snap, argv[2], path_sectors(argv[2]), &origin, 1);
	img = t_open_image(origin, O_RDWR | O_DIRECT, image, sizeof(image));

	/* First sector: origin first, then image. */
	put(origin, exp_o, nsect, 0, 1);
	put(img, exp_i, nsect, 0, 1);
	/* Last sector: image first, then origin (must not overwrite the image's copy). */
	put(img, exp_i, nsect, nsect - 1, 1);
	put(origin, exp_o, nsect, nsect - 1, 1);
	for (k = 12; k <= 26; k++) {
		uint64_t b = (1ull << k) / SECTOR;

		/* origin at 2^k, image at 3 * 2^k; then both at 5 * 2^k in turn */
		put(origin, exp_o, nsect, b - 1, 2);
		put(img, exp_i, nsect, 3 * b - 1, 2);
		if (k & 1) {
			put(origin, exp_o, nsect, 5 * b - 1, 2);
			put(img, exp_i, nsect, 5 * b - 1, 2);
		} else {
			put(img, exp_i, nsect, 5 * b - 1, 2);
			put(origin, exp_o, nsect, 5 * b - 1, 2);
		}
	}
	t_info("%u writes done", seq - 2);

	/* Nothing beyond the end: a write there fails, a read gives nothing. */
	buf = t_alloc(SECTOR);
	if (pwrite(img, buf, SECTOR, nsect * SECTOR) >= 0)
		t_fail("a write past the end of the image succeeded");
	if (pread(img, buf, SECTOR, nsect * SECTOR) > 0)
		t_fail("a read past the end of the image returned data");

	t_verify(origin, TAG, nsect, exp_o, 0, "origin");
	t_verify(img, TAG, nsect, exp_i, 0, "image");

	/* The same through the page cache (buffered reads, readahead). */
	close(img);
	img = t_open_bdev(image, O_RDONLY);
	t_verify(img, TAG, nsect, exp_i, 0, "image (buffered)");
	close(img);
	t_snap_destroy(&snap);
	t_expect_ok(bs_detach(origin), "detach");
	t_info("ok");
	return 0;
}

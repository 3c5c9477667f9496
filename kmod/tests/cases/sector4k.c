// SPDX-License-Identifier: GPL-2.0-only
/*
 * sector4k ORIGIN STORAGE
 *
 * A difference storage whose logical blocks are 4 KiB (STORAGE: a zram
 * device, whose driver refuses any bio not aligned to them) behind an
 * origin with 512-byte sectors.
 * The first 16 MiB of ORIGIN are stamped, a snapshot taken, and the same
 * range overwritten, so that every chunk of it has a copy in the storage;
 * once the copies are written back (sync), image reads of those chunks may
 * go to the storage device directly. Direct image reads of 512-byte
 * granularity (1 to 7 sectors at odd sectors) must then return the
 * snapshot's data, as must reads of whole chunks: a bio of 512-byte
 * granularity sent to the 4 KiB device fails with EIO. (A loop device
 * with 4 KiB blocks would not show it: loop passes such bios on.)
 */
#include "bsnap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define TAG		0x4a4b5343
#define REGION		(16ull << 20)
#define SMALL_READS	2000

int main(int argc, char **argv)
{
	uint64_t nsect = REGION / SECTOR, state = 0x4096, sector, seq, i;
	char image[64];
	struct t_snap snap;
	int origin, storage, img, n = 0;
	uint8_t *buf;

	if (argc != 3)
		t_fail("usage: sector4k ORIGIN STORAGE");
	origin = t_open_bdev(argv[1], O_RDWR | O_DIRECT);
	storage = t_open_bdev(argv[2], O_RDONLY);
	if (ioctl(storage, BLKSSZGET, &n) || n != 4096)
		t_fail("%s: logical block size %d, not 4096", argv[2], n);
	close(storage);

	t_stamp_range(origin, TAG, 0, nsect, 1);
	t_snap_take(&snap, argv[2], path_sectors(argv[2]), &origin, 1);
	t_stamp_range(origin, TAG, 0, nsect, 2);
	/* The copies leave the storage's page cache: direct reads may go. */
	sync();

	img = t_open_image(origin, O_RDONLY | O_DIRECT, image, sizeof(image));
	buf = t_alloc(8 * SECTOR);
	for (i = 0; i < SMALL_READS; i++) {
		uint64_t len = 1 + rnd_next(&state) % 7, k;

		sector = (rnd_next(&state) % (nsect - 8)) | 1;
		if (pread(img, buf, len * SECTOR, sector * SECTOR) !=
		    (ssize_t)(len * SECTOR))
			t_fail("direct read of %llu sectors at sector %llu of the image: %s",
			       (unsigned long long)len,
			       (unsigned long long)sector, strerror(errno));
		for (k = 0; k < len; k++)
			if (stamp_check(buf + k * SECTOR, TAG, sector + k, &seq) ||
			    seq != 1)
				t_fail("image sector %llu is not the snapshot's",
				       (unsigned long long)(sector + k));
	}
	t_verify(img, TAG, nsect, NULL, 1, "image, whole chunks");
	t_verify(origin, TAG, nsect, NULL, 2, "origin");
	close(img);
	t_snap_destroy(&snap);
	printf("PASS: sector4k: %u direct reads of 1-7 sectors and the whole range from a 4 KiB-sector storage\n",
	       SMALL_READS);
	return 0;
}

// SPDX-License-Identifier: GPL-2.0-only
/*
 * destroy ORIGIN DIFF_STORAGE
 *
 * Destroying a snapshot while writes to the origin and reads of the image
 * are in flight: the destroy succeeds, no origin write fails, no image
 * read ever returns data other than the snapshot's (afterwards reads fail
 * or find the device empty, also through a file kept open), the image disappears, no snapshot is left, the
 * origin holds exactly what was written, a new snapshot works at once, and
 * detach ends tracking (a second detach: ENOENT).
 */
#include "bsnap.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TAG 0xde570000

static char image[64];
static uint64_t nsect;
static int destroyed, stop;

struct reader {
	pthread_t th;
	uint64_t reads, errors_before, errors_after, bad;
	int last_errno;
};

static void *reader(void *p)
{
	struct reader *r = p;
	uint8_t *buf = t_alloc(64 * SECTOR);
	uint64_t rnd = (uintptr_t)p, i, seq;
	int fd = t_open_bdev(image, O_RDONLY | O_DIRECT);

	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		uint64_t len = 1 + rnd_below(&rnd, 64);
		uint64_t first = rnd_below(&rnd, nsect - len + 1);
		ssize_t n = pread(fd, buf, len * SECTOR, first * SECTOR);
		/*
		 * Read the flag once the read has returned: a destroy that
		 * began while the read was in flight may fail it, and that
		 * counts as after the destroy.
		 */
		int after = __atomic_load_n(&destroyed, __ATOMIC_ACQUIRE);

		if (n < 0) {
			r->last_errno = errno;
			if (after)
				r->errors_after++;
			else
				r->errors_before++;
			if (after)
				usleep(1000);
			continue;
		}
		r->reads++;
		for (i = 0; i < (uint64_t)n / SECTOR; i++)
			if (stamp_check(buf + i * SECTOR, TAG, first + i, &seq) || seq != 1)
				r->bad++;
	}
	close(fd);
	free(buf);
	return NULL;
}

int main(int argc, char **argv)
{
	struct blksnap_cbtinfo cbt;
	struct reader rd[2] = { 0 };
	struct t_load load = { 0 };
	struct t_snap snap;
	char sys[96];
	struct stat st;
	uint32_t count;
	uint64_t i;
	int origin, img, k, ret;

	if (argc != 3)
		t_fail("usage: destroy ORIGIN DIFF_STORAGE");
	origin = t_open_bdev(argv[1], O_RDWR | O_DIRECT);
	nsect = bdev_size(origin) / SECTOR;
	t_stamp_range(origin, TAG, 0, nsect, 1);
	t_snap_take(&snap, argv[2], path_sectors(argv[2]), &origin, 1);
	img = t_open_image(origin, O_RDONLY, image, sizeof(image));
	close(img);
	snprintf(sys, sizeof(sys), "/sys/block/%s", image + 5);

	t_load_init(&load, origin, TAG, 2, 512, 64, 1);
	t_load_start(&load);
	for (k = 0; k < 2; k++)
		if (pthread_create(&rd[k].th, NULL, reader, &rd[k]))
			t_fail("pthread_create");
	usleep(3000000);
	__atomic_store_n(&destroyed, 1, __ATOMIC_RELEASE);
	ret = bs_destroy(snap.ctl, &snap.id);
	usleep(2000000);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (k = 0; k < 2; k++)
		pthread_join(rd[k].th, NULL);
	t_load_stop(&load);
	t_expect_ok(ret, "destroy under load");
	for (k = 0; k < 2; k++) {
		t_info("reader %d: %llu reads, %llu errors before the destroy, %llu after "
		       "(last: %s), %llu wrong sectors", k, (unsigned long long)rd[k].reads,
		       (unsigned long long)rd[k].errors_before,
		       (unsigned long long)rd[k].errors_after, strerror(rd[k].last_errno),
		       (unsigned long long)rd[k].bad);
		if (rd[k].bad)
			t_fail("an image read returned data that is not the snapshot's");
		if (rd[k].errors_before)
			t_fail("image reads failed before the destroy");
		if (!rd[k].reads)
			t_fail("no image read completed");
	}
	t_info("%llu origin writes", (unsigned long long)load.writes);

	for (k = 0; k < 50 && !stat(sys, &st); k++)
		usleep(100000);
	if (!stat(sys, &st))
		t_fail("%s still exists 5 s after the destroy", sys);
	count = 0;
	t_expect_ok(bs_collect(snap.ctl, NULL, &count), "collect");
	if (count)
		t_fail("%u snapshots left after the destroy", count);
	t_verify(origin, TAG, nsect, load.expect, 0, "origin");

	/* A new snapshot at once, then destroy with an image still open. */
	close(snap.ctl);
	t_snap_take(&snap, argv[2], path_sectors(argv[2]), &origin, 1);
	img = t_open_image(origin, O_RDONLY | O_DIRECT, image, sizeof(image));
	t_verify(img, TAG, nsect, load.expect, 0, "second snapshot's image");
	t_snap_destroy(&snap);
	{
		uint8_t *buf = t_alloc(4096);

		/* Writes after the destroy must never show through the old fd. */
		t_stamp_range(origin, TAG, 0, 8, 99);
		if (pread(img, buf, 4096, 0) > 0)
			t_fail("a read of a destroyed image (fd kept open) returned data");
		free(buf);
	}
	close(img);
	for (i = 0; i < 8; i++)
		load.expect[i] = 99;
	t_verify(origin, TAG, nsect, load.expect, 0, "origin at the end");

	t_expect_ok(bs_detach(origin), "detach");
	t_expect_err(bs_detach(origin), ENOENT, "second detach");
	ret = bs_cbtinfo(origin, &cbt);
	if (!ret)
		t_fail("CBTINFO still answers after detach");
	t_info("CBTINFO after detach: %s", strerror(-ret));
	t_info("ok");
	return 0;
}

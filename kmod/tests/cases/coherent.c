// SPDX-License-Identifier: GPL-2.0-only
/*
 * coherent DEV_A DEV_B DIFF_STORAGE
 *
 * Two devices in one snapshot are cut at one instant.  A writer appends
 * records 1, 2, 3, ... alternately to A and B (record r goes to device
 * r % 2, slot r / 2; each write completes before the next starts) while
 * the snapshot of both is taken.  The images must hold exactly records
 * 1..M for one M: no record missing below M, none present above M, no
 * torn record, and M between what had completed before the take was asked
 * and what had started when it returned.
 */
#include "bsnap.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define SLOT 8			/* sectors per record */
#define TAG_A 0xc0e4e4a0
#define TAG_B 0xc0e4e4b0

static int dev[2];
static uint64_t slots;
static uint32_t started, completed;
static int stop;

static void *writer(void *unused)
{
	uint8_t *buf = t_alloc(SLOT * SECTOR);
	uint32_t r, i;

	(void)unused;
	for (r = 1; r / 2 < slots && !__atomic_load_n(&stop, __ATOMIC_ACQUIRE); r++) {
		uint64_t first = (uint64_t)(r / 2) * SLOT;

		for (i = 0; i < SLOT; i++)
			stamp_sector(buf + i * SECTOR, r % 2 ? TAG_B : TAG_A, first + i, r);
		__atomic_store_n(&started, r, __ATOMIC_RELEASE);
		t_pwrite(dev[r % 2], buf, SLOT * SECTOR, first * SECTOR);
		__atomic_store_n(&completed, r, __ATOMIC_RELEASE);
	}
	free(buf);
	return NULL;
}

int main(int argc, char **argv)
{
	uint32_t before, after, maxr = 0, present = 0;
	const uint64_t batch = 256;	/* slots per read: 1 MiB */
	uint8_t *buf;
	struct t_snap snap;
	char path[64];
	uint64_t s, i, n[2];
	uint32_t *seen;
	pthread_t th;
	int img[2], d;

	if (argc != 4)
		t_fail("usage: coherent DEV_A DEV_B DIFF_STORAGE");
	for (d = 0; d < 2; d++) {
		dev[d] = t_open_bdev(argv[1 + d], O_RDWR | O_DIRECT);
		n[d] = bdev_size(dev[d]) / SECTOR;
		t_stamp_range(dev[d], d ? TAG_B : TAG_A, 0, n[d], 0);
	}
	slots = (n[0] < n[1] ? n[0] : n[1]) / SLOT;
	seen = calloc(2 * slots + 2, sizeof(*seen));
	buf = t_alloc(batch * SLOT * SECTOR);
	if (!seen)
		t_fail("out of memory");

	if (pthread_create(&th, NULL, writer, NULL))
		t_fail("pthread_create");
	usleep(1500000);
	before = __atomic_load_n(&completed, __ATOMIC_ACQUIRE);
	t_snap_take(&snap, argv[3], path_sectors(argv[3]), dev, 2);
	after = __atomic_load_n(&started, __ATOMIC_ACQUIRE);
	usleep(1000000);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	t_info("records: %u completed before the take, %u started after it, %u in all",
	       before, after, completed);
	if (before < 100 || completed <= after)
		t_fail("the writer did too little to prove anything");

	for (d = 0; d < 2; d++)
		img[d] = t_open_image(dev[d], O_RDONLY | O_DIRECT, path, sizeof(path));
	for (d = 0; d < 2; d++) {
		for (s = 0; s < slots; s++) {
			uint64_t seq0 = 0, seq;
			uint8_t *rec = buf + (s % batch) * SLOT * SECTOR;

			if (s % batch == 0)
				t_pread(img[d], buf, (slots - s < batch ? slots - s : batch) * SLOT * SECTOR,
					s * SLOT * SECTOR);
			for (i = 0; i < SLOT; i++) {
				if (stamp_check(rec + i * SECTOR, d ? TAG_B : TAG_A, s * SLOT + i, &seq))
					t_fail("image %d slot %llu: sector %llu is not a valid stamp",
					       d, (unsigned long long)s, (unsigned long long)i);
				if (i && seq != seq0)
					t_fail("image %d slot %llu is torn (%llu and %llu)", d,
					       (unsigned long long)s, (unsigned long long)seq0,
					       (unsigned long long)seq);
				seq0 = seq;
			}
			if (!seq0)
				continue;
			if (seq0 != 2 * s + d)
				t_fail("image %d slot %llu holds record %llu", d,
				       (unsigned long long)s, (unsigned long long)seq0);
			seen[seq0] = 1;
			present++;
			if (seq0 > maxr)
				maxr = seq0;
		}
	}
	for (i = 1; i <= maxr; i++)
		if (!seen[i])
			t_fail("records up to %u present, but record %llu missing: not one instant",
			       maxr, (unsigned long long)i);
	if (maxr < before || maxr > after)
		t_fail("cut at record %u, outside [%u, %u]", maxr, before, after);
	t_info("cut after record %u (%u present)", maxr, present);
	for (d = 0; d < 2; d++)
		close(img[d]);
	t_snap_destroy(&snap);
	for (d = 0; d < 2; d++)
		t_expect_ok(bs_detach(dev[d]), "detach");
	t_info("ok");
	return 0;
}

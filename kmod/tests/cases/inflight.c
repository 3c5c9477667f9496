// SPDX-License-Identifier: GPL-2.0-only
/*
 * inflight ORIGIN DIFF_STORAGE TAKES
 *
 * No write is lost between the snapshot that a backup reads and the change
 * tracking its next increment follows, with writes in flight at every take
 * and no file system to freeze (raw-device writers).
 *
 * Eight threads write stamped ranges (O_DIRECT, 1 to 128 sectors) into the
 * first 8 MiB of ORIGIN, each in 64 KiB stripes that only it writes, so a
 * copy-on-write chunk holds several writers' stripes and a write in flight
 * at a take can meet the copy of its chunk. Meanwhile the test plays backup
 * server TAKES times: take a snapshot; copy into its own copy of the region
 * the blocks that the frozen CBT map says changed since the previous take
 * (the first time: everything); compare that copy with the whole image,
 * sector by sector; destroy. A write marked in the CBT before a take but
 * still in flight at it must end up in that take's image or in the next
 * increment: otherwise the copy and the next image differ. At the end, with
 * the writers stopped, one more take: the copy must equal what the writers
 * last wrote to every sector.
 */
#include "bsnap.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TAG		0x1f11e477
#define REGION		(8ull << 20 >> 9)	/* sectors */
#define STRIPE		128ull			/* sectors: 64 KiB */
#define WRITERS		8
#define MAX_LEN		128

struct writer {
	pthread_t th;
	int fd;
	int id;
	int *stop;
	uint32_t *expect;	/* shared; each writer owns its stripes */
	uint64_t rnd;
	uint64_t writes;
	uint32_t seq;
};

static void *write_loop(void *p)
{
	struct writer *w = p;
	uint64_t nstripes = REGION / STRIPE / WRITERS;
	uint8_t *buf = t_alloc(MAX_LEN * SECTOR);

	while (!__atomic_load_n(w->stop, __ATOMIC_ACQUIRE)) {
		uint64_t stripe = rnd_below(&w->rnd, nstripes) * WRITERS + w->id;
		uint64_t len = 1 + rnd_below(&w->rnd, MAX_LEN);
		uint64_t first = stripe * STRIPE + rnd_below(&w->rnd, STRIPE - len + 1);
		uint64_t s;

		w->seq++;
		for (s = 0; s < len; s++)
			stamp_sector(buf + s * SECTOR, TAG, first + s, w->seq);
		t_pwrite(w->fd, buf, len * SECTOR, first * SECTOR);
		for (s = 0; s < len; s++)
			w->expect[first + s] = w->seq;
		w->writes++;
	}
	free(buf);
	return NULL;
}

/* Reads sectors [first, first + n) of the image into copy + first. */
static void read_into(int img, uint8_t *copy, uint64_t first, uint64_t n)
{
	t_pread(img, copy + first * SECTOR, n * SECTOR, first * SECTOR);
}

struct take_result {
	uint64_t blocks_copied;
	uint64_t mismatches;
};

/*
 * One backup: take, copy the changed blocks into @copy, compare with the
 * whole image. @prev/@gen: the last take's change number and generation
 * (gen_valid false the first time).
 */
static struct take_result backup_once(int origin, const char *storage, uint8_t *copy,
				      uint8_t *scratch, uint8_t *map, uint8_t *prev,
				      struct blksnap_uuid *gen, int *gen_valid)
{
	struct take_result r = { 0 };
	struct blksnap_cbtinfo info;
	struct t_snap snap;
	char image[64];
	uint64_t b, nblocks, bsect, s;
	int img, all;

	t_snap_take(&snap, storage, path_sectors(storage), &origin, 1);
	t_expect_ok(bs_cbtinfo(origin, &info), "CBTINFO");
	bsect = info.block_size / SECTOR;
	nblocks = (REGION + bsect - 1) / bsect;
	t_expect_ok(bs_cbtmap(origin, 0, (uint32_t)nblocks, map), "CBTMAP");
	all = !*gen_valid || memcmp(gen, &info.generation_id, sizeof(*gen));
	img = t_open_image(origin, O_RDONLY | O_DIRECT, image, sizeof(image));
	for (b = 0; b < nblocks; b++) {
		uint64_t first = b * bsect;
		uint64_t n = first + bsect > REGION ? REGION - first : bsect;

		if (all || map[b] > *prev) {
			read_into(img, copy, first, n);
			r.blocks_copied++;
		}
	}
	/* The whole image, in 1 MiB reads, against the copy. */
	for (s = 0; s < REGION; s += 2048) {
		uint64_t n = REGION - s < 2048 ? REGION - s : 2048, i;

		t_pread(img, scratch, n * SECTOR, s * SECTOR);
		for (i = 0; i < n; i++) {
			uint64_t seq_img, seq_copy;
			const uint8_t *a = scratch + i * SECTOR;
			const uint8_t *c = copy + (s + i) * SECTOR;

			if (stamp_check(a, TAG, s + i, &seq_img))
				t_fail("image sector %llu is not a valid stamp",
				       (unsigned long long)(s + i));
			if (!memcmp(a, c, SECTOR))
				continue;
			if (r.mismatches++ < 5) {
				if (stamp_check(c, TAG, s + i, &seq_copy))
					seq_copy = ~0ull;
				t_info("sector %llu (CBT block %llu, byte %u, last take %u): image seq %llu, incremental copy seq %llu",
				       (unsigned long long)(s + i),
				       (unsigned long long)((s + i) / bsect),
				       map[(s + i) / bsect], *prev,
				       (unsigned long long)seq_img,
				       (unsigned long long)seq_copy);
			}
		}
	}
	close(img);
	*prev = info.changes_number;
	memcpy(gen, &info.generation_id, sizeof(*gen));
	*gen_valid = 1;
	t_snap_destroy(&snap);
	return r;
}

int main(int argc, char **argv)
{
	struct writer w[WRITERS];
	struct blksnap_uuid gen;
	uint8_t *copy, *scratch, *map;
	uint64_t copied = 0, writes = 0, s;
	uint32_t *expect;
	int origin, takes, i, stop = 0, gen_valid = 0;
	uint8_t prev = 0;
	double t0;

	if (argc != 4)
		t_fail("usage: inflight ORIGIN DIFF_STORAGE TAKES");
	takes = atoi(argv[3]);
	origin = t_open_bdev(argv[1], O_RDWR | O_DIRECT);
	if (bdev_size(origin) / SECTOR < REGION)
		t_fail("%s is smaller than 8 MiB", argv[1]);
	t_info("stamping the first %llu sectors", REGION);
	t_stamp_range(origin, TAG, 0, REGION, 0);
	expect = calloc(REGION, sizeof(*expect));
	copy = t_alloc(REGION * SECTOR);
	scratch = t_alloc(2048 * SECTOR);
	map = t_alloc(1 << 20);
	if (!expect)
		t_fail("out of memory");

	/* The full backup, before any writer runs. */
	if (backup_once(origin, argv[2], copy, scratch, map, &prev, &gen, &gen_valid).mismatches)
		t_fail("the full copy differs from its image");

	for (i = 0; i < WRITERS; i++) {
		w[i] = (struct writer){ .fd = origin, .id = i, .stop = &stop,
					.expect = expect, .rnd = 1000 + i };
		if (pthread_create(&w[i].th, NULL, write_loop, &w[i]))
			t_fail("pthread_create");
	}
	t0 = t_now();
	for (i = 0; i < takes; i++) {
		struct take_result r;

		usleep(20000);
		r = backup_once(origin, argv[2], copy, scratch, map, &prev, &gen, &gen_valid);
		copied += r.blocks_copied;
		if (r.mismatches)
			t_fail("take %d: %llu sectors of the image differ from the incremental copy: a write in flight at an earlier take is in neither its image nor the next increment",
			       i + 1, (unsigned long long)r.mismatches);
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (i = 0; i < WRITERS; i++) {
		pthread_join(w[i].th, NULL);
		writes += w[i].writes;
	}
	t_info("%d takes in %.1f s, %llu writes during them, %llu blocks copied",
	       takes, t_now() - t0, (unsigned long long)writes, (unsigned long long)copied);
	if (writes < (uint64_t)takes)
		t_fail("only %llu writes during %d takes", (unsigned long long)writes, takes);

	/* Writers stopped: one more increment brings the copy up to date. */
	if (backup_once(origin, argv[2], copy, scratch, map, &prev, &gen, &gen_valid).mismatches)
		t_fail("the last take's image differs from the incremental copy");
	for (s = 0; s < REGION; s++) {
		uint64_t seq;

		if (stamp_check(copy + s * SECTOR, TAG, s, &seq) || seq != expect[s])
			t_fail("sector %llu: the incremental copy has seq %llu, the last write was %u",
			       (unsigned long long)s, (unsigned long long)seq, expect[s]);
	}
	t_info("every sector of the incremental copy holds the last write");
	return 0;
}

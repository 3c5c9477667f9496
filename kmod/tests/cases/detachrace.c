// SPDX-License-Identifier: GPL-2.0-only
/*
 * detachrace DEVICE DIFF_STORAGE ROUNDS
 *
 * BLKFILTER_DETACH racing the take of a snapshot that holds the device,
 * ROUNDS times, one of the two started 0-4 ms after the other. The detach is
 * refused (EBUSY) while the device is in a taken snapshot, and allowed
 * before: whichever comes first wins, and the other must fail. A detach and a take that both succeed leave a taken
 * snapshot whose device no longer has a filter, so that writes reach it
 * without copy-on-write: the image changes under its reader. Each round
 * also checks that the winner's result holds: a taken snapshot is sound
 * (no error code), a detached device takes a new filter.
 */
#include "bsnap.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int ctl, dev;
static pthread_barrier_t start;

struct round {
	struct blksnap_uuid id;
	unsigned int take_delay_us;	/* to spread the race: one of */
	unsigned int detach_delay_us;	/* the two starts later */
	int take_ret;
	int detach_ret;
};

static void *taker(void *p)
{
	struct round *r = p;

	pthread_barrier_wait(&start);
	if (r->take_delay_us)
		usleep(r->take_delay_us);
	r->take_ret = bs_take(ctl, &r->id);
	return NULL;
}

static void *detacher(void *p)
{
	struct round *r = p;

	pthread_barrier_wait(&start);
	if (r->detach_delay_us)
		usleep(r->detach_delay_us);
	r->detach_ret = bs_detach(dev);
	return NULL;
}

int main(int argc, char **argv)
{
	unsigned int rounds, i, taken = 0, detached = 0;
	uint64_t rnd = 0x5eed;
	double t0 = t_now();

	if (argc != 4)
		t_fail("usage: detachrace DEVICE DIFF_STORAGE ROUNDS");
	rounds = strtoul(argv[3], NULL, 0);
	dev = t_open_bdev(argv[1], O_RDWR);
	ctl = bs_ctl_open();
	if (ctl < 0)
		t_fail("open control device: %s", strerror(-ctl));
	if (pthread_barrier_init(&start, NULL, 2))
		t_fail("pthread_barrier_init");
	t_expect_ok(bs_attach(dev), "attach");

	for (i = 0; i < rounds; i++) {
		unsigned int delay = rnd_next(&rnd) % 4000;
		struct round r = {
			.take_delay_us = i & 1 ? delay : 0,
			.detach_delay_us = i & 1 ? 0 : delay,
		};
		struct blksnap_snapshotinfo info;
		pthread_t a, b;

		t_expect_ok(bs_create(ctl, argv[2], 65536, &r.id), "create");
		t_expect_ok(bs_snapshot_add(dev, &r.id), "add");
		if (pthread_create(&a, NULL, taker, &r) ||
		    pthread_create(&b, NULL, detacher, &r))
			t_fail("pthread_create");
		pthread_join(a, NULL);
		pthread_join(b, NULL);

		if (!r.take_ret && !r.detach_ret)
			t_fail("round %u: the take and the detach both succeeded: a taken snapshot lost its device's filter",
			       i);
		if (!r.take_ret) {
			if (r.detach_ret != -EBUSY)
				t_fail("round %u: detach of a device in a taken snapshot: %s, not EBUSY",
				       i, strerror(-r.detach_ret));
			t_expect_ok(bs_snapshot_info(dev, &info), "SNAPSHOTINFO");
			if (info.error_code)
				t_fail("round %u: the taken snapshot has error %d",
				       i, info.error_code);
			taken++;
		} else {
			if (r.detach_ret)
				t_fail("round %u: the take failed (%s) and the detach too (%s)",
				       i, strerror(-r.take_ret),
				       strerror(-r.detach_ret));
			/* ENODEV; EAGAIN if the device left while it was opened. */
			if (r.take_ret != -ENODEV && r.take_ret != -EAGAIN)
				t_fail("round %u: a take without its device's filter: %s, not ENODEV or EAGAIN",
				       i, strerror(-r.take_ret));
			detached++;
		}
		t_expect_ok(bs_destroy(ctl, &r.id), "destroy");
		if (r.take_ret)
			t_expect_ok(bs_attach(dev), "attach again after the detach");
	}
	t_expect_ok(bs_detach(dev), "detach");
	printf("PASS: detachrace: %u rounds (%u taken first, %u detached first) in %.1f s\n",
	       rounds, taken, detached, t_now() - t0);
	return 0;
}

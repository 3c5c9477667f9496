// SPDX-License-Identifier: GPL-2.0-only
/*
 * removerace BACKING DIFF_STORAGE ROUNDS
 *
 * A snapshot's destroy racing the removal of its device, ROUNDS times: a
 * loop device over BACKING is tracked and added to a new snapshot (taken
 * in odd rounds, so that the snapshot holds the device open and its
 * removal waits for the destroy), then one thread destroys the snapshot
 * while another clears and removes the loop device. Each round: the
 * destroy succeeds, the removal succeeds, no snapshot is left, and the
 * next loop device under the same number takes a new filter (a stale one
 * would refuse the attach with EALREADY). The kernel must not splat.
 */
#include "bsnap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOOP_BYTES (16ull << 20)

static int ctl, loopctl;
static pthread_barrier_t start;

struct round {
	int n;
	struct blksnap_uuid id;
	int destroy_ret;
	int remove_ret;
	int remove_tries;
};

static void *destroyer(void *p)
{
	struct round *r = p;

	pthread_barrier_wait(&start);
	r->destroy_ret = bs_destroy(ctl, &r->id);
	return NULL;
}

static void *remover(void *p)
{
	struct round *r = p;
	char path[32];
	int fd, ret;

	snprintf(path, sizeof(path), "/dev/loop%d", r->n);
	fd = open(path, O_RDONLY);
	pthread_barrier_wait(&start);
	if (fd < 0) {
		r->remove_ret = -errno;
		return NULL;
	}
	/* With the device still open elsewhere this sets autoclear. */
	if (ioctl(fd, LOOP_CLR_FD) < 0) {
		r->remove_ret = -errno;
		close(fd);
		return NULL;
	}
	close(fd);
	/* Busy until the last opener (a taken snapshot) is gone: 10 s. */
	for (r->remove_tries = 1; r->remove_tries <= 10000; r->remove_tries++) {
		ret = ioctl(loopctl, LOOP_CTL_REMOVE, r->n);
		if (ret >= 0 || errno != EBUSY)
			break;
		usleep(1000);
	}
	r->remove_ret = ret < 0 ? -errno : 0;
	return NULL;
}

int main(int argc, char **argv)
{
	unsigned int rounds, i, taken = 0, waited = 0;
	double t0 = t_now();
	int backing;

	if (argc != 4)
		t_fail("usage: removerace BACKING DIFF_STORAGE ROUNDS");
	rounds = strtoul(argv[3], NULL, 0);
	backing = open(argv[1], O_RDWR);
	if (backing < 0)
		t_fail("open %s: %s", argv[1], strerror(errno));
	loopctl = open("/dev/loop-control", O_RDWR);
	if (loopctl < 0)
		t_fail("open /dev/loop-control: %s", strerror(errno));
	ctl = bs_ctl_open();
	if (ctl < 0)
		t_fail("open control device: %s", strerror(-ctl));

	for (i = 0; i < rounds; i++) {
		struct round r = { 0 };
		pthread_t a, b;
		char path[32], sys[64];
		uint32_t count = 0;
		int fd;

		r.n = t_loop_setup(loopctl, backing, LOOP_BYTES);
		snprintf(path, sizeof(path), "/dev/loop%d", r.n);
		fd = open(path, O_RDWR);
		if (fd < 0)
			t_fail("round %u: open %s: %s", i, path, strerror(errno));
		t_expect_ok(bs_attach(fd), "attach (a stale filter refuses it)");
		t_expect_ok(bs_create(ctl, argv[2], 65536, &r.id), "create");
		t_expect_ok(bs_snapshot_add(fd, &r.id), "add");
		if (i & 1) {
			t_expect_ok(bs_take(ctl, &r.id), "take");
			taken++;
		}
		close(fd);

		pthread_barrier_init(&start, NULL, 2);
		if (pthread_create(&a, NULL, destroyer, &r) ||
		    pthread_create(&b, NULL, remover, &r))
			t_fail("pthread_create");
		pthread_join(a, NULL);
		pthread_join(b, NULL);
		pthread_barrier_destroy(&start);

		if (r.destroy_ret)
			t_fail("round %u: destroy: %s", i, strerror(-r.destroy_ret));
		if (r.remove_ret)
			t_fail("round %u: remove loop%d (%d tries): %s", i, r.n,
			       r.remove_tries, strerror(-r.remove_ret));
		if (r.remove_tries > 1)
			waited++;
		t_expect_ok(bs_collect(ctl, NULL, &count), "collect");
		if (count)
			t_fail("round %u: %u snapshots left after the destroy", i,
			       count);
		snprintf(sys, sizeof(sys), "/sys/block/loop%d", r.n);
		if (!access(sys, F_OK))
			t_fail("round %u: %s still there after its removal", i,
			       sys);
	}
	t_info("%u rounds (%u taken, %u removals waited for the destroy) in %.1f s",
	       rounds, taken, waited, t_now() - t0);
	return 0;
}

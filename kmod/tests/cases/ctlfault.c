// SPDX-License-Identifier: GPL-2.0-only
/*
 * ctlfault SLOW TRACKED BACKING DIFF_STORAGE
 *
 * A user buffer that faults for seconds must not hold up the removal of
 * another tracked device. SLOW is a device whose reads take seconds (a
 * dm-delay device); a private mapping of it gives buffers whose first touch
 * waits for such a read. For each of CBTDIRTY (ranges read from the
 * buffer), CBTMAP (the map written to it) on TRACKED, and SNAPSHOT_COLLECT
 * (the ids written to it): one thread makes the call with a buffer that is
 * not yet in memory, and while it waits for its page, a tracked loop device
 * over BACKING is removed (LOOP_CLR_FD, LOOP_CTL_REMOVE), which detaches its
 * filter. The removal must end well before the call does, and the call
 * must then succeed. A module that copies user memory under a lock the
 * removal needs (the filter lock, snapshots_lock) fails this.
 */
#include "bsnap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define LOOP_BYTES	(16ull << 20)
#define PAGE		4096u
/* Buffers far apart on SLOW: no readahead of one brings in another. */
#define BUF_STRIDE	(8u << 20)
/* The removal must be this much faster than the faulting call. */
#define REMOVE_MAX_S	1.5

enum op { OP_CBTDIRTY, OP_CBTMAP, OP_COLLECT, OP_COUNT };
static const char *const op_name[OP_COUNT] = { "CBTDIRTY", "CBTMAP",
					       "SNAPSHOT_COLLECT" };

struct call {
	enum op op;
	int tracked, ctl;
	void *buf;
	uint32_t count;
	int ret;
	double end;
};

static void *caller(void *p)
{
	struct call *c = p;

	switch (c->op) {
	case OP_CBTDIRTY:
		/* The page is zeroes: empty ranges, nothing marked. */
		c->ret = bs_cbtdirty(c->tracked, c->buf, c->count);
		break;
	case OP_CBTMAP:
		c->ret = bs_cbtmap(c->tracked, 0, c->count, c->buf);
		break;
	case OP_COLLECT:
		c->ret = bs_collect(c->ctl, c->buf, &c->count);
		break;
	default:
		c->ret = -EINVAL;
	}
	c->end = t_now();
	return NULL;
}

int main(int argc, char **argv)
{
	struct blksnap_cbtinfo info;
	struct blksnap_uuid id;
	int slow, tracked, backing, loopctl, ctl;
	unsigned int op;
	void *zero;

	if (argc != 5)
		t_fail("usage: ctlfault SLOW TRACKED BACKING DIFF_STORAGE");
	slow = t_open_bdev(argv[1], O_RDWR | O_DIRECT);
	tracked = t_open_bdev(argv[2], O_RDWR);
	backing = t_open_bdev(argv[3], O_RDWR);
	loopctl = open("/dev/loop-control", O_RDWR);
	if (loopctl < 0)
		t_fail("open /dev/loop-control: %s", strerror(errno));
	ctl = bs_ctl_open();
	if (ctl < 0)
		t_fail("open control device: %s", strerror(-ctl));

	/* Zero the pages the buffers map (writes to SLOW are not delayed). */
	zero = t_alloc(PAGE);
	for (op = 0; op < OP_COUNT; op++)
		t_pwrite(slow, zero, PAGE, (uint64_t)op * BUF_STRIDE);
	if (ioctl(slow, BLKFLSBUF) < 0)
		t_fail("BLKFLSBUF %s: %s", argv[1], strerror(errno));

	t_expect_ok(bs_attach(tracked), "attach the tracked device");
	t_expect_ok(bs_cbtinfo(tracked, &info), "CBTINFO");
	/* COLLECT writes an id: one snapshot exists. */
	t_expect_ok(bs_create(ctl, argv[4], 65536, &id), "create");

	for (op = 0; op < OP_COUNT; op++) {
		struct call c = { .op = op, .tracked = tracked, .ctl = ctl };
		double t0, removed;
		pthread_t th;
		char path[32];
		int n, fd;

		n = t_loop_setup(loopctl, backing, LOOP_BYTES);
		snprintf(path, sizeof(path), "/dev/loop%d", n);
		fd = open(path, O_RDWR);
		if (fd < 0)
			t_fail("open %s: %s", path, strerror(errno));
		t_expect_ok(bs_attach(fd), "attach the loop device");
		close(fd);

		c.buf = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE,
			     slow, (off_t)op * BUF_STRIDE);
		if (c.buf == MAP_FAILED)
			t_fail("mmap %s: %s", argv[1], strerror(errno));
		madvise(c.buf, PAGE, MADV_RANDOM);
		if (op == OP_CBTDIRTY)
			c.count = PAGE / sizeof(struct blksnap_sectors);
		else if (op == OP_CBTMAP)
			c.count = info.block_count < PAGE ? info.block_count : PAGE;
		else
			c.count = PAGE / sizeof(struct blksnap_uuid);

		t0 = t_now();
		if (pthread_create(&th, NULL, caller, &c))
			t_fail("pthread_create");
		usleep(300000);
		if (c.end)
			t_fail("%s: the call ended in %.2f s: the buffer did not fault slowly (is %s slow?)",
			       op_name[op], c.end - t0, argv[1]);
		t_loop_remove(loopctl, n);
		removed = t_now();
		pthread_join(th, NULL);
		t_expect_ok(c.ret, op_name[op]);
		if (op == OP_COLLECT && c.count < 1)
			t_fail("SNAPSHOT_COLLECT found %u snapshots", c.count);
		t_info("%s: call %.2f s, removal of a tracked loop device during it %.2f s",
		       op_name[op], c.end - t0, removed - t0 - 0.3);
		if (removed - t0 - 0.3 > REMOVE_MAX_S || removed >= c.end)
			t_fail("%s: the removal of another tracked device waited for a faulting user buffer (removal %.2f s, call %.2f s)",
			       op_name[op], removed - t0 - 0.3, c.end - t0);
		munmap(c.buf, PAGE);
	}

	t_expect_ok(bs_destroy(ctl, &id), "destroy");
	t_expect_ok(bs_detach(tracked), "detach");
	printf("PASS: ctlfault: %u calls with faulting buffers, removals not held up\n",
	       OP_COUNT);
	return 0;
}

// SPDX-License-Identifier: GPL-2.0-only
/* Background writers with a known result; see struct t_load in bsnap.h. */
#include "bsnap.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct writer_arg {
	struct t_load *load;
	int index;
};

/*
 * Thread @index owns the stripes s with s % nthreads == index, so only it
 * writes expect[] entries there and the final content is known exactly.
 */
static void *writer(void *p)
{
	struct writer_arg *a = p;
	struct t_load *l = a->load;
	uint64_t rnd = 0x1234567ull * (a->index + 1) + l->nsect;
	uint64_t stripes = l->nsect / l->stripe;
	uint64_t mine = (stripes - a->index + l->nthreads - 1) / l->nthreads;
	uint8_t *buf = t_alloc((size_t)l->max_len * SECTOR);

	while (!__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
		uint64_t stripe = a->index + rnd_below(&rnd, mine) * l->nthreads;
		uint64_t off = rnd_below(&rnd, l->stripe);
		uint64_t room = l->stripe - off;
		uint64_t len = 1 + rnd_below(&rnd, room < l->max_len ? room : l->max_len);
		uint64_t first = stripe * l->stripe + off, i;
		uint32_t seq = __atomic_fetch_add(&l->seq, 1, __ATOMIC_RELAXED);

		for (i = 0; i < len; i++)
			stamp_sector(buf + i * SECTOR, l->tag, first + i, seq);
		t_pwrite(l->fd, buf, len * SECTOR, first * SECTOR);
		for (i = 0; i < len; i++)
			l->expect[first + i] = seq;
		__atomic_fetch_add(&l->writes, 1, __ATOMIC_RELAXED);
	}
	free(buf);
	free(a);
	return NULL;
}

void t_load_init(struct t_load *l, int fd, uint32_t tag, int nthreads, uint64_t stripe,
		 uint32_t max_len, uint32_t seq)
{
	memset(l, 0, sizeof(*l));
	l->fd = fd;
	l->tag = tag;
	l->nsect = bdev_size(fd) / SECTOR;
	l->expect = t_expect_new(l->nsect, seq);
	l->nthreads = nthreads;
	l->stripe = stripe;
	l->max_len = max_len;
	l->seq = seq + 1;
}

void t_load_start(struct t_load *l)
{
	int i, ret;

	if (l->nthreads > T_LOAD_MAX_THREADS || l->nsect / l->stripe < (uint64_t)l->nthreads)
		t_fail("bad load parameters");
	l->stop = 0;
	for (i = 0; i < l->nthreads; i++) {
		struct writer_arg *a = malloc(sizeof(*a));

		if (!a)
			t_fail("out of memory");
		a->load = l;
		a->index = i;
		ret = pthread_create(&l->threads[i], NULL, writer, a);
		if (ret)
			t_fail("pthread_create: %s", strerror(ret));
	}
}

void t_load_stop(struct t_load *l)
{
	int i;

	__atomic_store_n(&l->stop, 1, __ATOMIC_RELEASE);
	for (i = 0; i < l->nthreads; i++)
		pthread_join(l->threads[i], NULL);
}

// SPDX-License-Identifier: GPL-2.0-only
/*
 * Buffers holding one chunk of data while it is copied.
 */
#include <linux/mm.h>
#include <linux/slab.h>
#include "diff_buffer.h"

void diff_buffer_pool_init(struct diff_buffer_pool *pool,
			   unsigned int nr_pages, unsigned int limit)
{
	spin_lock_init(&pool->lock);
	INIT_LIST_HEAD(&pool->free);
	pool->count = 0;
	pool->limit = limit;
	pool->nr_pages = nr_pages;
}

static void diff_buffer_free(struct diff_buffer *buf)
{
	unsigned int i;

	for (i = 0; i < buf->nr_pages; i++)
		__free_page(buf->bvec[i].bv_page);
	kvfree(buf);
}

void diff_buffer_pool_done(struct diff_buffer_pool *pool)
{
	struct diff_buffer *buf, *next;

	list_for_each_entry_safe(buf, next, &pool->free, link) {
		list_del(&buf->link);
		diff_buffer_free(buf);
	}
	pool->count = 0;
}

static struct diff_buffer *diff_buffer_alloc(unsigned int nr_pages, gfp_t gfp)
{
	struct diff_buffer *buf;
	unsigned int i;

	buf = kvzalloc(struct_size(buf, bvec, nr_pages), gfp);
	if (!buf)
		return NULL;
	for (i = 0; i < nr_pages; i++) {
		struct page *page = alloc_page(gfp);

		if (!page)
			goto out_free;
		bvec_set_page(&buf->bvec[i], page, PAGE_SIZE, 0);
		buf->nr_pages++;
	}
	return buf;

out_free:
	diff_buffer_free(buf);
	return NULL;
}

struct diff_buffer *diff_buffer_get(struct diff_buffer_pool *pool, gfp_t gfp)
{
	struct diff_buffer *buf;

	spin_lock(&pool->lock);
	buf = list_first_entry_or_null(&pool->free, struct diff_buffer, link);
	if (buf) {
		list_del(&buf->link);
		pool->count--;
	}
	spin_unlock(&pool->lock);
	return buf ?: diff_buffer_alloc(pool->nr_pages, gfp);
}

void diff_buffer_put(struct diff_buffer_pool *pool, struct diff_buffer *buf)
{
	spin_lock(&pool->lock);
	if (pool->count < pool->limit) {
		list_add(&buf->link, &pool->free);
		pool->count++;
		buf = NULL;
	}
	spin_unlock(&pool->lock);
	if (buf)
		diff_buffer_free(buf);
}

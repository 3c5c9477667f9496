/* SPDX-License-Identifier: GPL-2.0-only */
#ifndef __BLKSNAP_DIFF_BUFFER_H
#define __BLKSNAP_DIFF_BUFFER_H

#include <linux/bvec.h>
#include <linux/list.h>
#include <linux/spinlock.h>

/**
 * struct diff_buffer - memory for the data of one chunk
 * @link:	in diff_buffer_pool.free while unused
 * @nr_pages:	pages at @bvec
 * @bvec:	one whole page per element
 */
struct diff_buffer {
	struct list_head link;
	unsigned int nr_pages;
	struct bio_vec bvec[];
};

/**
 * struct diff_buffer_pool - unused chunk buffers of one device, for reuse
 * @lock:	guards @free and @count
 * @free:	unused buffers
 * @count:	buffers in @free
 * @limit:	most buffers kept in @free
 * @nr_pages:	pages per buffer (the chunk size)
 */
struct diff_buffer_pool {
	spinlock_t lock;	/* guards free and count */
	struct list_head free;
	unsigned int count;
	unsigned int limit;
	unsigned int nr_pages;
};

void diff_buffer_pool_init(struct diff_buffer_pool *pool,
			   unsigned int nr_pages, unsigned int limit);
void diff_buffer_pool_done(struct diff_buffer_pool *pool);
struct diff_buffer *diff_buffer_get(struct diff_buffer_pool *pool, gfp_t gfp);
void diff_buffer_put(struct diff_buffer_pool *pool, struct diff_buffer *buf);

#endif /* __BLKSNAP_DIFF_BUFFER_H */

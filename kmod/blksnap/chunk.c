// SPDX-License-Identifier: GPL-2.0-only
/*
 * Chunks: copying one from the origin to the difference storage, and
 * synchronous block I/O on behalf of the copy and of the image.
 */
#define pr_fmt(fmt) KBUILD_MODNAME "-chunk: " fmt

#include <linux/slab.h>
#include "chunk.h"
#include "diff_area.h"
#include "diff_buffer.h"
#include "diff_storage.h"
#include "intercept.h"

/* Bios for our own reads of the origin: a mempool keeps them coming. */
static struct bio_set chunk_bioset;
static struct kmem_cache *chunk_cache;

int chunk_init(void)
{
	int ret;

	chunk_cache = KMEM_CACHE(chunk, 0);
	if (!chunk_cache)
		return -ENOMEM;
	ret = bioset_init(&chunk_bioset, 64, 0, BIOSET_NEED_BVECS);
	if (ret)
		kmem_cache_destroy(chunk_cache);
	return ret;
}

void chunk_done(void)
{
	bioset_exit(&chunk_bioset);
	kmem_cache_destroy(chunk_cache);
}

void chunk_free(struct chunk *chunk)
{
	kmem_cache_free(chunk_cache, chunk);
}

static void blksnap_io_end(struct bio *bio)
{
	struct blksnap_io *io = bio->bi_private;
	int ret = blk_status_to_errno(bio->bi_status);

	if (ret)
		cmpxchg(&io->error, 0, ret);
	bio_put(bio);
	if (atomic_dec_and_test(&io->pending))
		complete(&io->done);
}

void blksnap_io_init(struct blksnap_io *io)
{
	atomic_set(&io->pending, 1);
	io->error = 0;
	init_completion(&io->done);
}

/*
 * Start reading or writing @bytes at @sector of @bdev, from or to the data
 * of the bvecs that follows their first @skip bytes; blksnap_io_wait()
 * waits for the end of everything started on @io. Must not be called from a
 * bio submission context.
 */
void blksnap_io_submit(struct blksnap_io *io, struct block_device *bdev,
		       blk_opf_t opf, sector_t sector, const struct bio_vec *bvec,
		       size_t skip, size_t bytes)
{
	struct bvec_iter iter = { .bi_size = skip + bytes };

	bvec_iter_advance(bvec, &iter, skip);
	while (iter.bi_size) {
		struct bio *bio;

		bio = bio_alloc_bioset(bdev, BIO_MAX_VECS, opf, GFP_NOIO,
				       &chunk_bioset);
		bio->bi_iter.bi_sector = sector;
		bio->bi_end_io = blksnap_io_end;
		bio->bi_private = io;
		while (iter.bi_size) {
			struct bio_vec bv = bvec_iter_bvec(bvec, iter);

			if (bio_add_page(bio, bv.bv_page, bv.bv_len,
					 bv.bv_offset) != bv.bv_len)
				break;
			bvec_iter_advance_single(bvec, &iter, bv.bv_len);
		}
		sector += bio_sectors(bio);
		atomic_inc(&io->pending);
		blksnap_submit_bio(bio);
	}
}

int blksnap_io_wait(struct blksnap_io *io)
{
	if (!atomic_dec_and_test(&io->pending))
		wait_for_completion_io(&io->done);
	return io->error;
}

/*
 * Read or write @bytes at @sector of @bdev through the bvecs, waiting for
 * the end. Must not be called from a bio submission context.
 */
int blksnap_bdev_io(struct block_device *bdev, blk_opf_t opf, sector_t sector,
		    struct bio_vec *bvec, size_t bytes)
{
	struct blksnap_io io;

	blksnap_io_init(&io);
	blksnap_io_submit(&io, bdev, opf, sector, bvec, 0, bytes);
	return blksnap_io_wait(&io);
}

/*
 * Copy chunk @nr of the origin to the difference storage and publish it.
 * The caller holds the chunk's stripe lock for writing and has checked that
 * the chunk is not copied yet.
 */
int chunk_copy(struct diff_area *area, unsigned long nr)
{
	sector_t count = diff_area_chunk_sectors(area, nr);
	size_t bytes = (size_t)count << SECTOR_SHIFT;
	struct diff_buffer *buf;
	struct chunk *chunk;
	int ret;

	/* Callers run under memalloc_noio_save(): no I/O from reclaim. */
	buf = diff_buffer_get(&area->pool, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	chunk = kmem_cache_alloc(chunk_cache, GFP_NOIO);
	if (!chunk) {
		ret = -ENOMEM;
		goto out_put_buf;
	}
	ret = blksnap_bdev_io(area->orig_bdev, REQ_OP_READ,
			      diff_area_chunk_sector(area, nr), buf->bvec,
			      bytes);
	if (ret) {
		pr_err("reading chunk %lu of the origin failed: %d\n", nr, ret);
		goto out_free_chunk;
	}
	ret = diff_storage_alloc(area->storage, count, &chunk->diff_sector);
	if (ret)
		goto out_free_chunk;
	ret = diff_storage_io(area->storage, true, chunk->diff_sector,
			      buf->bvec, buf->nr_pages, 0, bytes);
	if (ret) {
		pr_err("storing chunk %lu failed: %d\n", nr, ret);
		goto out_free_chunk;
	}
	ret = xa_err(xa_store(&area->chunks, nr, chunk, GFP_NOIO));
	if (ret)
		goto out_free_chunk;
	diff_buffer_put(&area->pool, buf);
	return 0;

out_free_chunk:
	chunk_free(chunk);
out_put_buf:
	diff_buffer_put(&area->pool, buf);
	return ret;
}

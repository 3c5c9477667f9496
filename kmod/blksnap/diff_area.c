// SPDX-License-Identifier: GPL-2.0-only
/*
 * Copy-on-write for one device of a taken snapshot.
 *
 * An origin write that touches a chunk not yet copied is taken out of the
 * submission path and queued: the submitter may be a stacked driver (with
 * current->bio_list set), where waiting for our own reads would deadlock.
 * A worker copies the chunks (read origin, write difference storage), then
 * resubmits the write past the filter. The write therefore completes only
 * after the old data is safe: copy-on-write is synchronous for the writer.
 */
#define pr_fmt(fmt) KBUILD_MODNAME "-diff_area: " fmt

#include <linux/sched/mm.h>
#include <linux/slab.h>
#include "cbt_map.h"
#include "chunk.h"
#include "diff_area.h"
#include "diff_storage.h"
#include "intercept.h"
#include "params.h"
#include "snapshot.h"
#include "tracker.h"

/*
 * Copy-on-write work: origin writes wait for it, so it is on the origin's
 * writeback path and has a rescuer (WQ_MEM_RECLAIM) of its own, which image
 * work (snapimage.c) cannot occupy.
 */
static struct workqueue_struct *cow_wq;

int diff_area_init(void)
{
	cow_wq = alloc_workqueue("blksnap_cow", WQ_MEM_RECLAIM | WQ_UNBOUND, 0);
	return cow_wq ? 0 : -ENOMEM;
}

void diff_area_done(void)
{
	destroy_workqueue(cow_wq);
}

static struct rw_semaphore *chunk_stripe(struct diff_area *area,
					 unsigned long nr)
{
	return &area->stripes[nr % DIFF_AREA_STRIPES];
}

/* Chunk numbers covering [sector, sector + count), clipped to the area. */
static bool chunk_range(struct diff_area *area, sector_t sector,
			sector_t count, unsigned long *first,
			unsigned long *last)
{
	if (!count || sector >= area->capacity)
		return false;
	count = min_t(sector_t, count, area->capacity - sector);
	*first = sector >> area->chunk_shift;
	*last = (sector + count - 1) >> area->chunk_shift;
	return true;
}

static bool range_copied(struct diff_area *area, sector_t sector,
			 sector_t count)
{
	unsigned long nr, first, last;

	if (!chunk_range(area, sector, count, &first, &last))
		return true;
	for (nr = first; nr <= last; nr++)
		if (!xa_load(&area->chunks, nr))
			return false;
	return true;
}

static void copy_range(struct diff_area *area, sector_t sector,
		       sector_t count)
{
	unsigned long nr, first, last;
	int ret = 0;

	if (!chunk_range(area, sector, count, &first, &last))
		return;
	for (nr = first; nr <= last && !ret; nr++) {
		if (xa_load(&area->chunks, nr))
			continue;
		down_write(chunk_stripe(area, nr));
		if (!xa_load(&area->chunks, nr) &&
		    !snapshot_error(area->snapshot)) {
			ret = chunk_copy(area, nr);
			if (ret)
				snapshot_set_error(area->snapshot, area->dev,
						   ret);
		}
		up_write(chunk_stripe(area, nr));
	}
}

static struct bio *cow_pop(struct diff_area *area)
{
	unsigned long flags;
	struct bio *bio;

	spin_lock_irqsave(&area->cow_lock, flags);
	bio = bio_list_pop(&area->cow_bios);
	spin_unlock_irqrestore(&area->cow_lock, flags);
	return bio;
}

static void cow_work_fn(struct work_struct *work)
{
	struct diff_area *area = container_of(work, struct cow_worker,
					      work)->area;
	unsigned int noio = memalloc_noio_save();
	struct bio *bio;

	while ((bio = cow_pop(area))) {
		if (!READ_ONCE(area->stopping))
			copy_range(area, bio->bi_iter.bi_sector,
				   bio_sectors(bio));
		blksnap_submit_bio_bypass(bio);
		tracker_cow_passed(area->tracker);
	}
	memalloc_noio_restore(noio);
}

/*
 * Called from the filter for a write to the origin. Returns true when the
 * bio was taken (held for copy-on-write, or failed for REQ_NOWAIT).
 * An overflowed or corrupted snapshot no longer holds writes back.
 */
bool diff_area_cow(struct diff_area *area, struct bio *bio)
{
	unsigned long flags;

	if (snapshot_error(area->snapshot))
		return false;
	if (range_copied(area, bio->bi_iter.bi_sector, bio_sectors(bio)))
		return false;
	if (bio->bi_opf & REQ_NOWAIT) {
		bio_wouldblock_error(bio);
		return true;
	}
	tracker_cow_held(area->tracker);
	spin_lock_irqsave(&area->cow_lock, flags);
	bio_list_add(&area->cow_bios, bio);
	spin_unlock_irqrestore(&area->cow_lock, flags);
	queue_work(cow_wq, &area->cow_work[(unsigned int)
		   atomic_inc_return(&area->cow_next) %
		   DIFF_AREA_COW_WORKERS].work);
	return true;
}

/* Chunks one image_read_part() handles (a bitmap of them is on the stack). */
#define IMAGE_READ_CHUNKS	256

/*
 * The part of chunk @nr within [@sector, @end): its start in the image,
 * its length and where that data lies in the storage (if @chunk).
 */
static void chunk_part(struct diff_area *area, unsigned long nr,
		       struct chunk *chunk, sector_t sector, sector_t end,
		       sector_t *start, sector_t *len, sector_t *diff)
{
	sector_t first = diff_area_chunk_sector(area, nr);

	*start = max(sector, first);
	*len = min(end, first + diff_area_chunk_sectors(area, nr)) - *start;
	*diff = chunk ? chunk->diff_sector + *start - first : 0;
}

/*
 * Read [@sector, @sector + @count) of the image, at most IMAGE_READ_CHUNKS
 * chunks, into the bvecs' data past their first @skip bytes.
 *
 * Each chunk is read once, from where its snapshot data is: chunks with a
 * copy from the difference storage, the others from the origin. Neighbours
 * of one kind are read in one go (copies only when they lie contiguously in
 * the storage). Origin parts are submitted without waiting and proceed
 * while the storage parts met after them are read.
 *
 * No lock is taken. A copy, once published, never goes away, and an origin
 * write to a chunk is let through only after the chunk's copy is published.
 * So a chunk still without a copy once its origin read has completed had no
 * new data written to it before that read; a chunk that got a copy in the
 * meantime is read again from the copy. A snapshot that became corrupted
 * meanwhile may have let writes through uncopied: the read then fails.
 */
static int image_read_part(struct diff_area *area, sector_t sector,
			   sector_t count, struct bio_vec *bvec,
			   unsigned int nr_bvec, size_t skip)
{
	DECLARE_BITMAP(from_origin, IMAGE_READ_CHUNKS);
	sector_t end = sector + count;
	sector_t run_start = 0, run_len = 0, run_diff = 0;
	bool run_copied = false;
	unsigned long nr, first, last;
	struct blksnap_io io;
	int ret = 0, err;

	if (!chunk_range(area, sector, count, &first, &last) ||
	    last - first >= IMAGE_READ_CHUNKS)
		return -EIO;
	bitmap_zero(from_origin, IMAGE_READ_CHUNKS);
	blksnap_io_init(&io);
	for (nr = first; nr <= last + 1 && !ret; nr++) {
		struct chunk *chunk = NULL;
		sector_t start = 0, len = 0, diff = 0;

		if (nr <= last) {
			chunk = xa_load(&area->chunks, nr);
			chunk_part(area, nr, chunk, sector, end, &start, &len,
				   &diff);
			if (!chunk)
				__set_bit(nr - first, from_origin);
			/* Extend the run when this part continues it. */
			if (run_len && run_copied == !!chunk &&
			    (!chunk || run_diff + run_len == diff)) {
				run_len += len;
				continue;
			}
		}
		if (run_len && run_copied)
			ret = diff_storage_io(area->storage, false, run_diff,
					      bvec, nr_bvec,
					      skip + ((size_t)(run_start - sector)
						      << SECTOR_SHIFT),
					      (size_t)run_len << SECTOR_SHIFT);
		else if (run_len)
			blksnap_io_submit(&io, area->orig_bdev, REQ_OP_READ,
					  run_start, bvec,
					  skip + ((size_t)(run_start - sector)
						  << SECTOR_SHIFT),
					  (size_t)run_len << SECTOR_SHIFT);
		run_start = start;
		run_len = len;
		run_diff = diff;
		run_copied = !!chunk;
	}
	err = blksnap_io_wait(&io);
	if (ret || err)
		return ret ?: err;

	/* Chunks copied while the origin was read: read their copies. */
	for_each_set_bit(nr, from_origin, last - first + 1) {
		struct chunk *chunk = xa_load(&area->chunks, first + nr);
		sector_t start, len, diff;

		if (!chunk)
			continue;
		chunk_part(area, first + nr, chunk, sector, end, &start, &len,
			   &diff);
		ret = diff_storage_io(area->storage, false, diff, bvec, nr_bvec,
				      skip + ((size_t)(start - sector)
					      << SECTOR_SHIFT),
				      (size_t)len << SECTOR_SHIFT);
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * Whether the image can no longer be trusted: the snapshot failed, or the
 * origin's filter has been unpublished by a detach (device removal) that
 * has not marked the snapshot failed yet. From that moment writes reach the
 * origin without copy-on-write, so a read of the origin that ends after it
 * may hold them; one that ended before it, checked here after its end,
 * does not. Safe in any context.
 */
static bool area_lost(struct diff_area *area)
{
	if (snapshot_error(area->snapshot))
		return true;
	/* Order the read's completion before the look at the filter. */
	smp_mb();
	/* The detach marks the snapshot failed itself, in process context. */
	return !blksnap_filter_published(area->orig_bdev,
					 &area->tracker->filter);
}

/*
 * Whether [@sector, @sector + @count) of the image is, at this moment, the
 * origin's data: no chunk of it has a copy and the snapshot is sound. Safe
 * in any context (RCU lookups only).
 *
 * An image read may go to the origin directly when this holds before it is
 * submitted and still holds once it has completed (see image_read_part()).
 */
bool diff_area_image_on_origin(struct diff_area *area, sector_t sector,
			       sector_t count)
{
	unsigned long first, last;

	if (area_lost(area) ||
	    !chunk_range(area, sector, count, &first, &last))
		return false;
	return !xa_find(&area->chunks, &first, last, XA_PRESENT);
}

/*
 * Where a bio may read [@sector, @sector + @count) of the image directly, at
 * this moment: the storage's block device when every chunk of the range has
 * a copy, the copies follow each other in the storage, and the storage
 * allows direct reads of them (diff_storage_direct_bdev()); *@diff is then
 * the range's start in the storage. NULL otherwise. Safe in any context
 * (RCU lookups only). A copy, once published, stays where it is, so the
 * answer holds until the snapshot is destroyed, except for image writes to
 * the range, which race with the read as they would on any disk.
 */
struct block_device *diff_area_image_in_storage(struct diff_area *area,
						sector_t sector, sector_t count,
						sector_t *diff)
{
	sector_t end = sector + count, start, len, at;
	unsigned long nr, first, last;

	if (snapshot_error(area->snapshot) ||
	    !chunk_range(area, sector, count, &first, &last))
		return NULL;
	for (nr = first; nr <= last; nr++) {
		struct chunk *chunk = xa_load(&area->chunks, nr);

		if (!chunk)
			return NULL;
		chunk_part(area, nr, chunk, sector, end, &start, &len, &at);
		if (nr == first)
			*diff = at;
		else if (at != *diff + (start - sector))
			return NULL;
	}
	return diff_storage_direct_bdev(area->storage, *diff, count);
}

/* Whether the snapshot still holds: no overflow, no failed copy, attached. */
bool diff_area_sound(struct diff_area *area)
{
	return !area_lost(area);
}

/* Read from the snapshot image, across any number of chunks. */
static int image_read(struct diff_area *area, sector_t sector,
		      struct bio_vec *bvec, unsigned int nr_bvec, size_t bytes)
{
	sector_t count = bytes >> SECTOR_SHIFT, done = 0;
	int ret = 0;

	if (snapshot_error(area->snapshot))
		return -EIO;
	while (done < count && !ret) {
		sector_t pos = sector + done;
		/* Up to the end of the IMAGE_READ_CHUNKS-th chunk from pos. */
		sector_t limit = diff_area_chunk_sector(area,
				(pos >> area->chunk_shift) + IMAGE_READ_CHUNKS);
		sector_t part = min(count - done, limit - pos);

		ret = image_read_part(area, pos, part, bvec, nr_bvec,
				      (size_t)done << SECTOR_SHIFT);
		done += part;
	}
	if (ret)
		return ret;
	return area_lost(area) ? -EIO : 0;
}

/*
 * Write to the snapshot image, within one chunk: copy the chunk to the
 * difference storage first if it has no copy yet, then change the copy.
 */
static int image_write(struct diff_area *area, sector_t sector,
		       struct bio_vec *bvec, unsigned int nr_bvec, size_t bytes)
{
	unsigned long nr = sector >> area->chunk_shift;
	sector_t offset = sector - diff_area_chunk_sector(area, nr);
	struct rw_semaphore *stripe = chunk_stripe(area, nr);
	struct chunk *chunk;
	int ret = 0;

	down_write(stripe);
	if (snapshot_error(area->snapshot)) {
		ret = -EIO;
		goto out_unlock;
	}
	chunk = xa_load(&area->chunks, nr);
	if (!chunk) {
		ret = chunk_copy(area, nr);
		if (ret) {
			snapshot_set_error(area->snapshot, area->dev, ret);
			goto out_unlock;
		}
		chunk = xa_load(&area->chunks, nr);
	}
	ret = diff_storage_io(area->storage, true, chunk->diff_sector + offset,
			      bvec, nr_bvec, 0, bytes);
out_unlock:
	up_write(stripe);
	if (!ret)
		cbt_map_mark_both(area->tracker->cbt_map, sector,
				  bytes >> SECTOR_SHIFT);
	return ret;
}

/*
 * I/O to the snapshot image: a write must stay within one chunk, a read
 * may span several.
 */
int diff_area_image_io(struct diff_area *area, bool write, sector_t sector,
		       struct bio_vec *bvec, unsigned int nr_bvec,
		       size_t bytes)
{
	if (write)
		return image_write(area, sector, bvec, nr_bvec, bytes);
	return image_read(area, sector, bvec, nr_bvec, bytes);
}

struct diff_area *diff_area_new(struct snapshot *snapshot,
				struct tracker *tracker,
				struct diff_storage *storage,
				struct blksnap_bdev_ref *orig)
{
	unsigned int shift = chunk_minimum_shift - SECTOR_SHIFT;
	unsigned int max_shift = chunk_maximum_shift - SECTOR_SHIFT;
	struct diff_area *area;
	int i, ret;

	area = kzalloc(sizeof(*area), GFP_KERNEL);
	if (!area)
		return ERR_PTR(-ENOMEM);
	area->capacity = bdev_nr_sectors(orig->bdev);
	if (!area->capacity) {
		ret = -EINVAL;
		goto out_free;
	}
	area->orig = *orig;
	memset(orig, 0, sizeof(*orig));
	area->orig_bdev = area->orig.bdev;
	while (shift < max_shift &&
	       DIV_ROUND_UP_SECTOR_T(area->capacity, 1ULL << shift) >
	       chunk_maximum_count)
		shift++;
	area->chunk_shift = shift;
	area->chunk_count = DIV_ROUND_UP_SECTOR_T(area->capacity,
						  1ULL << shift);
	area->snapshot = snapshot;
	area->tracker = tracker;
	tracker_get(tracker);
	area->dev = tracker->dev;
	area->storage = storage;
	xa_init(&area->chunks);
	for (i = 0; i < DIFF_AREA_STRIPES; i++)
		init_rwsem(&area->stripes[i]);
	diff_buffer_pool_init(&area->pool,
			      1U << (shift + SECTOR_SHIFT - PAGE_SHIFT),
			      free_diff_buffer_pool_size);
	spin_lock_init(&area->cow_lock);
	bio_list_init(&area->cow_bios);
	for (i = 0; i < DIFF_AREA_COW_WORKERS; i++) {
		area->cow_work[i].area = area;
		INIT_WORK(&area->cow_work[i].work, cow_work_fn);
	}
	return area;

out_free:
	kfree(area);
	return ERR_PTR(ret);
}

/* The area must be unreachable from the filter already. */
void diff_area_free(struct diff_area *area)
{
	struct chunk *chunk;
	unsigned long nr;
	int i;

	WRITE_ONCE(area->stopping, true);
	for (i = 0; i < DIFF_AREA_COW_WORKERS; i++)
		flush_work(&area->cow_work[i].work);
	xa_for_each(&area->chunks, nr, chunk)
		chunk_free(chunk);
	xa_destroy(&area->chunks);
	diff_buffer_pool_done(&area->pool);
	tracker_put(area->tracker);
	blksnap_bdev_close(&area->orig);
	kfree(area);
}

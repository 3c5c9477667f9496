/* SPDX-License-Identifier: GPL-2.0-only */
#ifndef __BLKSNAP_DIFF_AREA_H
#define __BLKSNAP_DIFF_AREA_H

#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/rwsem.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>
#include "compat.h"
#include "diff_buffer.h"

struct diff_area;
struct diff_storage;
struct snapshot;
struct tracker;

/* One worker serving diff_area.cow_bios. */
struct cow_worker {
	struct work_struct work;
	struct diff_area *area;
};

/* Chunks are hashed onto this many locks (see diff_area.stripes). */
#define DIFF_AREA_STRIPES	64
/* Workers copying chunks for held origin writes, per device. */
#define DIFF_AREA_COW_WORKERS	4

/**
 * struct diff_area - copy-on-write state of one device in a taken snapshot
 * @snapshot:	the owner, which outlives the area
 * @tracker:	the device's tracker (a reference is held)
 * @orig:	the original device, opened for reading for the area's life
 * @orig_bdev:	@orig's block device
 * @dev:	its device number
 * @storage:	the snapshot's difference storage
 * @capacity:	device size in sectors at the take
 * @chunk_shift: log2 of the chunk size in sectors
 * @chunk_count: number of chunks (the last one may be shorter)
 * @chunks:	chunk number -> struct chunk, only for chunks copied to the
 *		difference storage; an entry is never removed before the area
 *		is freed, so a lookup needs no lock
 * @stripes:	chunk nr's lock is stripes[nr % DIFF_AREA_STRIPES], held for
 *		writing while the chunk is copied or its image data written,
 *		so that a chunk is copied once. Image reads take no lock (see
 *		image_read() in diff_area.c).
 * @pool:	buffers for chunk copies
 * @cow_lock:	guards @cow_bios
 * @cow_bios:	origin writes held until their chunks are copied
 * @cow_next:	which of @cow_work to wake next
 * @cow_work:	copy the chunks of @cow_bios, then resubmit them; several,
 *		so that writes to different chunks are copied in parallel
 * @stopping:	the snapshot is being destroyed: resubmit without copying
 */
struct diff_area {
	struct snapshot *snapshot;
	struct tracker *tracker;
	struct blksnap_bdev_ref orig;
	struct block_device *orig_bdev;
	dev_t dev;
	struct diff_storage *storage;
	sector_t capacity;
	unsigned int chunk_shift;
	unsigned long chunk_count;
	struct xarray chunks;
	struct rw_semaphore stripes[DIFF_AREA_STRIPES];
	struct diff_buffer_pool pool;

	spinlock_t cow_lock;	/* guards cow_bios */
	struct bio_list cow_bios;
	atomic_t cow_next;
	struct cow_worker cow_work[DIFF_AREA_COW_WORKERS];
	bool stopping;
};

int diff_area_init(void);
void diff_area_done(void);

/*
 * @orig: the device, opened by the caller (not under snapshots_lock, see
 * snapshot_take()); the area keeps it on success and @orig is left empty.
 */
struct diff_area *diff_area_new(struct snapshot *snapshot,
				struct tracker *tracker,
				struct diff_storage *storage,
				struct blksnap_bdev_ref *orig);
/* Closes the device: not under snapshots_lock. */
void diff_area_free(struct diff_area *area);
bool diff_area_cow(struct diff_area *area, struct bio *bio);
bool diff_area_image_on_origin(struct diff_area *area, sector_t sector,
			       sector_t count);
struct block_device *diff_area_image_in_storage(struct diff_area *area,
						sector_t sector, sector_t count,
						sector_t *diff);
bool diff_area_sound(struct diff_area *area);
int diff_area_image_io(struct diff_area *area, bool write, sector_t sector,
		       struct bio_vec *bvec, unsigned int nr_bvec,
		       size_t bytes);

static inline sector_t diff_area_chunk_sector(const struct diff_area *area,
					      unsigned long nr)
{
	return (sector_t)nr << area->chunk_shift;
}

static inline sector_t diff_area_chunk_sectors(const struct diff_area *area,
					       unsigned long nr)
{
	sector_t start = diff_area_chunk_sector(area, nr);

	return min_t(sector_t, 1ULL << area->chunk_shift,
		     area->capacity - start);
}

#endif /* __BLKSNAP_DIFF_AREA_H */

/* SPDX-License-Identifier: GPL-2.0-only */
#ifndef __BLKSNAP_DIFF_STORAGE_H
#define __BLKSNAP_DIFF_STORAGE_H

#include <linux/blkdev.h>
#include <linux/bvec.h>
#include <linux/mutex.h>

struct event_queue;

/**
 * struct diff_storage - where a snapshot keeps the old data of chunks
 * @file:		a block device opened exclusively, an unnamed
 *			temporary file in a directory, or a regular file
 * @bdev:		the block device holding the storage (the device
 *			itself, or the file system's), NULL if none
 * @is_blkdev:		@file is a block device: fixed size, no growth
 * @events:		the snapshot's event queue, for the no-space event
 * @lock:		guards the members below
 * @capacity:		sectors usable now
 * @filled:		sectors handed out (from 0 upwards)
 * @limit:		sectors the storage may grow to
 * @overflowed:		the no-space event was sent
 */
struct diff_storage {
	struct file *file;
	struct block_device *bdev;
	bool is_blkdev;
	struct event_queue *events;

	struct mutex lock;	/* guards capacity, filled, limit, overflowed */
	sector_t capacity;
	sector_t filled;
	sector_t limit;
	bool overflowed;
};

struct diff_storage *diff_storage_open(const char *path, sector_t limit,
				       struct event_queue *events);
void diff_storage_close(struct diff_storage *storage);
int diff_storage_alloc(struct diff_storage *storage, sector_t count,
		       sector_t *sector);
int diff_storage_io(struct diff_storage *storage, bool write, sector_t sector,
		    struct bio_vec *bvec, unsigned int nr_bvec, size_t skip,
		    size_t bytes);
struct block_device *diff_storage_direct_bdev(struct diff_storage *storage,
					      sector_t sector, sector_t count);
bool diff_storage_on_device(struct diff_storage *storage,
			    struct block_device *bdev);

#endif /* __BLKSNAP_DIFF_STORAGE_H */

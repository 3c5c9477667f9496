/* SPDX-License-Identifier: GPL-2.0-only */
#ifndef __BLKSNAP_CHUNK_H
#define __BLKSNAP_CHUNK_H

#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/completion.h>

struct diff_area;

/**
 * struct chunk - a chunk whose snapshot data differs from the origin
 * @diff_sector:	where its data starts in the difference storage
 *
 * Chunks are the copy-on-write unit. A struct chunk exists only for chunks
 * that were copied to the difference storage (the origin was written, or
 * the image was); every other chunk of the image reads the origin.
 */
struct chunk {
	sector_t diff_sector;
};

int chunk_init(void);
void chunk_done(void);

int chunk_copy(struct diff_area *area, unsigned long nr);
void chunk_free(struct chunk *chunk);

/**
 * struct blksnap_io - block I/O started in parts and waited for as a whole
 * @pending:	parts in flight, plus one until blksnap_io_wait()
 * @error:	the first error of a part
 * @done:	completed when the last part ends
 */
struct blksnap_io {
	atomic_t pending;
	int error;
	struct completion done;
};

void blksnap_io_init(struct blksnap_io *io);
void blksnap_io_submit(struct blksnap_io *io, struct block_device *bdev,
		       blk_opf_t opf, sector_t sector, const struct bio_vec *bvec,
		       size_t skip, size_t bytes);
int blksnap_io_wait(struct blksnap_io *io);
int blksnap_bdev_io(struct block_device *bdev, blk_opf_t opf, sector_t sector,
		    struct bio_vec *bvec, size_t bytes);

#endif /* __BLKSNAP_CHUNK_H */

// SPDX-License-Identifier: GPL-2.0-only
/*
 * Snapshot images: writable bio-based block devices "blksnap-<MAJ>-<MIN>".
 *
 * A read of a range whose chunks have no copy is sent on to the origin as a
 * clone, without a worker (the common case, and the fastest); so is a read
 * of a range whose copies lie in one run of a block-device storage, to the
 * storage (diff_area_image_in_storage()). Other bios
 * are queued to a worker: serving them means waiting for reads of the
 * origin or of the difference storage, which the submission context (maybe
 * a stacked driver's) must not do.
 */
#define pr_fmt(fmt) KBUILD_MODNAME "-image: " fmt

#include <linux/blkdev.h>
#include <linux/idr.h>
#include <linux/module.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include "compat.h"
#include "diff_area.h"
#include "snapimage.h"

/* Segments gathered into one diff_area_image_io() call. */
#define IMAGE_BVECS	256
/* Largest bio the image asks for: the most one worker call gathers. */
#define IMAGE_MAX_SECTORS	(IMAGE_BVECS << (PAGE_SHIFT - SECTOR_SHIFT))
/* Workers per image: reads of different chunks proceed in parallel. */
#define IMAGE_WORKERS	4

struct snapimage;

/**
 * struct image_worker - serves the bios of an image
 * @work:	the work item
 * @image:	its image
 * @bvec:	scratch for this worker only
 */
struct image_worker {
	struct work_struct work;
	struct snapimage *image;
	struct bio_vec bvec[IMAGE_BVECS];
};

/**
 * struct snapimage - the block device showing one device of a snapshot
 * @area:	copy-on-write state it reads and writes
 * @disk:	the block device
 * @lock:	guards @bios, @dead and @inflight
 * @bios:	bios waiting for a worker
 * @dead:	the snapshot is gone: fail new bios (a file kept open can
 *		still submit them after del_gendisk())
 * @inflight:	reads sent on to the origin or the storage and not yet
 *		ended; the area must stay until none is left
 * @drained:	woken when @inflight falls to zero
 * @next:	the worker to wake next
 * @workers:	serve @bios
 */
struct snapimage {
	struct diff_area *area;
	struct gendisk *disk;
	spinlock_t lock;	/* guards bios */
	struct bio_list bios;
	bool dead;
	unsigned int inflight;
	wait_queue_head_t drained;
	atomic_t next;
	struct image_worker workers[IMAGE_WORKERS];
};

static int image_major;
/*
 * Image I/O work. Its own rescuer (WQ_MEM_RECLAIM): an image may be
 * written back to (a file system mounted on it), and its reads must not
 * wait behind copy-on-write work, nor that behind them.
 */
static struct workqueue_struct *image_wq;
static DEFINE_IDA(image_ida);
/* Clones of image reads sent on to the origin. */
static struct bio_set image_bioset;

static int image_serve(struct image_worker *worker, struct bio *bio,
		       bool write)
{
	struct diff_area *area = worker->image->area;
	struct bvec_iter iter = bio->bi_iter;
	int ret = 0;

	while (iter.bi_size && !ret) {
		sector_t sector = iter.bi_sector;
		unsigned long nr = sector >> area->chunk_shift;
		size_t room, bytes = 0;
		unsigned int n = 0;

		/* A write stays within a chunk; a read may cross chunks. */
		if (write)
			room = (size_t)(diff_area_chunk_sector(area, nr) +
					diff_area_chunk_sectors(area, nr) -
					sector) << SECTOR_SHIFT;
		else
			room = iter.bi_size;
		while (iter.bi_size && bytes < room && n < IMAGE_BVECS) {
			struct bio_vec bv = bio_iter_iovec(bio, iter);

			bv.bv_len = min_t(size_t, bv.bv_len, room - bytes);
			worker->bvec[n++] = bv;
			bytes += bv.bv_len;
			bio_advance_iter_single(bio, &iter, bv.bv_len);
		}
		ret = diff_area_image_io(area, write, sector, worker->bvec, n,
					 bytes);
	}
	return ret;
}

static void image_process(struct image_worker *worker, struct bio *bio)
{
	int ret;

	switch (bio_op(bio)) {
	case REQ_OP_READ:
		ret = image_serve(worker, bio, false);
		break;
	case REQ_OP_WRITE:
		ret = image_serve(worker, bio, true);
		break;
	case REQ_OP_FLUSH:
		/* The image is not persistent: nothing to make durable. */
		ret = 0;
		break;
	default:
		ret = -EOPNOTSUPP;
		break;
	}
	bio->bi_status = errno_to_blk_status(ret);
	bio_endio(bio);
}

static void image_work_fn(struct work_struct *work)
{
	struct image_worker *worker = container_of(work, struct image_worker,
						   work);
	struct snapimage *image = worker->image;
	unsigned int noio = memalloc_noio_save();
	unsigned long flags;
	struct bio *bio;

	for (;;) {
		spin_lock_irqsave(&image->lock, flags);
		bio = bio_list_pop(&image->bios);
		spin_unlock_irqrestore(&image->lock, flags);
		if (!bio)
			break;
		image_process(worker, bio);
		cond_resched();
	}
	memalloc_noio_restore(noio);
}

/* Queue @bio for a worker; the caller holds image->lock. */
static void image_queue_locked(struct snapimage *image, struct bio *bio)
{
	bio_list_add(&image->bios, bio);
	queue_work(image_wq, &image->workers[(unsigned int)
		   atomic_inc_return(&image->next) % IMAGE_WORKERS].work);
}

/* A read sent on to the origin is done with the area. */
static void image_direct_done_locked(struct snapimage *image)
{
	if (!--image->inflight)
		wake_up(&image->drained);
}

/*
 * A read sent on to the origin has ended. Its data is the snapshot's if the
 * range still has no copy now (an origin write is let through only after
 * the copy of its chunk is published); otherwise a worker reads it again.
 */
static void image_direct_end(struct bio *clone)
{
	struct bio *bio = clone->bi_private;
	struct snapimage *image = bio->bi_bdev->bd_disk->private_data;
	blk_status_t status = clone->bi_status;
	unsigned long flags;

	bio_put(clone);
	spin_lock_irqsave(&image->lock, flags);
	if (!status && !diff_area_image_on_origin(image->area,
						  bio->bi_iter.bi_sector,
						  bio_sectors(bio))) {
		image_queue_locked(image, bio);
		bio = NULL;
	}
	image_direct_done_locked(image);
	spin_unlock_irqrestore(&image->lock, flags);
	if (bio) {
		bio->bi_status = status;
		bio_endio(bio);
	}
}

/*
 * A read sent on to the difference storage has ended. Copies stay where
 * they are, so the data is the snapshot's unless the snapshot failed
 * meanwhile: image reads of a failed snapshot fail.
 */
static void image_storage_end(struct bio *clone)
{
	struct bio *bio = clone->bi_private;
	struct snapimage *image = bio->bi_bdev->bd_disk->private_data;
	blk_status_t status = clone->bi_status;
	unsigned long flags;

	bio_put(clone);
	spin_lock_irqsave(&image->lock, flags);
	if (!status && !diff_area_sound(image->area))
		status = BLK_STS_IOERR;
	image_direct_done_locked(image);
	spin_unlock_irqrestore(&image->lock, flags);
	bio->bi_status = status;
	bio_endio(bio);
}

/*
 * Whether @bio, sent to @bdev at @sector, suits @bdev's logical block size:
 * a difference storage may have 4 KiB blocks behind an origin of 512-byte
 * sectors, and its driver fails a bio of finer grain. Such reads go to a
 * worker, which reads the storage through its page cache.
 */
static bool bio_fits_blocks(struct bio *bio, struct block_device *bdev,
			    sector_t sector)
{
	unsigned int mask = bdev_logical_block_size(bdev) - 1;
	struct bvec_iter iter;
	struct bio_vec bv;

	if ((((u64)sector << SECTOR_SHIFT) | bio->bi_iter.bi_size) & mask)
		return false;
	bio_for_each_bvec(bv, bio, iter)
		if ((bv.bv_offset | bv.bv_len) & mask)
			return false;
	return true;
}

static void snapimage_submit_bio(struct bio *bio)
{
	struct snapimage *image = bio->bi_bdev->bd_disk->private_data;
	struct block_device *target = NULL;
	sector_t diff = 0;
	struct bio *clone;
	unsigned long flags;
	bool dead;

	spin_lock_irqsave(&image->lock, flags);
	dead = image->dead;
	if (!dead && bio_op(bio) == REQ_OP_READ) {
		/* All on the origin, or all in one run of the storage. */
		if (diff_area_image_on_origin(image->area,
					      bio->bi_iter.bi_sector,
					      bio_sectors(bio)))
			target = image->area->orig_bdev;
		else
			target = diff_area_image_in_storage(image->area,
							    bio->bi_iter.bi_sector,
							    bio_sectors(bio),
							    &diff);
		if (target && target != image->area->orig_bdev &&
		    !bio_fits_blocks(bio, target, diff))
			target = NULL;
	}
	if (target)
		/* Counted before the clone exists: the area stays. */
		image->inflight++;
	else if (!dead)
		image_queue_locked(image, bio);
	spin_unlock_irqrestore(&image->lock, flags);
	if (dead) {
		bio_io_error(bio);
		return;
	}
	if (!target)
		return;
	/* No waiting for a bio here: without one, a worker reads it. */
	clone = bio_alloc_clone(target, bio, GFP_NOWAIT, &image_bioset);
	if (!clone) {
		spin_lock_irqsave(&image->lock, flags);
		image_queue_locked(image, bio);
		image_direct_done_locked(image);
		spin_unlock_irqrestore(&image->lock, flags);
		return;
	}
	clone->bi_private = bio;
	if (target == image->area->orig_bdev) {
		clone->bi_end_io = image_direct_end;
	} else {
		clone->bi_iter.bi_sector = diff;
		clone->bi_end_io = image_storage_end;
	}
	submit_bio_noacct(clone);
}

static bool image_drained(struct snapimage *image)
{
	unsigned long flags;
	bool drained;

	spin_lock_irqsave(&image->lock, flags);
	drained = !image->inflight;
	spin_unlock_irqrestore(&image->lock, flags);
	return drained;
}

/* The last reference to the disk is gone (the image may outlive the
 * snapshot while a file is open on it).
 */
static void snapimage_free_disk(struct gendisk *disk)
{
	struct snapimage *image = disk->private_data;

	ida_free(&image_ida, disk->first_minor);
	kvfree(image);
}

static const struct block_device_operations snapimage_fops = {
	.owner = THIS_MODULE,
	.submit_bio = snapimage_submit_bio,
	.free_disk = snapimage_free_disk,
};

struct snapimage *snapimage_create(struct diff_area *area)
{
	struct blksnap_disk_limits limits;
	struct snapimage *image;
	struct gendisk *disk;
	int i, minor, ret;

	image = kvzalloc(sizeof(*image), GFP_KERNEL);
	if (!image)
		return ERR_PTR(-ENOMEM);
	image->area = area;
	spin_lock_init(&image->lock);
	bio_list_init(&image->bios);
	init_waitqueue_head(&image->drained);
	for (i = 0; i < IMAGE_WORKERS; i++) {
		image->workers[i].image = image;
		INIT_WORK(&image->workers[i].work, image_work_fn);
	}

	minor = ida_alloc_max(&image_ida, MINORMASK, GFP_KERNEL);
	if (minor < 0) {
		ret = minor;
		goto out_free;
	}
	/*
	 * Bios are served whole, a read across chunks in one go: let them be
	 * large. An optimal size of one chunk (at most one such bio) gives
	 * buffered readers a read-ahead window of two.
	 */
	limits.logical_block_size = bdev_logical_block_size(area->orig_bdev);
	limits.physical_block_size = bdev_physical_block_size(area->orig_bdev);
	limits.max_hw_sectors = IMAGE_MAX_SECTORS;
	limits.io_opt = min(1U << area->chunk_shift, IMAGE_MAX_SECTORS)
			<< SECTOR_SHIFT;
	disk = blksnap_alloc_disk(&limits);
	if (IS_ERR(disk)) {
		ret = PTR_ERR(disk);
		goto out_free_minor;
	}
	disk->major = image_major;
	disk->first_minor = minor;
	disk->minors = 1;
	disk->fops = &snapimage_fops;
	disk->private_data = image;
	disk->flags |= GENHD_FL_NO_PART;
	snprintf(disk->disk_name, DISK_NAME_LEN, "blksnap-%u-%u",
		 MAJOR(area->dev), MINOR(area->dev));
	set_capacity(disk, area->capacity);
	image->disk = disk;

	ret = add_disk(disk);
	if (ret)
		goto out_put_disk;
	pr_info("%s: %llu sectors, chunk %u KiB\n", disk->disk_name,
		(unsigned long long)area->capacity,
		1U << (area->chunk_shift + SECTOR_SHIFT - 10));
	return image;

out_put_disk:
	put_disk(disk);
out_free_minor:
	ida_free(&image_ida, minor);
out_free:
	kvfree(image);
	return ERR_PTR(ret);
}

/*
 * Remove the image. The diff_area may be freed on return; the struct
 * snapimage lives on until the disk's last reference goes.
 */
void snapimage_free(struct snapimage *image)
{
	unsigned long flags;
	int i;

	del_gendisk(image->disk);
	spin_lock_irqsave(&image->lock, flags);
	image->dead = true;
	spin_unlock_irqrestore(&image->lock, flags);
	/*
	 * Let the reads sent on to the origin end (they may queue bios for
	 * the workers), then serve the bios queued before; none can come
	 * after.
	 */
	wait_event(image->drained, image_drained(image));
	for (i = 0; i < IMAGE_WORKERS; i++)
		flush_work(&image->workers[i].work);
	image->area = NULL;
	put_disk(image->disk);
}

bool snapimage_is_image(struct block_device *bdev)
{
	return bdev->bd_disk->major == image_major;
}

const char *snapimage_name(struct snapimage *image)
{
	return image->disk->disk_name;
}

int snapimage_init(void)
{
	int ret;

	image_wq = alloc_workqueue("blksnap_image", WQ_MEM_RECLAIM | WQ_UNBOUND,
				   0);
	if (!image_wq)
		return -ENOMEM;
	ret = bioset_init(&image_bioset, BIO_POOL_SIZE, 0, 0);
	if (ret)
		goto out_wq;
	image_major = register_blkdev(0, "blksnap");
	if (image_major < 0) {
		ret = image_major;
		bioset_exit(&image_bioset);
		goto out_wq;
	}
	return 0;

out_wq:
	destroy_workqueue(image_wq);
	return ret;
}

void snapimage_done(void)
{
	unregister_blkdev(image_major, "blksnap");
	ida_destroy(&image_ida);
	bioset_exit(&image_bioset);
	destroy_workqueue(image_wq);
}

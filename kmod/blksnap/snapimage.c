// SPDX-License-Identifier: GPL-2.0
/*
 * Snapshot images: writable bio-based block devices "blksnap-<MAJ>-<MIN>".
 *
 * Bios are queued to a worker: serving them means waiting for reads of the
 * origin or of the difference storage, which the submission context (maybe
 * a stacked driver's) must not do.
 */
#define pr_fmt(fmt) KBUILD_MODNAME "-image: " fmt

#include <linux/blkdev.h>
#include <linux/idr.h>
#include <linux/module.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include "diff_area.h"
#include "snapimage.h"

/* Segments gathered into one diff_area_image_io() call. */
#define IMAGE_BVECS	256
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
 * @lock:	guards @bios and @dead
 * @bios:	bios waiting for a worker
 * @dead:	the snapshot is gone: fail new bios (a file kept open can
 *		still submit them after del_gendisk())
 * @next:	the worker to wake next
 * @workers:	serve @bios
 */
struct snapimage {
	struct diff_area *area;
	struct gendisk *disk;
	spinlock_t lock;	/* guards bios */
	struct bio_list bios;
	bool dead;
	atomic_t next;
	struct image_worker workers[IMAGE_WORKERS];
};

static int image_major;
static DEFINE_IDA(image_ida);

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

static void snapimage_submit_bio(struct bio *bio)
{
	struct snapimage *image = bio->bi_bdev->bd_disk->private_data;
	unsigned long flags;
	bool dead;

	spin_lock_irqsave(&image->lock, flags);
	dead = image->dead;
	if (!dead)
		bio_list_add(&image->bios, bio);
	spin_unlock_irqrestore(&image->lock, flags);
	if (dead) {
		bio_io_error(bio);
		return;
	}
	queue_work(blksnap_wq, &image->workers[(unsigned int)
		   atomic_inc_return(&image->next) % IMAGE_WORKERS].work);
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
	struct snapimage *image;
	struct gendisk *disk;
	int i, minor, ret;

	image = kvzalloc(sizeof(*image), GFP_KERNEL);
	if (!image)
		return ERR_PTR(-ENOMEM);
	image->area = area;
	spin_lock_init(&image->lock);
	bio_list_init(&image->bios);
	for (i = 0; i < IMAGE_WORKERS; i++) {
		image->workers[i].image = image;
		INIT_WORK(&image->workers[i].work, image_work_fn);
	}

	minor = ida_alloc_max(&image_ida, MINORMASK, GFP_KERNEL);
	if (minor < 0) {
		ret = minor;
		goto out_free;
	}
	disk = blk_alloc_disk(NUMA_NO_NODE);
	if (!disk) {
		ret = -ENOMEM;
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
	blk_queue_logical_block_size(disk->queue,
				     bdev_logical_block_size(area->orig_bdev));
	blk_queue_physical_block_size(disk->queue,
				      bdev_physical_block_size(area->orig_bdev));
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
	/* Serve the bios queued before; none can come after. */
	for (i = 0; i < IMAGE_WORKERS; i++)
		flush_work(&image->workers[i].work);
	image->area = NULL;
	put_disk(image->disk);
}

const char *snapimage_name(struct snapimage *image)
{
	return image->disk->disk_name;
}

int snapimage_init(void)
{
	image_major = register_blkdev(0, "blksnap");
	return image_major < 0 ? image_major : 0;
}

void snapimage_done(void)
{
	unregister_blkdev(image_major, "blksnap");
	ida_destroy(&image_ida);
}

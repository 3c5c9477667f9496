/* SPDX-License-Identifier: GPL-2.0-only */
#ifndef __BLKSNAP_COMPAT_H
#define __BLKSNAP_COMPAT_H

/*
 * The one place that knows kernel versions: a small helper per block-layer
 * API that changed between the kernels the module supports, so the .c
 * files are written once against these helpers.
 *
 * Supported: Linux 6.1 (Debian 12's default kernel) up to the 6.4 API, and
 * 6.9 onwards (Debian 12's 6.12 backport, Debian 13's default). The suite
 * runs on 6.1 and 6.12; 6.5 to 6.8 had transitional block-device open and
 * freeze APIs in between that no Debian kernel ships, and are refused at
 * build time instead of failing in some other line.
 */
#include <linux/version.h>
#include <linux/blkdev.h>
#include <linux/err.h>
#include <linux/fs.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 1, 0)
#error "blksnap needs Linux 6.1 or later"
#endif

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0) && \
	LINUX_VERSION_CODE < KERNEL_VERSION(6, 9, 0)
#error "blksnap supports Linux 6.1-6.4 and 6.9 or later, not 6.5-6.8"
#endif

#define BLKSNAP_BDEV_FILES (LINUX_VERSION_CODE >= KERNEL_VERSION(6, 9, 0))

/*
 * A block device opened for reading by dev_t, without a holder: the
 * snapshot reads the original through it, and it keeps the device (and
 * its driver) from going away under the snapshot.
 */
struct blksnap_bdev_ref {
	struct block_device *bdev;
#if BLKSNAP_BDEV_FILES
	struct file *file;	/* 6.9: block devices are opened as files */
#endif
};

static inline int blksnap_bdev_open_read(dev_t dev,
					 struct blksnap_bdev_ref *ref)
{
#if BLKSNAP_BDEV_FILES
	struct file *file = bdev_file_open_by_dev(dev, BLK_OPEN_READ, NULL,
						  NULL);

	if (IS_ERR(file))
		return PTR_ERR(file);
	ref->file = file;
	ref->bdev = file_bdev(file);
#else
	struct block_device *bdev = blkdev_get_by_dev(dev, FMODE_READ, NULL);

	if (IS_ERR(bdev))
		return PTR_ERR(bdev);
	ref->bdev = bdev;
#endif
	return 0;
}

static inline void blksnap_bdev_close(struct blksnap_bdev_ref *ref)
{
#if BLKSNAP_BDEV_FILES
	bdev_fput(ref->file);
	ref->file = NULL;
#else
	blkdev_put(ref->bdev, FMODE_READ);
#endif
	ref->bdev = NULL;
}

/* Freeze the file system on @bdev (if any) for the take, and thaw it. */
static inline int blksnap_bdev_freeze(struct block_device *bdev)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
	return bdev_freeze(bdev);
#else
	return freeze_bdev(bdev);
#endif
}

static inline int blksnap_bdev_thaw(struct block_device *bdev)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
	return bdev_thaw(bdev);
#else
	return thaw_bdev(bdev);
#endif
}

/* The queue limits of a bio-based disk, set when it is allocated. */
struct blksnap_disk_limits {
	unsigned int logical_block_size;
	unsigned int physical_block_size;
	unsigned int max_hw_sectors;
	unsigned int io_opt;
};

/* A bio-based gendisk with these limits, or an ERR_PTR. */
static inline struct gendisk *
blksnap_alloc_disk(const struct blksnap_disk_limits *limits)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 9, 0)
	struct queue_limits lim = {
		.logical_block_size = limits->logical_block_size,
		.physical_block_size = limits->physical_block_size,
		.max_hw_sectors = limits->max_hw_sectors,
		.io_opt = limits->io_opt,
	};

	return blk_alloc_disk(&lim, NUMA_NO_NODE);
#else
	struct gendisk *disk = blk_alloc_disk(NUMA_NO_NODE);

	if (!disk)
		return ERR_PTR(-ENOMEM);
	blk_queue_logical_block_size(disk->queue, limits->logical_block_size);
	blk_queue_physical_block_size(disk->queue,
				      limits->physical_block_size);
	blk_queue_max_hw_sectors(disk->queue, limits->max_hw_sectors);
	blk_queue_io_opt(disk->queue, limits->io_opt);
	return disk;
#endif
}

/*
 * BLKSNAP_CLASS_REMOVE_DEV(wrapper, fn) defines @wrapper, a remove_dev()
 * callback of a struct class_interface that calls void fn(struct device *).
 * 6.4 dropped the callbacks' class_interface argument.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
#define BLKSNAP_CLASS_REMOVE_DEV(wrapper, fn)				\
	static void wrapper(struct device *dev)				\
	{								\
		fn(dev);						\
	}
#else
#define BLKSNAP_CLASS_REMOVE_DEV(wrapper, fn)				\
	static void wrapper(struct device *dev,				\
			    struct class_interface *intf)		\
	{								\
		fn(dev);						\
	}
#endif

/*
 * vfs_iter_write() with the file system's freeze protection held, which it
 * takes itself from 6.7 on (taking it twice deadlocks against a freeze).
 */
static inline ssize_t blksnap_file_write_iter(struct file *file,
					      struct iov_iter *iter,
					      loff_t *pos)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	return vfs_iter_write(file, iter, pos, 0);
#else
	ssize_t ret;

	file_start_write(file);
	ret = vfs_iter_write(file, iter, pos, 0);
	file_end_write(file);
	return ret;
#endif
}

#endif /* __BLKSNAP_COMPAT_H */

// SPDX-License-Identifier: GPL-2.0-only
/*
 * Difference storage: a block device, an unnamed temporary file in a
 * directory, or a regular file. Space is handed out sequentially; a file
 * grows by diff_storage_minimum sectors (fallocate) up to the limit.
 */
#define pr_fmt(fmt) KBUILD_MODNAME "-diff_storage: " fmt

#include <linux/fs.h>
#include <linux/falloc.h>	/* after fs.h: it needs its types */
#include <linux/kernfs.h>
#include <linux/namei.h>
#include <linux/pagemap.h>
#include <linux/slab.h>
#include <linux/uio.h>
#include "../include/uapi/linux/blksnap.h"
#include "compat.h"
#include "diff_storage.h"
#include "event_queue.h"
#include "params.h"

/*
 * The name is looked up more than once, and may name something else each
 * time: the kind of storage is taken from the file that was opened, never
 * from an earlier lookup. The lookup first only keeps devices other than
 * block devices (whose open may have effects) from being opened at all; a
 * directory is opened as an unnamed O_TMPFILE in it, which fails on
 * anything but a directory.
 */
static struct file *storage_file_open(const char *path, bool *is_blkdev)
{
	struct file *file;
	struct path p;
	umode_t mode;
	int ret;

	ret = kern_path(path, LOOKUP_FOLLOW, &p);
	if (ret)
		return ERR_PTR(ret);
	mode = d_inode(p.dentry)->i_mode;
	path_put(&p);

	if (S_ISDIR(mode))
		file = filp_open(path, O_TMPFILE | O_RDWR | O_LARGEFILE, 0600);
	else if (S_ISBLK(mode) || S_ISREG(mode))
		/* O_EXCL: a block device is claimed; no effect on a file. */
		file = filp_open(path, O_RDWR | O_EXCL | O_LARGEFILE | O_NOCTTY,
				 0);
	else
		return ERR_PTR(-EINVAL);
	if (IS_ERR(file))
		return file;

	mode = file_inode(file)->i_mode;
	*is_blkdev = S_ISBLK(mode);
	if (!S_ISBLK(mode) && !S_ISREG(mode)) {
		filp_close(file, NULL);
		return ERR_PTR(-EINVAL);
	}
	return file;
}

struct diff_storage *diff_storage_open(const char *path, sector_t limit,
				       struct event_queue *events)
{
	struct diff_storage *storage;
	struct inode *inode;
	sector_t size;
	int ret;

	if (!*path) {
		pr_err("no storage path given\n");
		return ERR_PTR(-EINVAL);
	}
	if (!limit) {
		pr_err("'%s': the storage limit must not be 0\n", path);
		return ERR_PTR(-EINVAL);
	}
	storage = kzalloc(sizeof(*storage), GFP_KERNEL);
	if (!storage)
		return ERR_PTR(-ENOMEM);
	mutex_init(&storage->lock);
	storage->events = events;

	storage->file = storage_file_open(path, &storage->is_blkdev);
	if (IS_ERR(storage->file)) {
		ret = PTR_ERR(storage->file);
		pr_err("cannot open '%s': %d\n", path, ret);
		goto out_free;
	}
	inode = file_inode(storage->file);
	size = i_size_read(storage->file->f_mapping->host) >> SECTOR_SHIFT;
	if (storage->is_blkdev) {
		storage->bdev = I_BDEV(storage->file->f_mapping->host);
		/* A device does not grow: the limit caps the part used. */
		storage->capacity = min(size, limit);
		storage->limit = storage->capacity;
	} else {
		storage->bdev = inode->i_sb->s_bdev;
		storage->capacity = size;
		storage->limit = max(size, limit);
		/*
		 * A file that is to grow needs a file system that preallocates:
		 * a sparse file would count on space that may be gone when a
		 * copy is written, and the snapshot would fail only then. Ask
		 * now, for one page past nothing (the size stays); the growth
		 * itself still comes with the copies.
		 */
		ret = storage->capacity < storage->limit ?
		      vfs_fallocate(storage->file, FALLOC_FL_KEEP_SIZE, 0,
				    PAGE_SIZE) : 0;
		if (ret == -EOPNOTSUPP) {
			pr_err("'%s': its file system cannot preallocate space (fallocate: %d): use a block device, a file of the full size or another file system\n",
			       path, ret);
			goto out_close;
		}
	}
	return storage;

out_close:
	filp_close(storage->file, NULL);
out_free:
	kfree(storage);
	return ERR_PTR(ret);
}

void diff_storage_close(struct diff_storage *storage)
{
	filp_close(storage->file, NULL);
	kfree(storage);
}

/*
 * Is @disk stacked directly on @bdev (a device mapper or md device built on
 * it)? The block layer links each device a stacking driver holds under the
 * disk's "slaves" directory, by the device's name.
 */
static bool disk_stacked_on(struct gendisk *disk, struct block_device *bdev)
{
	struct kernfs_node *kn;

	if (!disk->slave_dir || !disk->slave_dir->sd)
		return false;
	kn = kernfs_find_and_get(disk->slave_dir->sd,
				 kobject_name(bdev_kobj(bdev)));
	kernfs_put(kn);
	return kn;
}

/*
 * Is the storage on @bdev, on the disk @bdev covers whole, or on a device
 * stacked directly on @bdev? Its writes would pass @bdev's filter and be
 * copied on write into the storage again. Deeper stacks are not seen.
 */
bool diff_storage_on_device(struct diff_storage *storage,
			    struct block_device *bdev)
{
	if (!storage->bdev)
		return false;
	if (storage->bdev == bdev)
		return true;
	if (!bdev_is_partition(bdev) && storage->bdev->bd_disk == bdev->bd_disk)
		return true;
	return disk_stacked_on(storage->bdev->bd_disk, bdev);
}

/* Called with storage->lock held. */
static int storage_grow(struct diff_storage *storage, sector_t needed)
{
	sector_t room = storage->limit - storage->capacity;
	sector_t step = max_t(sector_t, diff_storage_minimum, needed);
	int ret;

	if (storage->is_blkdev || !room)
		return -ENOSPC;
	step = min(step, room);
	ret = vfs_fallocate(storage->file, 0,
			    (loff_t)storage->capacity << SECTOR_SHIFT,
			    (loff_t)step << SECTOR_SHIFT);
	if (ret && step > needed && needed) {
		/* The file system cannot give a whole step: take what we need. */
		step = needed;
		ret = vfs_fallocate(storage->file, 0,
				    (loff_t)storage->capacity << SECTOR_SHIFT,
				    (loff_t)step << SECTOR_SHIFT);
	}
	if (ret) {
		/* A failed grow-ahead is retried with what is needed later. */
		if (needed)
			pr_warn("cannot grow the storage by %llu sectors: %d\n",
				(unsigned long long)step, ret);
		return ret;
	}
	storage->capacity += step;
	return 0;
}

static void storage_report_overflow(struct diff_storage *storage,
				    sector_t count)
{
	/* As the reference interface: the total size asked for. */
	struct blksnap_event_no_space data = {
		.requested_nr_sect = storage->filled + count,
	};

	if (storage->overflowed)
		return;
	storage->overflowed = true;
	pr_warn("difference storage is full (%llu of %llu sectors used)\n",
		(unsigned long long)storage->filled,
		(unsigned long long)storage->limit);
	event_gen(storage->events, GFP_NOIO, blksnap_event_code_no_space,
		  &data, sizeof(data));
}

/* Hand out @count sectors; -ENOSPC (and the event) at the limit. */
int diff_storage_alloc(struct diff_storage *storage, sector_t count,
		       sector_t *sector)
{
	int ret = 0;

	mutex_lock(&storage->lock);
	if (storage->filled + count > storage->capacity) {
		ret = storage_grow(storage,
				   storage->filled + count - storage->capacity);
		if (!ret && storage->filled + count > storage->capacity)
			ret = -ENOSPC;
		if (ret) {
			storage_report_overflow(storage, count);
			ret = -ENOSPC;
			goto out_unlock;
		}
	}
	*sector = storage->filled;
	storage->filled += count;
	/* Grow ahead once less than half a step is left. */
	if (!storage->is_blkdev && storage->capacity < storage->limit &&
	    storage->capacity - storage->filled < diff_storage_minimum / 2)
		storage_grow(storage, 0);
out_unlock:
	mutex_unlock(&storage->lock);
	return ret;
}

/*
 * Read or write @iter at @pos bypassing the page cache, if the storage
 * allows it for this request; -EOPNOTSUPP if not.
 *
 * Copies are written once and read back once, by whoever reads the image (a
 * backup), long after most were written. Through the page cache a write
 * costs a memory copy, a dirty page per 4 KiB and writeback throttling of
 * the copying worker, which is most of what copy-on-write costs a writer
 * (kmod/tests/bench: cow_randwrite_ratio); a read costs a page allocation
 * and a copy per page and leaves pages nobody reads again. A direct read
 * writes back a dirty part of the range first, so it also sees a copy or an
 * image write still in the page cache; a direct write drops cached pages of
 * the range. Reads go direct from any storage; writes only to a block
 * device, which takes no freeze protection (file_start_write() is for
 * files, and a file storage keeps the buffered path).
 */
static ssize_t storage_io_direct(struct diff_storage *storage, bool write,
				 struct iov_iter *iter, loff_t pos)
{
	struct file *file = storage->file;
	unsigned int mask;
	struct kiocb kiocb;
	ssize_t ret;

	if (!storage->bdev || (write && !storage->is_blkdev) ||
	    !(file->f_mode & FMODE_CAN_ODIRECT) ||
	    !(write ? file->f_op->write_iter : file->f_op->read_iter))
		return -EOPNOTSUPP;
	mask = bdev_logical_block_size(storage->bdev) - 1;
	if ((pos | iov_iter_count(iter) | iov_iter_alignment(iter)) & mask)
		return -EOPNOTSUPP;
	init_sync_kiocb(&kiocb, file);
	kiocb.ki_flags |= IOCB_DIRECT;
	kiocb.ki_pos = pos;
	ret = write ? file->f_op->write_iter(&kiocb, iter) :
		      file->f_op->read_iter(&kiocb, iter);
	/* A file system may refuse one layout: go through the cache then. */
	return ret == -EINVAL ? -EOPNOTSUPP : ret;
}

/*
 * The block device from which bios may read [@sector, @sector + @count)
 * of the storage directly, or NULL: only a storage that is a block device
 * itself, and only while no page of that range in its page cache (copies
 * and image writes go through it) is dirty or under writeback. Safe in any
 * context: no sleeping, RCU lookups only.
 */
struct block_device *diff_storage_direct_bdev(struct diff_storage *storage,
					      sector_t sector, sector_t count)
{
	loff_t pos = (loff_t)sector << SECTOR_SHIFT;

	if (!storage->is_blkdev ||
	    filemap_range_needs_writeback(storage->file->f_mapping, pos,
					  pos + ((loff_t)count << SECTOR_SHIFT) - 1))
		return NULL;
	return storage->bdev;
}

/*
 * Read or write @bytes at @sector of the storage, from or to the data of
 * the bvecs that follows the first @skip bytes.
 */
int diff_storage_io(struct diff_storage *storage, bool write, sector_t sector,
		    struct bio_vec *bvec, unsigned int nr_bvec, size_t skip,
		    size_t bytes)
{
	loff_t pos = (loff_t)sector << SECTOR_SHIFT;
	struct iov_iter iter;
	ssize_t ret;

	iov_iter_bvec(&iter, write ? ITER_SOURCE : ITER_DEST, bvec, nr_bvec,
		      skip + bytes);
	iov_iter_advance(&iter, skip);
	ret = storage_io_direct(storage, write, &iter, pos);
	if (ret == -EOPNOTSUPP && write)
		ret = blksnap_file_write_iter(storage->file, &iter, &pos);
	else if (ret == -EOPNOTSUPP)
		ret = vfs_iter_read(storage->file, &iter, &pos, 0);
	if (ret < 0)
		return ret;
	return ret == bytes ? 0 : -EIO;
}

// SPDX-License-Identifier: GPL-2.0-only
/*
 * testfilt: a block device filter for the tests of the blkfilter patches.
 *
 * It counts the bios submitted to the device it is attached to and, on
 * command, fails writes or takes bios and resubmits them later, so the tests
 * can check each thing the bio hook allows a filter to do.  The module
 * parameters "instances" and "detaches" let the tests see that a removed
 * device had its filter detached.
 */
#include <linux/bio.h>
#include <linux/blk-filter.h>
#include <linux/blkdev.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/workqueue.h>

#include "testfilt.h"

struct testfilt {
	struct blkfilter flt;
	atomic64_t reads;
	atomic64_t writes;
	atomic64_t flushes;
	atomic64_t deferred;
	atomic64_t failed;
	atomic64_t last_write_sector;
	atomic_t mode;

	spinlock_t lock;		/* guards @pending */
	struct bio_list pending;	/* bios taken in TESTFILT_MODE_DEFER */
	struct work_struct resubmit;
};

/* Changed only in attach and detach, which the block layer serialises. */
static int instances;
module_param(instances, int, 0444);
MODULE_PARM_DESC(instances, "number of attached filter instances");
static int detaches;
module_param(detaches, int, 0444);
MODULE_PARM_DESC(detaches, "number of detach calls since load");

static struct testfilt *to_testfilt(struct blkfilter *flt)
{
	return container_of(flt, struct testfilt, flt);
}

static void testfilt_resubmit(struct work_struct *work)
{
	struct testfilt *tf = container_of(work, struct testfilt, resubmit);
	struct bio_list bios;
	struct bio *bio;

	spin_lock_irq(&tf->lock);
	bios = tf->pending;
	bio_list_init(&tf->pending);
	spin_unlock_irq(&tf->lock);

	while ((bio = bio_list_pop(&bios))) {
		/* The filter has seen it: it must not come back here. */
		bio_set_flag(bio, BIO_FILTERED);
		submit_bio_noacct(bio);
	}
}

static struct blkfilter *testfilt_attach(struct block_device *bdev)
{
	struct testfilt *tf;

	tf = kzalloc(sizeof(*tf), GFP_KERNEL);
	if (!tf)
		return ERR_PTR(-ENOMEM);
	spin_lock_init(&tf->lock);
	bio_list_init(&tf->pending);
	INIT_WORK(&tf->resubmit, testfilt_resubmit);
	instances++;
	pr_info("testfilt: attached to %pg\n", bdev);
	return &tf->flt;
}

static void testfilt_detach(struct blkfilter *flt)
{
	struct testfilt *tf = to_testfilt(flt);

	/* No new bios arrive now; finish the ones still held. */
	flush_work(&tf->resubmit);
	WARN_ON(!bio_list_empty(&tf->pending));
	kfree(tf);
	instances--;
	detaches++;
	pr_info("testfilt: detached\n");
}

static int testfilt_ctl(struct blkfilter *flt, const unsigned int cmd,
			__u8 __user *buf, __u32 *plen)
{
	struct testfilt *tf = to_testfilt(flt);
	struct testfilt_stats st = { };
	u32 mode;

	switch (cmd) {
	case TESTFILT_CMD_STATS:
		if (*plen < sizeof(st)) {
			*plen = sizeof(st);
			return -ENOSPC;
		}
		st.reads = atomic64_read(&tf->reads);
		st.writes = atomic64_read(&tf->writes);
		st.flushes = atomic64_read(&tf->flushes);
		st.deferred = atomic64_read(&tf->deferred);
		st.failed = atomic64_read(&tf->failed);
		st.last_write_sector = atomic64_read(&tf->last_write_sector);
		st.mode = atomic_read(&tf->mode);
		if (copy_to_user(buf, &st, sizeof(st)))
			return -EFAULT;
		*plen = sizeof(st);
		return 0;
	case TESTFILT_CMD_MODE:
		if (*plen != sizeof(mode))
			return -EINVAL;
		if (copy_from_user(&mode, buf, sizeof(mode)))
			return -EFAULT;
		if (mode > TESTFILT_MODE_PIN)
			return -EINVAL;
		atomic_set(&tf->mode, mode);
		return 0;
	case TESTFILT_CMD_RESET:
		atomic64_set(&tf->reads, 0);
		atomic64_set(&tf->writes, 0);
		atomic64_set(&tf->flushes, 0);
		atomic64_set(&tf->deferred, 0);
		atomic64_set(&tf->failed, 0);
		atomic64_set(&tf->last_write_sector, 0);
		return 0;
	default:
		return -EINVAL;
	}
}

/* A detach requested by user space; the device going away does not ask. */
static int testfilt_may_detach(struct blkfilter *flt)
{
	return atomic_read(&to_testfilt(flt)->mode) == TESTFILT_MODE_PIN ?
		-EBUSY : 0;
}

static bool testfilt_submit_bio(struct bio *bio)
{
	struct blkfilter *flt = READ_ONCE(bio->bi_bdev->bd_filter);
	struct testfilt *tf;
	unsigned long flags;
	bool write_data;

	if (!flt)	/* being detached */
		return false;
	tf = to_testfilt(flt);

	write_data = op_is_write(bio_op(bio)) && bio_sectors(bio);
	if (bio_op(bio) == REQ_OP_READ)
		atomic64_inc(&tf->reads);
	else if (write_data)
		atomic64_inc(&tf->writes);
	else if (op_is_flush(bio->bi_opf))
		atomic64_inc(&tf->flushes);
	if (write_data)
		atomic64_set(&tf->last_write_sector, bio->bi_iter.bi_sector);

	switch (atomic_read(&tf->mode)) {
	case TESTFILT_MODE_FAIL_WRITES:
		if (!write_data)
			return false;
		atomic64_inc(&tf->failed);
		bio_io_error(bio);
		return true;
	case TESTFILT_MODE_DEFER:
		atomic64_inc(&tf->deferred);
		spin_lock_irqsave(&tf->lock, flags);
		bio_list_add(&tf->pending, bio);
		spin_unlock_irqrestore(&tf->lock, flags);
		schedule_work(&tf->resubmit);
		return true;
	default:
		return false;
	}
}

static struct blkfilter_operations testfilt_ops = {
	.owner = THIS_MODULE,
	.name = TESTFILT_NAME,
	.attach = testfilt_attach,
	.detach = testfilt_detach,
	.ctl = testfilt_ctl,
	.submit_bio = testfilt_submit_bio,
	.may_detach = testfilt_may_detach,
};

/* Same behaviour under another name: lets the tests attach two filters. */
static struct blkfilter_operations testfilt_other_ops = {
	.owner = THIS_MODULE,
	.name = TESTFILT_OTHER_NAME,
	.attach = testfilt_attach,
	.detach = testfilt_detach,
	.ctl = testfilt_ctl,
	.submit_bio = testfilt_submit_bio,
	.may_detach = testfilt_may_detach,
};

static int __init testfilt_init(void)
{
	int ret;

	ret = blkfilter_register(&testfilt_ops);
	if (ret)
		return ret;
	ret = blkfilter_register(&testfilt_other_ops);
	if (ret)
		blkfilter_unregister(&testfilt_ops);
	return ret;
}

static void __exit testfilt_exit(void)
{
	blkfilter_unregister(&testfilt_other_ops);
	blkfilter_unregister(&testfilt_ops);
}

module_init(testfilt_init);
module_exit(testfilt_exit);
MODULE_DESCRIPTION("Block device filter for testing the blkfilter hooks");
MODULE_LICENSE("GPL");

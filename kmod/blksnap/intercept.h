/* SPDX-License-Identifier: GPL-2.0-only */
#ifndef __BLKSNAP_INTERCEPT_H
#define __BLKSNAP_INTERCEPT_H

/*
 * The block-device filter API the module is written against.
 *
 * On a kernel with the block-device filter patches the API comes from
 * <linux/blk-filter.h> and the block layer calls the filter. On a stock
 * kernel intercept_ftrace.c provides the same structures, ioctls and
 * dispatch with ftrace hooks, so the rest of the module does not care.
 */
#include <linux/bio.h>
#include <linux/blkdev.h>

#ifdef BLKSNAP_NATIVE_FILTER

#include <linux/blk-filter.h>

/* NULL once a detach has begun. */
static inline struct blkfilter *blksnap_bio_filter(struct bio *bio)
{
	return READ_ONCE(bio->bi_bdev->bd_filter);
}

static inline bool blksnap_filter_published(struct block_device *bdev,
					    struct blkfilter *flt)
{
	return READ_ONCE(bdev->bd_filter) == flt;
}

#else /* BLKSNAP_NATIVE_FILTER */

struct blkfilter_operations;

/* One per filtered block device, allocated by the filter's attach(). */
struct blkfilter {
	const struct blkfilter_operations *ops;
};

/* Same members and contracts as the patched kernel's blkfilter_operations. */
struct blkfilter_operations {
	struct list_head link;
	struct module *owner;
	const char *name;
	struct blkfilter *(*attach)(struct block_device *bdev);
	void (*detach)(struct blkfilter *flt);
	int (*ctl)(struct blkfilter *flt, const unsigned int cmd,
		   __u8 __user *buf, __u32 *plen);
	bool (*submit_bio)(struct bio *bio);
	/*
	 * Stock kernels only (the patched API has no equivalent yet): may
	 * BLKFILTER_DETACH detach now? 0 or a negative errno such as -EBUSY.
	 * Removal of the device detaches regardless.
	 */
	int (*may_detach)(struct blkfilter *flt);
};

/* The filter of bio->bi_bdev, or NULL; valid inside ops->submit_bio(). */
struct blkfilter *blksnap_bio_filter(struct bio *bio);

bool blksnap_filter_published(struct block_device *bdev, struct blkfilter *flt);

#endif /* BLKSNAP_NATIVE_FILTER */

/*
 * blksnap_filter_published(bdev, flt): is @flt still the filter that bios
 * submitted to @bdev pass? False from the moment a detach unpublishes it,
 * before the filter's detach() is called: writes submitted from then on
 * are not seen by it. Any context.
 */

/* Start and stop delivering bios and ioctls to @ops. */
int blksnap_intercept_init(struct blkfilter_operations *ops);
void blksnap_intercept_exit(struct blkfilter_operations *ops);

/* Submit a bio to a filtered device without passing it to the filter. */
void blksnap_submit_bio_bypass(struct bio *bio);

/* submit_bio() for the module's own bios: they pass the filter. */
#ifdef BLKSNAP_NATIVE_FILTER
static inline void blksnap_submit_bio(struct bio *bio)
{
	submit_bio(bio);
}
#else
void blksnap_submit_bio(struct bio *bio);
#endif

/* How bios reach the filter: "native" or "ftrace". */
#ifdef BLKSNAP_NATIVE_FILTER
#define BLKSNAP_INTERCEPT_MODE "native"
#else
#define BLKSNAP_INTERCEPT_MODE "ftrace"
#endif

#endif /* __BLKSNAP_INTERCEPT_H */

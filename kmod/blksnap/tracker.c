// SPDX-License-Identifier: GPL-2.0-only
/*
 * Tracker: the blksnap block-device filter. Marks written blocks in the
 * CBT map, passes writes to copy-on-write while a snapshot is taken, and
 * serves the BLKFILTER_CTL commands.
 */
#define pr_fmt(fmt) KBUILD_MODNAME "-tracker: " fmt

#include <linux/module.h>
#include <linux/slab.h>
#include <linux/wait_bit.h>
#include <linux/uaccess.h>
#include "../include/uapi/linux/blksnap.h"
#include "cbt_map.h"
#include "diff_area.h"
#include "params.h"
#include "snapshot.h"
#include "tracker.h"

DEFINE_PERCPU_RWSEM(tracker_switch_sem);

/*
 * Every write that passes the filter goes on as a clone, so that its end is
 * seen. A write already past the filter but still in flight at a take
 * carries the old change number, and without more care it would be in no
 * later increment, while the take's image would show it or not depending
 * on whether a copy-on-write read of its chunk came first, and could even
 * change under a reader when it lands on an uncopied chunk. So:
 *  - the take, once the devices have switched and writes flow again, waits
 *    for the writes marked before it to end before it makes the images
 *    (tracker_wait_writes_before_take()): an image is never seen changing;
 *  - a write that ends after a take is marked again with the new number
 *    (cbt_map_remark()), so the next increment holds it whichever way the
 *    race with the copy went.
 * The wait is outside tracker_switch_sem: with stacked tracked devices (a
 * tracked dm device on a tracked disk) a write in flight may have to pass
 * another filter before it can end.
 */
struct tracker_write {
	struct tracker *tracker;
	struct bio *orig;
	sector_t sector;
	sector_t count;
	unsigned long seen;	/* the map's takes when it was marked */
	struct bio clone;	/* last: the bio_set's front padding */
};

static struct bio_set tracker_bioset;

/* Most ranges one CBTDIRTY command may carry. */
#define CBTDIRTY_MAX_RANGES	65536

static void tracker_release(struct kref *kref)
{
	struct tracker *tracker = container_of(kref, struct tracker, kref);

	cbt_map_destroy(tracker->cbt_map);
	kfree(tracker);
}

void tracker_get(struct tracker *tracker)
{
	kref_get(&tracker->kref);
}

void tracker_put(struct tracker *tracker)
{
	kref_put(&tracker->kref, tracker_release);
}

static inline struct tracker *to_tracker(struct blkfilter *flt)
{
	return container_of(flt, struct tracker, filter);
}

static void wait_epoch(struct tracker *tracker, unsigned long epoch)
{
	atomic_t *count = &tracker->writes_in_flight[epoch & 1];

	wait_var_event(count, !atomic_read(count));
}

/* After a take: the writes marked before it have ended. */
void tracker_wait_writes_before_take(struct tracker *tracker)
{
	wait_epoch(tracker, READ_ONCE(tracker->cbt_map->switches) - 1);
}

static void tracker_write_end(struct bio *clone)
{
	struct tracker_write *w = container_of(clone, struct tracker_write,
					       clone);
	struct tracker *tracker = w->tracker;
	struct bio *orig = w->orig;
	/* @w lives in the clone's front pad: freed with the clone below. */
	atomic_t *in_flight = &tracker->writes_in_flight[w->seen & 1];

	cbt_map_remark(tracker->cbt_map, w->sector, w->count, w->seen);
	orig->bi_status = clone->bi_status;
	bio_put(clone);
	bio_endio(orig);
	/*
	 * The waiter may free the tracker once it reads zero: wake_up_var()
	 * only hashes the address, it does not touch the tracker.
	 */
	if (atomic_dec_and_test(in_flight))
		wake_up_var(in_flight);
}

static unsigned int cow_queue_limit(void)
{
	return max(1U, READ_ONCE(chunk_maximum_in_queue));
}

void tracker_cow_held(struct tracker *tracker)
{
	atomic_inc(&tracker->cow_held);
}

void tracker_cow_passed(struct tracker *tracker)
{
	if (atomic_dec_return(&tracker->cow_held) < cow_queue_limit())
		wake_up_var(&tracker->cow_held);
}

/*
 * At most chunk_maximum_in_queue writes of a device wait for their copies:
 * beyond, a writer waits here for room (REQ_NOWAIT: EAGAIN), before the
 * switch lock, since a take waits for its holders and the copies that make
 * room may write to a storage on another tracked device. A few writers
 * coming at once may pass the limit by one each.
 */
static bool cow_queue_wait(struct tracker *tracker, bool nowait)
{
	if (atomic_read(&tracker->cow_held) < cow_queue_limit())
		return true;
	if (nowait)
		return false;
	wait_var_event(&tracker->cow_held,
		       atomic_read(&tracker->cow_held) < cow_queue_limit());
	return true;
}

static bool tracker_submit_bio(struct bio *bio)
{
	struct blkfilter *flt = blksnap_bio_filter(bio);
	bool nowait = bio->bi_opf & REQ_NOWAIT;
	struct tracker_write *w;
	struct tracker *tracker;
	struct diff_area *area;
	struct bio *clone;

	/* No filter: a detach has begun, let the bio pass. */
	if (!flt || !op_is_write(bio_op(bio)) || !bio_sectors(bio))
		return false;
	tracker = to_tracker(flt);

	if (!cow_queue_wait(tracker, nowait)) {
		bio_wouldblock_error(bio);
		return true;
	}
	if (nowait) {
		if (!percpu_down_read_trylock(&tracker_switch_sem)) {
			bio_wouldblock_error(bio);
			return true;
		}
	} else {
		percpu_down_read(&tracker_switch_sem);
	}
	/* A mempool-backed set: without REQ_NOWAIT this cannot fail. */
	clone = bio_alloc_clone(bio->bi_bdev, bio,
				nowait ? GFP_NOWAIT : GFP_NOIO,
				&tracker_bioset);
	if (!clone) {
		percpu_up_read(&tracker_switch_sem);
		bio_wouldblock_error(bio);
		return true;
	}
	w = container_of(clone, struct tracker_write, clone);
	w->tracker = tracker;
	w->orig = bio;
	clone->bi_end_io = tracker_write_end;
	w->sector = bio->bi_iter.bi_sector;
	w->count = bio_sectors(bio);
	/* The number of takes cannot move while we hold the switch lock. */
	w->seen = cbt_map_mark(tracker->cbt_map, w->sector, w->count);
	atomic_inc(&tracker->writes_in_flight[w->seen & 1]);
	area = tracker->diff_area;
	if (area && diff_area_cow(area, clone))
		clone = NULL;	/* held for copy-on-write, or failed */
	percpu_up_read(&tracker_switch_sem);
	if (clone)
		blksnap_submit_bio_bypass(clone);
	return true;
}

static struct blkfilter_operations tracker_ops;

static struct blkfilter *tracker_attach(struct block_device *bdev)
{
	struct tracker *tracker;
	int ret;

	tracker = kzalloc(sizeof(*tracker), GFP_KERNEL);
	if (!tracker)
		return ERR_PTR(-ENOMEM);
	tracker->cbt_map = cbt_map_create(bdev);
	if (IS_ERR(tracker->cbt_map)) {
		ret = PTR_ERR(tracker->cbt_map);
		kfree(tracker);
		return ERR_PTR(ret);
	}
	kref_init(&tracker->kref);
	tracker->filter.ops = &tracker_ops;
	atomic_set(&tracker->writes_in_flight[0], 0);
	atomic_set(&tracker->writes_in_flight[1], 0);
	atomic_set(&tracker->cow_held, 0);
	tracker->dev = bdev->bd_dev;
	tracker->bdev = bdev;
	pr_info("attached to %pg (%u:%u), CBT block %u bytes x %lu\n", bdev,
		MAJOR(tracker->dev), MINOR(tracker->dev),
		cbt_map_block_size(tracker->cbt_map),
		tracker->cbt_map->blk_count);
	return &tracker->filter;
}

static void tracker_detach(struct blkfilter *flt)
{
	struct tracker *tracker = to_tracker(flt);

	snapshot_tracker_detached(tracker);
	/* No write enters any more; the last ones end before the put. */
	wait_epoch(tracker, 0);
	wait_epoch(tracker, 1);
	pr_info("detached from %u:%u\n", MAJOR(tracker->dev),
		MINOR(tracker->dev));
	tracker_put(tracker);
}

static int tracker_may_detach(struct blkfilter *flt)
{
	return snapshot_tracker_may_detach(to_tracker(flt));
}

static int ctl_cbtinfo(struct tracker *tracker, __u8 __user *buf, __u32 *plen)
{
	struct cbt_map *map = tracker->cbt_map;
	struct blksnap_cbtinfo arg = {};
	unsigned long flags;

	if (*plen < sizeof(arg))
		return -EINVAL;
	spin_lock_irqsave(&map->lock, flags);
	arg.device_capacity = (__u64)map->capacity << SECTOR_SHIFT;
	arg.block_size = cbt_map_block_size(map);
	arg.block_count = map->blk_count;
	export_uuid(arg.generation_id.b, &map->generation_id);
	arg.changes_number = map->number_previous;
	spin_unlock_irqrestore(&map->lock, flags);

	if (copy_to_user(buf, &arg, sizeof(arg)))
		return -EFAULT;
	*plen = sizeof(arg);
	return 0;
}

static int ctl_cbtmap(struct tracker *tracker, __u8 __user *buf, __u32 *plen)
{
	struct blksnap_cbtmap arg;

	if (*plen < sizeof(arg))
		return -EINVAL;
	if (copy_from_user(&arg, buf, sizeof(arg)))
		return -EFAULT;
	return cbt_map_copy_frozen(tracker->cbt_map, arg.offset, arg.length,
				   u64_to_user_ptr(arg.buffer));
}

static int ctl_cbtdirty(struct tracker *tracker, __u8 __user *buf,
			__u32 *plen)
{
	struct cbt_map *map = tracker->cbt_map;
	struct blksnap_cbtdirty arg;
	struct blksnap_sectors *ranges;
	unsigned int i;
	int ret = 0;

	if (*plen < sizeof(arg))
		return -EINVAL;
	if (copy_from_user(&arg, buf, sizeof(arg)))
		return -EFAULT;
	if (!arg.count)
		return 0;
	if (arg.count > CBTDIRTY_MAX_RANGES)
		return -E2BIG;
	ranges = memdup_user(u64_to_user_ptr(arg.dirty_sectors),
			     array_size(arg.count, sizeof(*ranges)));
	if (IS_ERR(ranges))
		return PTR_ERR(ranges);
	/* Check every range before marking any. */
	for (i = 0; i < arg.count; i++) {
		if (ranges[i].offset >= map->capacity ||
		    ranges[i].count > map->capacity - ranges[i].offset) {
			ret = -ERANGE;
			goto out_free;
		}
	}
	for (i = 0; i < arg.count; i++)
		cbt_map_mark_dirty(map, ranges[i].offset, ranges[i].count);
out_free:
	kfree(ranges);
	return ret;
}

static int ctl_snapshotadd(struct tracker *tracker, __u8 __user *buf,
			   __u32 *plen)
{
	struct blksnap_snapshotadd arg;
	uuid_t id;

	if (*plen < sizeof(arg))
		return -EINVAL;
	if (copy_from_user(&arg, buf, sizeof(arg)))
		return -EFAULT;
	import_uuid(&id, arg.id.b);
	return snapshot_add_device(&id, tracker);
}

static int ctl_snapshotinfo(struct tracker *tracker, __u8 __user *buf,
			    __u32 *plen)
{
	struct blksnap_snapshotinfo arg = {};
	int ret;

	if (*plen < sizeof(arg))
		return -EINVAL;
	ret = snapshot_device_info(tracker, &arg);
	if (ret)
		return ret;
	if (copy_to_user(buf, &arg, sizeof(arg)))
		return -EFAULT;
	*plen = sizeof(arg);
	return 0;
}

static int tracker_ctl(struct blkfilter *flt, const unsigned int cmd,
		       __u8 __user *buf, __u32 *plen)
{
	struct tracker *tracker = to_tracker(flt);

	switch (cmd) {
	case BLKFILTER_CTL_BLKSNAP_CBTINFO:
		return ctl_cbtinfo(tracker, buf, plen);
	case BLKFILTER_CTL_BLKSNAP_CBTMAP:
		return ctl_cbtmap(tracker, buf, plen);
	case BLKFILTER_CTL_BLKSNAP_CBTDIRTY:
		return ctl_cbtdirty(tracker, buf, plen);
	case BLKFILTER_CTL_BLKSNAP_SNAPSHOTADD:
		return ctl_snapshotadd(tracker, buf, plen);
	case BLKFILTER_CTL_BLKSNAP_SNAPSHOTINFO:
		return ctl_snapshotinfo(tracker, buf, plen);
	default:
		return -ENOTTY;
	}
}

static struct blkfilter_operations tracker_ops = {
	.owner = THIS_MODULE,
	.name = BLKSNAP_FILTER_NAME,
	.attach = tracker_attach,
	.detach = tracker_detach,
	.ctl = tracker_ctl,
	.submit_bio = tracker_submit_bio,
	.may_detach = tracker_may_detach,
};

int tracker_init(void)
{
	int ret;

	/* The rescuer: a clone may be allocated inside another submission. */
	ret = bioset_init(&tracker_bioset, BIO_POOL_SIZE,
			  offsetof(struct tracker_write, clone),
			  BIOSET_NEED_RESCUER);
	if (ret)
		return ret;
	ret = blksnap_intercept_init(&tracker_ops);
	if (ret)
		bioset_exit(&tracker_bioset);
	return ret;
}

void tracker_done(void)
{
	blksnap_intercept_exit(&tracker_ops);
	/* Every filter is detached: no clone is left. */
	bioset_exit(&tracker_bioset);
}

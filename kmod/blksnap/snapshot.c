// SPDX-License-Identifier: GPL-2.0-only
/*
 * Snapshots: a set of devices taken at one instant, sharing a difference
 * storage and an event queue.
 */
#define pr_fmt(fmt) KBUILD_MODNAME "-snapshot: " fmt

#include <linux/blkdev.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include "cbt_map.h"
#include "compat.h"
#include "diff_area.h"
#include "diff_storage.h"
#include "event_queue.h"
#include "snapimage.h"
#include "snapshot.h"
#include "tracker.h"

/**
 * struct snapshot_member - one device of a snapshot
 * @link:	in snapshot.members
 * @tracker:	the device's filter (a reference is held)
 * @area:	copy-on-write state, from the take on
 * @image:	the image device, from the take on
 */
struct snapshot_member {
	struct list_head link;
	struct tracker *tracker;
	struct diff_area *area;
	struct snapimage *image;
};

/**
 * struct snapshot - a set of devices snapshotted together
 * @link:	in snapshots
 * @kref:	the list's reference, plus one per event waiter
 * @id:		the id user space knows it by
 * @members:	struct snapshot_member, guarded by snapshots_lock
 * @is_taken:	guarded by snapshots_lock
 * @is_destroying: no longer listed, its images are going away; guarded by
 *		snapshots_lock
 * @error:	first error that corrupted the snapshot, 0 while sound
 * @storage:	difference storage, from create to destroy
 * @events:	events for IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT
 */
struct snapshot {
	struct list_head link;
	struct kref kref;
	uuid_t id;
	struct list_head members;
	bool is_taken;
	bool is_destroying;
	atomic_t error;
	struct diff_storage *storage;
	struct event_queue events;
};

/*
 * Guards the list of snapshots, their membership and take state, and
 * tracker.snapshot/bdev. Lock order: a disk's open_mutex, then the filter
 * lock (block layer or intercept_ftrace.c), then snapshots_lock: nothing
 * opens or closes a block device under snapshots_lock (see struct
 * take_dev). Never held around del_gendisk(), which takes the filter lock.
 */
static DEFINE_MUTEX(snapshots_lock);
static LIST_HEAD(snapshots);

/*
 * Serialises take and destroy, outside every other lock: a take makes its
 * images (add_disk(), which takes the image's open_mutex) after dropping
 * snapshots_lock, and no destroy can free the areas under it meanwhile.
 */
static DEFINE_MUTEX(snapshot_ctl_lock);

static void snapshot_release(struct kref *kref)
{
	struct snapshot *snapshot = container_of(kref, struct snapshot, kref);

	event_queue_done(&snapshot->events);
	kfree(snapshot);
}

static struct snapshot *snapshot_find_locked(const uuid_t *id)
{
	struct snapshot *snapshot;

	list_for_each_entry(snapshot, &snapshots, link)
		if (uuid_equal(&snapshot->id, id))
			return snapshot;
	return NULL;
}

int snapshot_error(struct snapshot *snapshot)
{
	return atomic_read(&snapshot->error);
}

/* Mark the snapshot corrupted (first error wins) and tell user space. */
void snapshot_set_error(struct snapshot *snapshot, dev_t dev, int error)
{
	struct blksnap_event_corrupted data = {
		.dev_id_mj = MAJOR(dev),
		.dev_id_mn = MINOR(dev),
		.err_code = error,
	};

	if (atomic_cmpxchg(&snapshot->error, 0, error))
		return;
	pr_err("snapshot %pUb corrupted by device %u:%u: error %d\n",
	       &snapshot->id, MAJOR(dev), MINOR(dev), error);
	event_gen(&snapshot->events, GFP_NOIO, blksnap_event_code_corrupted,
		  &data, sizeof(data));
}

int snapshot_create(const char *path, sector_t limit, uuid_t *id)
{
	struct snapshot *snapshot;
	int ret;

	snapshot = kzalloc(sizeof(*snapshot), GFP_KERNEL);
	if (!snapshot)
		return -ENOMEM;
	kref_init(&snapshot->kref);
	INIT_LIST_HEAD(&snapshot->members);
	atomic_set(&snapshot->error, 0);
	event_queue_init(&snapshot->events);
	uuid_gen(&snapshot->id);

	snapshot->storage = diff_storage_open(path, limit, &snapshot->events);
	if (IS_ERR(snapshot->storage)) {
		ret = PTR_ERR(snapshot->storage);
		kfree(snapshot);
		return ret;
	}

	mutex_lock(&snapshots_lock);
	list_add_tail(&snapshot->link, &snapshots);
	mutex_unlock(&snapshots_lock);
	*id = snapshot->id;
	pr_info("snapshot %pUb created\n", id);
	return 0;
}

/* Called with snapshot_ctl_lock held. */
static int destroy_ctl_locked(const uuid_t *id)
{
	struct snapshot_member *member, *next;
	struct snapshot *snapshot;

	mutex_lock(&snapshots_lock);
	snapshot = snapshot_find_locked(id);
	if (!snapshot) {
		mutex_unlock(&snapshots_lock);
		return -ENOENT;
	}
	list_del(&snapshot->link);
	snapshot->is_destroying = true;
	mutex_unlock(&snapshots_lock);

	/*
	 * The images go first, while copy-on-write still protects what they
	 * show; del_gendisk() must not be called under snapshots_lock.
	 */
	list_for_each_entry(member, &snapshot->members, link)
		if (member->image)
			snapimage_free(member->image);

	mutex_lock(&snapshots_lock);
	/* Copy-on-write stops at one instant for all devices. */
	percpu_down_write(&tracker_switch_sem);
	list_for_each_entry(member, &snapshot->members, link)
		if (member->tracker->diff_area == member->area)
			member->tracker->diff_area = NULL;
	percpu_up_write(&tracker_switch_sem);
	list_for_each_entry(member, &snapshot->members, link)
		member->tracker->snapshot = NULL;
	mutex_unlock(&snapshots_lock);

	event_queue_close(&snapshot->events);
	list_for_each_entry_safe(member, next, &snapshot->members, link) {
		list_del(&member->link);
		if (member->area)
			diff_area_free(member->area);
		tracker_put(member->tracker);
		kfree(member);
	}
	diff_storage_close(snapshot->storage);
	pr_info("snapshot %pUb destroyed\n", id);
	kref_put(&snapshot->kref, snapshot_release);
	return 0;
}

int snapshot_destroy(const uuid_t *id)
{
	int ret;

	mutex_lock(&snapshot_ctl_lock);
	ret = destroy_ctl_locked(id);
	mutex_unlock(&snapshot_ctl_lock);
	return ret;
}

/* Called with snapshots_lock held; writes are held off by the caller. */
static void switch_locked(struct snapshot *snapshot)
{
	struct snapshot_member *member;

	list_for_each_entry(member, &snapshot->members, link) {
		cbt_map_switch(member->tracker->cbt_map);
		member->tracker->diff_area = member->area;
	}
	snapshot->is_taken = true;
}

/*
 * A device of a snapshot being taken. Opening a device takes its disk's
 * open_mutex, under which the block layer detaches the filters of a disk
 * or partition that goes away (and the detach takes snapshots_lock): a take
 * opens its devices before it takes snapshots_lock and closes what it does
 * not keep after dropping it, as it frees the areas of a failed take.
 */
struct take_dev {
	struct tracker *tracker;
	struct blksnap_bdev_ref ref;
	struct diff_area *area;		/* to free: the take failed */
	struct diff_area *taken;	/* to make an image of */
	struct snapimage *image;
};

static void take_devs_free(struct take_dev *devs, unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n; i++) {
		if (devs[i].area)
			diff_area_free(devs[i].area);
		if (devs[i].ref.bdev)
			blksnap_bdev_close(&devs[i].ref);
		tracker_put(devs[i].tracker);
	}
	kfree(devs);
}

/* The snapshot's devices, opened; *@n of them. */
static int take_open_devs(const uuid_t *id, struct take_dev **devsp,
			  unsigned int *n)
{
	struct snapshot_member *member;
	struct snapshot *snapshot;
	struct take_dev *devs;
	unsigned int i = 0;
	int ret = 0;

	mutex_lock(&snapshots_lock);
	snapshot = snapshot_find_locked(id);
	if (!snapshot)
		ret = -ENOENT;
	else if (snapshot->is_taken)
		ret = -EALREADY;
	else if (list_empty(&snapshot->members))
		ret = -ENODEV;
	if (ret) {
		mutex_unlock(&snapshots_lock);
		return ret;
	}
	list_for_each_entry(member, &snapshot->members, link)
		i++;
	devs = kcalloc(i, sizeof(*devs), GFP_KERNEL);
	if (!devs) {
		mutex_unlock(&snapshots_lock);
		return -ENOMEM;
	}
	*n = 0;
	list_for_each_entry(member, &snapshot->members, link) {
		tracker_get(member->tracker);
		devs[(*n)++].tracker = member->tracker;
	}
	mutex_unlock(&snapshots_lock);

	for (i = 0; i < *n; i++) {
		ret = blksnap_bdev_open_read(devs[i].tracker->dev,
					     &devs[i].ref);
		/* A device whose size changed starts a new CBT generation. */
		if (!ret)
			ret = cbt_map_fit(devs[i].tracker->cbt_map,
					  bdev_nr_sectors(devs[i].ref.bdev),
					  devs[i].tracker->dev);
		if (ret) {
			take_devs_free(devs, *n);
			return ret;
		}
	}
	*devsp = devs;
	return 0;
}

/* Called with snapshots_lock held. */
static int take_locked(const uuid_t *id, struct take_dev *devs,
		       unsigned int n)
{
	struct snapshot_member *member, *failed = NULL;
	struct snapshot *snapshot;
	unsigned int i = 0;
	int ret = 0;

	snapshot = snapshot_find_locked(id);
	if (!snapshot)
		return -ENOENT;
	if (snapshot->is_taken)
		return -EALREADY;
	/* A device added or removed while the devices were opened. */
	list_for_each_entry(member, &snapshot->members, link) {
		if (i == n || member->tracker != devs[i].tracker)
			return -EAGAIN;
		i++;
	}
	if (i != n)
		return -EAGAIN;

	i = 0;
	list_for_each_entry(member, &snapshot->members, link) {
		struct diff_area *area;

		/* The device went away since it was opened. */
		if (!member->tracker->bdev ||
		    devs[i].ref.bdev != member->tracker->bdev) {
			ret = -ENODEV;
			goto out_free_areas;
		}
		area = diff_area_new(snapshot, member->tracker,
				     snapshot->storage, &devs[i].ref);
		if (IS_ERR(area)) {
			ret = PTR_ERR(area);
			goto out_free_areas;
		}
		member->area = area;
		i++;
	}

	/* File systems on the devices flush and stop writing. */
	list_for_each_entry(member, &snapshot->members, link) {
		ret = blksnap_bdev_freeze(member->tracker->bdev);
		if (ret) {
			pr_err("cannot freeze %pg: %d\n", member->tracker->bdev,
			       ret);
			failed = member;
			break;
		}
	}
	if (!ret) {
		/*
		 * No write passes any filter while the devices switch. The
		 * writes still in flight are marked again when they end
		 * (tracker.c), so the next increment holds them; the images
		 * are made once they have ended (below).
		 */
		percpu_down_write(&tracker_switch_sem);
		switch_locked(snapshot);
		percpu_up_write(&tracker_switch_sem);
	}
	list_for_each_entry(member, &snapshot->members, link) {
		if (member == failed)
			break;
		blksnap_bdev_thaw(member->tracker->bdev);
	}
	if (ret)
		goto out_free_areas;
	/*
	 * Writes marked before the switch may still be landing on chunks
	 * nobody copied: let them end before anyone can read an image.
	 */
	list_for_each_entry(member, &snapshot->members, link)
		tracker_wait_writes_before_take(member->tracker);

	i = 0;
	list_for_each_entry(member, &snapshot->members, link)
		devs[i++].taken = member->area;
	return 0;

out_free_areas:
	/* Freed by the caller, once snapshots_lock is dropped. */
	i = 0;
	list_for_each_entry(member, &snapshot->members, link) {
		devs[i++].area = member->area;
		member->area = NULL;
	}
	return ret;
}

/*
 * Copy-on-write runs from the switch on; the images are made outside
 * snapshots_lock. An image that cannot be made leaves the snapshot
 * corrupted rather than undoing the take.
 */
static void take_images(const uuid_t *id, struct take_dev *devs,
			unsigned int n)
{
	struct snapshot_member *member;
	struct snapshot *snapshot;
	unsigned int i;

	for (i = 0; i < n; i++)
		devs[i].image = snapimage_create(devs[i].taken);

	mutex_lock(&snapshots_lock);
	/* Taken, and no destroy while snapshot_ctl_lock is held. */
	snapshot = snapshot_find_locked(id);
	if (WARN_ON(!snapshot)) {
		mutex_unlock(&snapshots_lock);
		for (i = 0; i < n; i++)
			if (!IS_ERR(devs[i].image))
				snapimage_free(devs[i].image);
		return;
	}
	i = 0;
	list_for_each_entry(member, &snapshot->members, link) {
		if (IS_ERR(devs[i].image))
			snapshot_set_error(snapshot, member->tracker->dev,
					   PTR_ERR(devs[i].image));
		else
			member->image = devs[i].image;
		i++;
	}
	mutex_unlock(&snapshots_lock);
	pr_info("snapshot %pUb taken\n", id);
}

int snapshot_take(const uuid_t *id)
{
	struct take_dev *devs;
	unsigned int n;
	int ret;

	mutex_lock(&snapshot_ctl_lock);
	ret = take_open_devs(id, &devs, &n);
	if (ret)
		goto out;
	mutex_lock(&snapshots_lock);
	ret = take_locked(id, devs, n);
	mutex_unlock(&snapshots_lock);
	if (!ret)
		take_images(id, devs, n);
	take_devs_free(devs, n);
out:
	mutex_unlock(&snapshot_ctl_lock);
	return ret;
}

/* Called with snapshots_lock held: fills @ids if it has room for them all. */
static unsigned int collect_locked(struct blksnap_uuid *ids, unsigned int room)
{
	struct snapshot *snapshot;
	unsigned int n = 0;

	list_for_each_entry(snapshot, &snapshots, link) {
		if (n < room)
			memcpy(ids[n].b, snapshot->id.b, sizeof(ids[n].b));
		n++;
	}
	return n;
}

/*
 * The ids are gathered under snapshots_lock into a kernel buffer and copied
 * out after it is dropped: a user buffer that faults (swapped out, or
 * served by userfaultfd) must not hold up the removal of a tracked device,
 * which takes snapshots_lock.
 */
int snapshot_collect(unsigned int *count, struct blksnap_uuid __user *ids)
{
	struct blksnap_uuid *buf = NULL;
	unsigned int n, room = 0;
	int ret = 0;

	for (;;) {
		mutex_lock(&snapshots_lock);
		n = collect_locked(buf, room);
		mutex_unlock(&snapshots_lock);
		if (!ids || n > *count || n <= room)
			break;
		/* More snapshots than the buffer: grow it and look again. */
		kfree(buf);
		room = n + 8;
		buf = kmalloc_array(room, sizeof(*buf), GFP_KERNEL);
		if (!buf)
			return -ENOMEM;
	}
	if (ids && n > *count)
		ret = -ENODATA;
	else if (ids && n && copy_to_user(ids, buf, array_size(n, sizeof(*buf))))
		ret = -EFAULT;
	kfree(buf);
	*count = n;
	return ret;
}

int snapshot_wait_event(const uuid_t *id, unsigned int timeout_ms,
			struct blksnap_snapshot_event *out)
{
	struct snapshot *snapshot;
	struct event *event;
	int ret = 0;

	mutex_lock(&snapshots_lock);
	snapshot = snapshot_find_locked(id);
	if (snapshot)
		kref_get(&snapshot->kref);
	mutex_unlock(&snapshots_lock);
	if (!snapshot)
		return -ESRCH;

	event = event_wait(&snapshot->events, timeout_ms);
	if (IS_ERR(event)) {
		ret = PTR_ERR(event);
	} else {
		out->code = event->code;
		out->time_label = ktime_to_ns(event->time);
		memcpy(out->data, event->data,
		       min_t(size_t, event->data_size, sizeof(out->data)));
		event_free(event);
	}
	kref_put(&snapshot->kref, snapshot_release);
	return ret;
}

/* Module unload: no device can be attached any more. */
void snapshot_done(void)
{
	struct snapshot *snapshot;
	uuid_t id;

	for (;;) {
		mutex_lock(&snapshots_lock);
		snapshot = list_first_entry_or_null(&snapshots, struct snapshot,
						    link);
		if (snapshot)
			id = snapshot->id;
		mutex_unlock(&snapshots_lock);
		if (!snapshot)
			break;
		snapshot_destroy(&id);
	}
}

int snapshot_add_device(const uuid_t *id, struct tracker *tracker)
{
	struct snapshot_member *member;
	struct snapshot *snapshot;
	int ret = 0;

	member = kzalloc(sizeof(*member), GFP_KERNEL);
	if (!member)
		return -ENOMEM;

	mutex_lock(&snapshots_lock);
	snapshot = snapshot_find_locked(id);
	if (!snapshot)
		ret = -ENOENT;
	else if (tracker->snapshot == snapshot)
		ret = -EALREADY;
	else if (tracker->snapshot || snapshot->is_taken)
		ret = -EBUSY;
	else if (!tracker->bdev)
		ret = -ENODEV;
	else if (diff_storage_on_device(snapshot->storage, tracker->bdev))
		ret = -EINVAL;
	if (ret) {
		mutex_unlock(&snapshots_lock);
		kfree(member);
		return ret;
	}
	tracker_get(tracker);
	member->tracker = tracker;
	list_add_tail(&member->link, &snapshot->members);
	tracker->snapshot = snapshot;
	mutex_unlock(&snapshots_lock);
	pr_info("device %u:%u added to snapshot %pUb\n", MAJOR(tracker->dev),
		MINOR(tracker->dev), id);
	return 0;
}

int snapshot_device_info(struct tracker *tracker,
			 struct blksnap_snapshotinfo *info)
{
	struct snapshot_member *member;
	struct snapshot *snapshot;
	int ret = -ENODEV;

	mutex_lock(&snapshots_lock);
	snapshot = tracker->snapshot;
	if (snapshot && !snapshot->is_destroying) {
		info->error_code = snapshot_error(snapshot);
		list_for_each_entry(member, &snapshot->members, link) {
			if (member->tracker == tracker && member->image)
				strscpy(info->image,
					snapimage_name(member->image),
					sizeof(info->image));
		}
		ret = 0;
	}
	mutex_unlock(&snapshots_lock);
	return ret;
}

/*
 * BLKFILTER_DETACH asks whether it may detach. Not from a device of a taken
 * snapshot: the snapshot would lose its copy-on-write. Otherwise the device
 * leaves at once (@bdev cleared under snapshots_lock, as the detach that
 * follows would), so that a take coming before that detach ends refuses
 * the device (-ENODEV) instead of taking a device whose filter is going.
 */
int snapshot_tracker_may_detach(struct tracker *tracker)
{
	int ret = 0;

	mutex_lock(&snapshots_lock);
	if (tracker->snapshot && tracker->snapshot->is_taken)
		ret = -EBUSY;
	else
		tracker->bdev = NULL;
	mutex_unlock(&snapshots_lock);
	return ret;
}

/* The filter is going away: no bio and no ctl reaches it any more. */
void snapshot_tracker_detached(struct tracker *tracker)
{
	struct snapshot_member *member;
	struct snapshot *snapshot;

	mutex_lock(&snapshots_lock);
	snapshot = tracker->snapshot;
	if (snapshot && snapshot->is_taken) {
		/*
		 * The snapshot can no longer see writes: it is lost. The error
		 * comes first, so that image reads fail once writes pass.
		 */
		snapshot_set_error(snapshot, tracker->dev, -ENODEV);
		percpu_down_write(&tracker_switch_sem);
		tracker->diff_area = NULL;
		percpu_up_write(&tracker_switch_sem);
	} else if (snapshot && !snapshot->is_destroying) {
		/*
		 * A snapshot being destroyed walks its members without
		 * snapshots_lock and puts their trackers itself: leave them.
		 */
		list_for_each_entry(member, &snapshot->members, link) {
			if (member->tracker == tracker) {
				list_del(&member->link);
				kfree(member);
				tracker_put(tracker);
				break;
			}
		}
		tracker->snapshot = NULL;
	}
	tracker->bdev = NULL;
	mutex_unlock(&snapshots_lock);
}

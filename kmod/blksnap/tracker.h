/* SPDX-License-Identifier: GPL-2.0-only */
#ifndef __BLKSNAP_TRACKER_H
#define __BLKSNAP_TRACKER_H

#include <linux/kref.h>
#include <linux/percpu-rwsem.h>
#include "intercept.h"

struct cbt_map;
struct diff_area;
struct snapshot;

/**
 * struct tracker - the blksnap filter of one block device
 * @filter:	what the block layer (or intercept_ftrace.c) knows of us
 * @kref:	the filter's reference, plus one per snapshot and diff_area
 * @dev:	the device number
 * @cbt_map:	change block tracking, from attach to the last put
 * @bdev:	the device while the filter is attached, NULL once a detach
 *		has been allowed (may_detach) or has begun;
 *		guarded by snapshots_lock (snapshot.c)
 * @snapshot:	the snapshot the device was added to, or NULL; guarded by
 *		snapshots_lock
 * @diff_area:	copy-on-write state while a snapshot is taken; written with
 *		tracker_switch_sem held for writing, read in the bio path
 *		with it held for reading
 * @writes_in_flight: writes that passed the filter (marked in the CBT map)
 *		and have not ended, by the parity of the number of takes the
 *		map had seen when they were marked: a take waits for the
 *		writes of the epoch before it, detach for both
 * @cow_held:	writes held for copy-on-write (diff_area.c) and not yet
 *		passed on; at chunk_maximum_in_queue new writes wait before
 *		the filter
 */
struct tracker {
	struct blkfilter filter;
	struct kref kref;
	dev_t dev;
	struct cbt_map *cbt_map;
	struct block_device *bdev;
	struct snapshot *snapshot;
	struct diff_area *diff_area;
	atomic_t writes_in_flight[2];
	atomic_t cow_held;
};

/*
 * Held for reading by every write passing the filters, for writing while a
 * snapshot is taken or dropped: the switch happens at one instant for all
 * devices of a snapshot.
 */
extern struct percpu_rw_semaphore tracker_switch_sem;

int tracker_init(void);
void tracker_done(void);
void tracker_get(struct tracker *tracker);
void tracker_put(struct tracker *tracker);
void tracker_wait_writes_before_take(struct tracker *tracker);
void tracker_cow_held(struct tracker *tracker);
void tracker_cow_passed(struct tracker *tracker);

#endif /* __BLKSNAP_TRACKER_H */

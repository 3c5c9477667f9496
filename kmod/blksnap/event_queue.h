/* SPDX-License-Identifier: GPL-2.0-only */
#ifndef __BLKSNAP_EVENT_QUEUE_H
#define __BLKSNAP_EVENT_QUEUE_H

#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/spinlock.h>
#include <linux/wait.h>

/**
 * struct event - one event of a snapshot
 * @link:	in event_queue.list
 * @time:	when it happened
 * @code:	enum blksnap_event_codes
 * @data_size:	bytes at @data
 * @data:	code-specific payload
 */
struct event {
	struct list_head link;
	ktime_t time;
	int code;
	int data_size;
	u8 data[];
};

/**
 * struct event_queue - events waiting for IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT
 * @lock:	guards @list and @closed
 * @list:	events, oldest first
 * @closed:	the snapshot is gone: waiters return -ESRCH
 * @wait:	waiters for a new event or @closed
 */
struct event_queue {
	spinlock_t lock;	/* guards list and closed */
	struct list_head list;
	bool closed;
	wait_queue_head_t wait;
};

void event_queue_init(struct event_queue *queue);
void event_queue_done(struct event_queue *queue);
void event_queue_close(struct event_queue *queue);
int event_gen(struct event_queue *queue, gfp_t flags, int code,
	      const void *data, int data_size);
struct event *event_wait(struct event_queue *queue, unsigned long timeout_ms);

static inline void event_free(struct event *event)
{
	kfree(event);
}

#endif /* __BLKSNAP_EVENT_QUEUE_H */

// SPDX-License-Identifier: GPL-2.0-only
/*
 * Event queue of a snapshot (no space, corrupted), read by user space.
 */
#include <linux/sched.h>
#include <linux/slab.h>
#include "event_queue.h"

void event_queue_init(struct event_queue *queue)
{
	spin_lock_init(&queue->lock);
	INIT_LIST_HEAD(&queue->list);
	queue->closed = false;
	init_waitqueue_head(&queue->wait);
}

/* Frees the events nobody read; no waiter may be left. */
void event_queue_done(struct event_queue *queue)
{
	struct event *event, *next;

	list_for_each_entry_safe(event, next, &queue->list, link) {
		list_del(&event->link);
		event_free(event);
	}
}

/* Wake every waiter for good: the snapshot is being destroyed. */
void event_queue_close(struct event_queue *queue)
{
	spin_lock(&queue->lock);
	queue->closed = true;
	spin_unlock(&queue->lock);
	wake_up_all(&queue->wait);
}

int event_gen(struct event_queue *queue, gfp_t flags, int code,
	      const void *data, int data_size)
{
	struct event *event = kzalloc(struct_size(event, data, data_size),
				      flags);

	if (!event)
		return -ENOMEM;
	event->time = ktime_get();
	event->code = code;
	event->data_size = data_size;
	memcpy(event->data, data, data_size);

	spin_lock(&queue->lock);
	list_add_tail(&event->link, &queue->list);
	spin_unlock(&queue->lock);
	wake_up(&queue->wait);
	return 0;
}

static bool event_ready(struct event_queue *queue)
{
	bool ready;

	spin_lock(&queue->lock);
	ready = queue->closed || !list_empty(&queue->list);
	spin_unlock(&queue->lock);
	return ready;
}

/*
 * Returns the oldest event (the caller frees it), or ERR_PTR: -ENOENT after
 * the timeout, -EINTR on a signal, -ESRCH when the snapshot went away.
 */
struct event *event_wait(struct event_queue *queue, unsigned long timeout_ms)
{
	struct event *event;
	long ret;

	ret = wait_event_interruptible_timeout(queue->wait, event_ready(queue),
					       msecs_to_jiffies(timeout_ms));
	if (ret < 0)
		return ERR_PTR(-EINTR);

	spin_lock(&queue->lock);
	event = list_first_entry_or_null(&queue->list, struct event, link);
	if (event)
		list_del(&event->link);
	else
		event = ERR_PTR(queue->closed ? -ESRCH : -ENOENT);
	spin_unlock(&queue->lock);
	return event;
}

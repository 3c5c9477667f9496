/* SPDX-License-Identifier: GPL-2.0-only */
#ifndef __BLKSNAP_SNAPSHOT_H
#define __BLKSNAP_SNAPSHOT_H

#include <linux/types.h>
#include <linux/uuid.h>
#include "../include/uapi/linux/blksnap.h"

struct snapshot;
struct tracker;

int snapshot_create(const char *path, sector_t limit, uuid_t *id);
int snapshot_destroy(const uuid_t *id);
int snapshot_take(const uuid_t *id);
int snapshot_collect(unsigned int *count, struct blksnap_uuid __user *ids);
int snapshot_wait_event(const uuid_t *id, unsigned int timeout_ms,
			struct blksnap_snapshot_event *out);
void snapshot_done(void);

int snapshot_add_device(const uuid_t *id, struct tracker *tracker);
int snapshot_device_info(struct tracker *tracker,
			 struct blksnap_snapshotinfo *info);
void snapshot_tracker_detached(struct tracker *tracker);
int snapshot_tracker_may_detach(struct tracker *tracker);

int snapshot_error(struct snapshot *snapshot);
void snapshot_set_error(struct snapshot *snapshot, dev_t dev, int error);

#endif /* __BLKSNAP_SNAPSHOT_H */

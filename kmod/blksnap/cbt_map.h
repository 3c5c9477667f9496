/* SPDX-License-Identifier: GPL-2.0-only */
#ifndef __BLKSNAP_CBT_MAP_H
#define __BLKSNAP_CBT_MAP_H

#include <linux/blkdev.h>
#include <linux/spinlock.h>
#include <linux/uuid.h>

/**
 * struct cbt_map - change block tracking map of one device
 * @lock:		guards every member below (taken in the bio path, so
 *			nothing that sleeps happens under it)
 * @blk_shift:		log2 of the tracking block size in sectors
 * @blk_count:		number of tracking blocks, one byte each
 * @capacity:		device size in sectors when the map was made or last
 *			resized (cbt_map_fit())
 * @active:		the map being marked: byte = change number since which
 *			the block differs (vmalloc'd)
 * @frozen:		copy of @active at the last take, read by CBTMAP
 * @number_active:	change number written into @active now
 * @number_previous:	change number of the last take (CBTINFO reports it)
 * @generation_id:	new whenever the numbering restarts
 * @switches:		takes since the map was made (never wraps in practice)
 * @generation_changes:	resizes since the map was made (cbt_map_fit())
 *
 * A take copies @active to @frozen and moves the numbering on. Takes are
 * numbered 1..255 within a generation; the take after the one numbered 255
 * clears the map, starts a new generation and is numbered 1.
 */
struct cbt_map {
	spinlock_t lock;	/* guards the members below it */
	unsigned int blk_shift;
	unsigned long blk_count;
	sector_t capacity;
	u8 *active;
	u8 *frozen;
	unsigned int number_active;
	unsigned int number_previous;
	uuid_t generation_id;
	unsigned long switches;
	unsigned long generation_changes;
};

struct cbt_map *cbt_map_create(struct block_device *bdev);
void cbt_map_destroy(struct cbt_map *map);
int cbt_map_fit(struct cbt_map *map, sector_t capacity, dev_t dev);
void cbt_map_switch(struct cbt_map *map);
unsigned long cbt_map_mark(struct cbt_map *map, sector_t sector,
			   sector_t count);
void cbt_map_remark(struct cbt_map *map, sector_t sector, sector_t count,
		    unsigned long seen);
void cbt_map_mark_both(struct cbt_map *map, sector_t sector, sector_t count);
void cbt_map_mark_dirty(struct cbt_map *map, sector_t sector, sector_t count);
int cbt_map_copy_frozen(struct cbt_map *map, unsigned long offset,
			unsigned long length, u8 __user *buf);

static inline u32 cbt_map_block_size(const struct cbt_map *map)
{
	return 1U << (map->blk_shift + SECTOR_SHIFT);
}

#endif /* __BLKSNAP_CBT_MAP_H */

// SPDX-License-Identifier: GPL-2.0-only
/*
 * Change block tracking map: one byte per tracking block.
 */
#define pr_fmt(fmt) KBUILD_MODNAME "-cbt_map: " fmt

#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include "cbt_map.h"
#include "params.h"

/* Highest change number a map byte holds. */
#define CBT_NUMBER_MAX	255

/* Bytes copied per step to user space (the map is read under a lock). */
#define CBT_COPY_STEP	PAGE_SIZE

static void cbt_map_reset_locked(struct cbt_map *map)
{
	memset(map->active, 0, map->blk_count);
	memset(map->frozen, 0, map->blk_count);
	map->number_active = 1;
	map->number_previous = 0;
	uuid_gen(&map->generation_id);
}

/* The smallest tracking block that keeps the map within the count limit. */
static unsigned int blk_shift_for(sector_t capacity)
{
	unsigned int shift = tracking_block_minimum_shift - SECTOR_SHIFT;
	unsigned int max_shift = tracking_block_maximum_shift - SECTOR_SHIFT;

	while (shift < max_shift &&
	       DIV_ROUND_UP_SECTOR_T(capacity, 1ULL << shift) >
	       tracking_block_maximum_count)
		shift++;
	return shift;
}

/* The arrays of a map of @capacity sectors; 0 or -ENOMEM. */
static int arrays_alloc(sector_t capacity, unsigned int *shift,
			unsigned long *count, u8 **active, u8 **frozen)
{
	*shift = blk_shift_for(capacity);
	*count = DIV_ROUND_UP_SECTOR_T(capacity, 1ULL << *shift);
	*active = vmalloc(*count);
	*frozen = vmalloc(*count);
	if (*active && *frozen)
		return 0;
	vfree(*active);
	vfree(*frozen);
	return -ENOMEM;
}

struct cbt_map *cbt_map_create(struct block_device *bdev)
{
	sector_t capacity = bdev_nr_sectors(bdev);
	struct cbt_map *map;

	if (!capacity)
		return ERR_PTR(-EINVAL);
	map = kzalloc(sizeof(*map), GFP_KERNEL);
	if (!map)
		return ERR_PTR(-ENOMEM);
	spin_lock_init(&map->lock);
	map->capacity = capacity;
	if (arrays_alloc(capacity, &map->blk_shift, &map->blk_count,
			 &map->active, &map->frozen)) {
		kfree(map);
		return ERR_PTR(-ENOMEM);
	}
	cbt_map_reset_locked(map);
	return map;
}

/*
 * Before a take, in process context: if the device's size is no longer the
 * map's (an LV, a disk or a loop device grown or shrunk), give the map
 * arrays for the new size and start a new generation. Writes past the old
 * end were not tracked, so the increment since the last take is not known:
 * the new generation makes the next backup read the device whole. The
 * number of takes (@switches) goes on, for the writes in flight across the
 * take (cbt_map_remark()). Returns 0 or -ENOMEM (the map is unchanged).
 */
int cbt_map_fit(struct cbt_map *map, sector_t capacity, dev_t dev)
{
	u8 *active, *frozen;
	unsigned long count, flags;
	unsigned int shift;
	sector_t old;

	spin_lock_irqsave(&map->lock, flags);
	old = map->capacity;
	spin_unlock_irqrestore(&map->lock, flags);
	if (capacity == old || !capacity)
		return 0;
	if (arrays_alloc(capacity, &shift, &count, &active, &frozen))
		return -ENOMEM;

	spin_lock_irqsave(&map->lock, flags);
	swap(map->active, active);
	swap(map->frozen, frozen);
	map->capacity = capacity;
	map->blk_shift = shift;
	map->blk_count = count;
	cbt_map_reset_locked(map);
	map->generation_changes++;
	spin_unlock_irqrestore(&map->lock, flags);
	vfree(active);
	vfree(frozen);
	pr_warn("%u:%u changed size from %llu to %llu sectors: new change tracking generation %pUb, the next backup reads the device whole\n",
		MAJOR(dev), MINOR(dev), (unsigned long long)old,
		(unsigned long long)capacity, &map->generation_id);
	return 0;
}

void cbt_map_destroy(struct cbt_map *map)
{
	vfree(map->frozen);
	vfree(map->active);
	kfree(map);
}

/* Called at the instant of a snapshot take, writes held off. */
void cbt_map_switch(struct cbt_map *map)
{
	unsigned long flags;

	spin_lock_irqsave(&map->lock, flags);
	if (map->number_active > CBT_NUMBER_MAX) {
		pr_info("change numbers exhausted: new generation\n");
		cbt_map_reset_locked(map);
		map->generation_changes++;
	}
	memcpy(map->frozen, map->active, map->blk_count);
	map->number_previous = map->number_active;
	map->number_active++;
	map->switches++;
	spin_unlock_irqrestore(&map->lock, flags);
}

static void mark_range(u8 *bytes, unsigned long first, unsigned long last,
		       u8 number)
{
	unsigned long blk;

	for (blk = first; blk <= last; blk++)
		if (bytes[blk] < number)
			bytes[blk] = number;
}

static bool block_range(struct cbt_map *map, sector_t sector, sector_t count,
			unsigned long *first, unsigned long *last)
{
	if (!count || sector >= map->capacity)
		return false;
	count = min_t(sector_t, count, map->capacity - sector);
	*first = sector >> map->blk_shift;
	*last = (sector + count - 1) >> map->blk_shift;
	return true;
}

/*
 * After the take numbered 255 the active number is 256, which a byte cannot
 * hold: writes are marked 255 until the next take starts a new generation.
 */
static u8 active_number(const struct cbt_map *map)
{
	return min_t(unsigned int, map->number_active, CBT_NUMBER_MAX);
}

/* Mark a write; returns the number of takes so far, for cbt_map_remark(). */
unsigned long cbt_map_mark(struct cbt_map *map, sector_t sector,
			   sector_t count)
{
	unsigned long first, last, flags, switches;

	spin_lock_irqsave(&map->lock, flags);
	if (block_range(map, sector, count, &first, &last))
		mark_range(map->active, first, last, active_number(map));
	switches = map->switches;
	spin_unlock_irqrestore(&map->lock, flags);
	return switches;
}

/*
 * At the end of a write marked when the map had seen @seen takes: if a take
 * came in between, the write was in flight across it, and whether that
 * take's image holds it is a race; mark it again, with the new number, so
 * that the next increment holds it for sure. A write that ended before the
 * take is on the device when the take copies or reads it. May be called
 * from interrupt context.
 */
void cbt_map_remark(struct cbt_map *map, sector_t sector, sector_t count,
		    unsigned long seen)
{
	unsigned long first, last, flags;

	spin_lock_irqsave(&map->lock, flags);
	if (map->switches != seen &&
	    block_range(map, sector, count, &first, &last))
		mark_range(map->active, first, last, active_number(map));
	spin_unlock_irqrestore(&map->lock, flags);
}

/*
 * Writes to a snapshot image change what the snapshot holds: mark the
 * frozen map with the number of the take as well as the active one.
 */
void cbt_map_mark_both(struct cbt_map *map, sector_t sector, sector_t count)
{
	unsigned long first, last, flags;

	spin_lock_irqsave(&map->lock, flags);
	if (block_range(map, sector, count, &first, &last)) {
		mark_range(map->active, first, last, active_number(map));
		mark_range(map->frozen, first, last, map->number_previous);
	}
	spin_unlock_irqrestore(&map->lock, flags);
}

/* Blocks marked per lock hold by cbt_map_mark_dirty(). */
#define CBT_MARK_STEP	16384UL

/*
 * CBTDIRTY: cbt_map_mark_both() from process context, in pieces, so that a
 * range of the whole device (of up to 65,536 in one command) neither keeps
 * interrupts off nor the CPU from others for long.
 */
void cbt_map_mark_dirty(struct cbt_map *map, sector_t sector, sector_t count)
{
	unsigned long first, last, flags;
	sector_t step;

	/* In sectors, so that each piece is placed under the lock. */
	while (count) {
		spin_lock_irqsave(&map->lock, flags);
		step = min_t(sector_t, count, CBT_MARK_STEP << map->blk_shift);
		if (block_range(map, sector, step, &first, &last)) {
			mark_range(map->active, first, last,
				   active_number(map));
			mark_range(map->frozen, first, last,
				   map->number_previous);
		}
		spin_unlock_irqrestore(&map->lock, flags);
		sector += step;
		count -= step;
		cond_resched();
	}
}

int cbt_map_copy_frozen(struct cbt_map *map, unsigned long offset,
			unsigned long length, u8 __user *buf)
{
	unsigned long flags, done = 0, generation;
	u8 *bounce;
	int ret = 0;

	spin_lock_irqsave(&map->lock, flags);
	generation = map->generation_changes;
	if (offset > map->blk_count || length > map->blk_count - offset)
		ret = -ERANGE;
	spin_unlock_irqrestore(&map->lock, flags);
	if (ret)
		return ret;
	bounce = kmalloc(CBT_COPY_STEP, GFP_KERNEL);
	if (!bounce)
		return -ENOMEM;
	while (done < length) {
		unsigned long step = min_t(unsigned long, length - done,
					   CBT_COPY_STEP);

		spin_lock_irqsave(&map->lock, flags);
		/* Resized since the start: the caller reads CBTINFO again. */
		if (map->generation_changes != generation)
			ret = -EAGAIN;
		else
			memcpy(bounce, map->frozen + offset + done, step);
		spin_unlock_irqrestore(&map->lock, flags);
		if (ret)
			break;
		if (copy_to_user(buf + done, bounce, step)) {
			ret = -EFAULT;
			break;
		}
		done += step;
		cond_resched();
	}
	kfree(bounce);
	return ret;
}

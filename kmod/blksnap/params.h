/* SPDX-License-Identifier: GPL-2.0-only */
#ifndef __BLKSNAP_PARAMS_H
#define __BLKSNAP_PARAMS_H

/*
 * Module parameters, read-only after load (see main.c for the
 * descriptions and defaults). Shifts are log2 of a size in bytes.
 */
extern unsigned int tracking_block_minimum_shift;
extern unsigned int tracking_block_maximum_shift;
extern unsigned int tracking_block_maximum_count;
extern unsigned int chunk_minimum_shift;
extern unsigned int chunk_maximum_shift;
extern unsigned int chunk_maximum_count;
extern unsigned int chunk_maximum_in_queue;
extern unsigned int free_diff_buffer_pool_size;
extern unsigned int diff_storage_minimum;

#endif /* __BLKSNAP_PARAMS_H */

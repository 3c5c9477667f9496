/* SPDX-License-Identifier: GPL-2.0-only */
#ifndef __BLKSNAP_SNAPIMAGE_H
#define __BLKSNAP_SNAPIMAGE_H

struct block_device;
struct diff_area;
struct snapimage;

int snapimage_init(void);
void snapimage_done(void);
struct snapimage *snapimage_create(struct diff_area *area);
void snapimage_free(struct snapimage *image);
const char *snapimage_name(struct snapimage *image);
/* Is @bdev a snapshot image of this module? */
bool snapimage_is_image(struct block_device *bdev);

#endif /* __BLKSNAP_SNAPIMAGE_H */

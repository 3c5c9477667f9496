// SPDX-License-Identifier: GPL-2.0-only
/*
 * Interception on kernels with the block-device filter patches: the block
 * layer serves BLKFILTER_ATTACH/DETACH/CTL and calls the filter for every
 * bio; the module only registers its operations.
 */
#include "intercept.h"

int blksnap_intercept_init(struct blkfilter_operations *ops)
{
	return blkfilter_register(ops);
}

void blksnap_intercept_exit(struct blkfilter_operations *ops)
{
	blkfilter_unregister(ops);
}

void blksnap_submit_bio_bypass(struct bio *bio)
{
	bio_set_flag(bio, BIO_FILTERED);
	submit_bio_noacct(bio);
}

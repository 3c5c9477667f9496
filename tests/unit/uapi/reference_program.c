/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A program written against the reference blksnap user-space interface
 * (the upstream proposal, interface 2.0): the names it uses are the
 * reference's, spelled as there, and it includes the two headers as a tool
 * written for the reference would. It must compile unchanged, warning-free,
 * as C and as C++, against kmod/include/uapi, and the values must be the
 * reference's. reference_program_check() returns 0 or the number of the
 * first check that failed.
 */
#include <linux/blksnap.h>
#include <linux/blk-filter.h>
#include <string.h>

#ifdef __cplusplus
extern "C" int REFERENCE_PROGRAM_CHECK(void);
#endif

#ifndef REFERENCE_PROGRAM_CHECK
#define REFERENCE_PROGRAM_CHECK reference_program_check
#endif

int REFERENCE_PROGRAM_CHECK(void)
{
	struct blksnap_cbtinfo info;
	struct blksnap_cbtmap map;
	struct blksnap_sectors sectors;
	struct blksnap_cbtdirty dirty;
	struct blksnap_snapshotadd add;
	struct blksnap_snapshotinfo sinfo;
	struct blksnap_version version;
	struct blksnap_snapshot_create create;
	struct blksnap_snapshot_collect collect;
	struct blksnap_snapshot_event event;
	struct blksnap_event_corrupted corrupted;
	struct blksnap_event_no_space no_space;
	struct blksnap_uuid uuid;
	struct blkfilter_ctl ctl;
	int n = 0;

	memset(&info, 0, sizeof(info));
	memset(&uuid, 0, sizeof(uuid));
	/* Filter commands. */
	if (BLKFILTER_CTL_BLKSNAP_CBTINFO != 0 || BLKFILTER_CTL_BLKSNAP_CBTMAP != 1 ||
	    BLKFILTER_CTL_BLKSNAP_CBTDIRTY != 2 || BLKFILTER_CTL_BLKSNAP_SNAPSHOTADD != 3 ||
	    BLKFILTER_CTL_BLKSNAP_SNAPSHOTINFO != 4)
		return 1;
	/* Control device ioctl numbers and their encoding. */
	if (BLKSNAP_IOCTL_VERSION != 0 || BLKSNAP_IOCTL_SNAPSHOT_CREATE != 1 ||
	    BLKSNAP_IOCTL_SNAPSHOT_DESTROY != 2 || BLKSNAP_IOCTL_SNAPSHOT_TAKE != 3 ||
	    BLKSNAP_IOCTL_SNAPSHOT_COLLECT != 4 || BLKSNAP_IOCTL_SNAPSHOT_WAIT_EVENT != 5)
		return 2;
	if (IOCTL_BLKSNAP_VERSION != _IOR('V', 0, struct blksnap_version) ||
	    IOCTL_BLKSNAP_SNAPSHOT_CREATE != _IOWR('V', 1, struct blksnap_snapshot_create) ||
	    IOCTL_BLKSNAP_SNAPSHOT_DESTROY != _IOW('V', 2, struct blksnap_uuid) ||
	    IOCTL_BLKSNAP_SNAPSHOT_TAKE != _IOW('V', 3, struct blksnap_uuid) ||
	    IOCTL_BLKSNAP_SNAPSHOT_COLLECT != _IOR('V', 4, struct blksnap_snapshot_collect) ||
	    IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT != _IOR('V', 5, struct blksnap_snapshot_event))
		return 3;
	if (BLKSNAP != 'V' || strcmp(BLKSNAP_CTL, "blksnap-control") ||
	    strcmp(BLKSNAP_IMAGE_NAME, "blksnap-image") || IMAGE_DISK_NAME_LEN != 32)
		return 4;
	/* Event codes. */
	if (blksnap_event_code_corrupted != 0 || blksnap_event_code_no_space != 1)
		return 5;
	/* The block-device filter ioctls (magic 0x12, 142-144). */
	if (BLKFILTER_ATTACH != _IOWR(0x12, 142, struct blkfilter_attach) ||
	    BLKFILTER_DETACH != _IOWR(0x12, 143, struct blkfilter_detach) ||
	    BLKFILTER_CTL != _IOWR(0x12, 144, struct blkfilter_ctl) ||
	    BLKFILTER_NAME_LENGTH != 32)
		return 6;
	/* Every member a reference tool uses, and the layout. */
	info.device_capacity = 1;
	info.block_size = 2;
	info.block_count = 3;
	info.generation_id = uuid;
	info.changes_number = 4;
	map.offset = 0;
	map.length = 0;
	map.buffer = 0;
	sectors.offset = 0;
	sectors.count = 0;
	dirty.count = 1;
	dirty.dirty_sectors = (__u64)(unsigned long)&sectors;
	add.id = uuid;
	sinfo.error_code = 0;
	sinfo.image[0] = 0;
	version.major = version.minor = version.revision = version.build = 0;
	create.diff_storage_limit_sect = 0;
	create.diff_storage_filename = 0;
	create.id = uuid;
	collect.count = 0;
	collect.ids = 0;
	event.id = uuid;
	event.timeout_ms = 0;
	event.code = blksnap_event_code_no_space;
	event.time_label = 0;
	event.data[0] = 0;
	corrupted.dev_id_mj = corrupted.dev_id_mn = 0;
	corrupted.err_code = 0;
	no_space.requested_nr_sect = 0;
	memset(&ctl, 0, sizeof(ctl));
	ctl.cmd = BLKFILTER_CTL_BLKSNAP_CBTINFO;
	ctl.optlen = sizeof(info);
	ctl.opt = (__u64)(unsigned long)&info;
	n += (int)(map.length + sectors.count + add.id.b[0] + (unsigned)sinfo.error_code +
		   version.major + create.id.b[0] + collect.count + event.timeout_ms +
		   corrupted.dev_id_mj + (int)no_space.requested_nr_sect + (int)dirty.count - 1 +
		   (int)(dirty.dirty_sectors == 0));
	if (n)
		return 7;
	if (sizeof(struct blksnap_cbtinfo) != 40 || sizeof(struct blksnap_snapshot_event) != 4096 ||
	    sizeof(struct blksnap_snapshot_create) != 32 || sizeof(struct blksnap_snapshotinfo) != 36 ||
	    sizeof(struct blkfilter_ctl) != 48 || sizeof(struct blksnap_event_corrupted) != 12)
		return 8;
	return 0;
}

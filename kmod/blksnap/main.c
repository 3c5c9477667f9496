// SPDX-License-Identifier: GPL-2.0
/*
 * blksnap: module entry points, parameters and the control device.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/uaccess.h>
#include "../include/uapi/linux/blksnap.h"
#include "params.h"

#define BLKSNAP_VERSION_REVISION	1
#define BLKSNAP_VERSION_BUILD		0

unsigned int tracking_block_minimum_shift = 16;
unsigned int tracking_block_maximum_shift = 26;
unsigned int tracking_block_maximum_count = 2097152;
unsigned int chunk_minimum_shift = 18;
unsigned int chunk_maximum_shift = 26;
unsigned int chunk_maximum_count = 2097152;
unsigned int chunk_maximum_in_queue = 256;
unsigned int free_diff_buffer_pool_size = 128;
unsigned int diff_storage_minimum = 2097152;

module_param(tracking_block_minimum_shift, uint, 0444);
MODULE_PARM_DESC(tracking_block_minimum_shift,
		 "log2 of the smallest CBT block in bytes (default 16)");
module_param(tracking_block_maximum_shift, uint, 0444);
MODULE_PARM_DESC(tracking_block_maximum_shift,
		 "log2 of the largest CBT block in bytes (default 26)");
module_param(tracking_block_maximum_count, uint, 0444);
MODULE_PARM_DESC(tracking_block_maximum_count,
		 "most CBT blocks per device (default 2097152)");
module_param(chunk_minimum_shift, uint, 0444);
MODULE_PARM_DESC(chunk_minimum_shift,
		 "log2 of the smallest copy-on-write chunk in bytes (default 18)");
module_param(chunk_maximum_shift, uint, 0444);
MODULE_PARM_DESC(chunk_maximum_shift,
		 "log2 of the largest copy-on-write chunk in bytes (default 26)");
module_param(chunk_maximum_count, uint, 0444);
MODULE_PARM_DESC(chunk_maximum_count,
		 "most chunks per device (default 2097152)");
module_param(chunk_maximum_in_queue, uint, 0444);
MODULE_PARM_DESC(chunk_maximum_in_queue,
		 "most chunks waiting to be stored (default 256)");
module_param(free_diff_buffer_pool_size, uint, 0444);
MODULE_PARM_DESC(free_diff_buffer_pool_size,
		 "chunk buffers kept for reuse per device (default 128)");
module_param(diff_storage_minimum, uint, 0444);
MODULE_PARM_DESC(diff_storage_minimum,
		 "difference storage growth step in sectors (default 2097152)");

static long ioctl_version(struct blksnap_version __user *uarg)
{
	static const struct blksnap_version version = {
		.major = BLKSNAP_VERSION_MAJOR,
		.minor = BLKSNAP_VERSION_MINOR,
		.revision = BLKSNAP_VERSION_REVISION,
		.build = BLKSNAP_VERSION_BUILD,
	};

	if (copy_to_user(uarg, &version, sizeof(version)))
		return -EFAULT;
	return 0;
}

static long ctrl_unlocked_ioctl(struct file *filp, unsigned int cmd,
				unsigned long arg)
{
	void __user *uarg = (void __user *)arg;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;

	switch (cmd) {
	case IOCTL_BLKSNAP_VERSION:
		return ioctl_version(uarg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations ctrl_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = ctrl_unlocked_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

static struct miscdevice blksnap_ctrl_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = BLKSNAP_CTL,
	.fops = &ctrl_fops,
};

static int __init blksnap_init(void)
{
	int ret;

	ret = misc_register(&blksnap_ctrl_misc);
	if (ret)
		return ret;
	pr_info("version %d.%d.%d.%d loaded\n", BLKSNAP_VERSION_MAJOR,
		BLKSNAP_VERSION_MINOR, BLKSNAP_VERSION_REVISION,
		BLKSNAP_VERSION_BUILD);
	return 0;
}

static void __exit blksnap_exit(void)
{
	misc_deregister(&blksnap_ctrl_misc);
	pr_info("unloaded\n");
}

module_init(blksnap_init);
module_exit(blksnap_exit);

MODULE_DESCRIPTION("Block device snapshots and change block tracking");
MODULE_VERSION("2.0.1");
MODULE_AUTHOR("blkfleet");
MODULE_LICENSE("GPL");

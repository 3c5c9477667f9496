// SPDX-License-Identifier: GPL-2.0-only
/*
 * blksnap: module entry points, parameters and the control device.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include "../include/uapi/linux/blksnap.h"
#include "chunk.h"
#include "diff_area.h"
#include "intercept.h"
#include "params.h"
#include "snapimage.h"
#include "snapshot.h"
#include "tracker.h"

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
		 "most writes per device held for copy-on-write; more writers wait (default 256)");
module_param(free_diff_buffer_pool_size, uint, 0444);
MODULE_PARM_DESC(free_diff_buffer_pool_size,
		 "chunk buffers kept for reuse per device (default 128)");
module_param(diff_storage_minimum, uint, 0444);

/*
 * /sys/module/blksnap/parameters/intercept tells user space how bios reach
 * the filter: "native" (the kernel's filter API) or "ftrace" (stock
 * kernel). It is decided at build time and cannot be set.
 */
static int intercept_set(const char *val, const struct kernel_param *kp)
{
	return -EPERM;
}

static int intercept_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%s\n", BLKSNAP_INTERCEPT_MODE);
}

static const struct kernel_param_ops intercept_ops = {
	.set = intercept_set,
	.get = intercept_get,
};
module_param_cb(intercept, &intercept_ops, NULL, 0444);
MODULE_PARM_DESC(intercept, "how bios reach the filter: native or ftrace (read-only)");
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

static long ioctl_snapshot_create(struct blksnap_snapshot_create __user *uarg)
{
	struct blksnap_snapshot_create arg;
	uuid_t id;
	char *path;
	int ret;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	path = strndup_user(u64_to_user_ptr(arg.diff_storage_filename),
			    PATH_MAX);
	if (IS_ERR(path))
		return PTR_ERR(path);
	ret = snapshot_create(path, arg.diff_storage_limit_sect, &id);
	kfree(path);
	if (ret)
		return ret;
	export_uuid(arg.id.b, &id);
	if (copy_to_user(uarg->id.b, arg.id.b, sizeof(arg.id.b))) {
		snapshot_destroy(&id);
		return -EFAULT;
	}
	return 0;
}

static long ioctl_snapshot_id(struct blksnap_uuid __user *uarg,
			      int (*op)(const uuid_t *id))
{
	struct blksnap_uuid arg;
	uuid_t id;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	import_uuid(&id, arg.b);
	return op(&id);
}

static long ioctl_snapshot_collect(struct blksnap_snapshot_collect __user *uarg)
{
	struct blksnap_snapshot_collect arg;
	unsigned int count;
	int ret;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	count = arg.count;
	ret = snapshot_collect(&count, u64_to_user_ptr(arg.ids));
	if (put_user(count, &uarg->count))
		return -EFAULT;
	return ret;
}

static long ioctl_snapshot_wait_event(struct blksnap_snapshot_event __user *uarg)
{
	struct blksnap_snapshot_event *arg;
	uuid_t id;
	int ret;

	arg = kzalloc(sizeof(*arg), GFP_KERNEL);
	if (!arg)
		return -ENOMEM;
	if (copy_from_user(arg, uarg, offsetof(typeof(*arg), code))) {
		ret = -EFAULT;
		goto out_free;
	}
	import_uuid(&id, arg->id.b);
	ret = snapshot_wait_event(&id, arg->timeout_ms, arg);
	if (!ret && copy_to_user(uarg, arg, sizeof(*arg)))
		ret = -EFAULT;
out_free:
	kfree(arg);
	return ret;
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
	case IOCTL_BLKSNAP_SNAPSHOT_CREATE:
		return ioctl_snapshot_create(uarg);
	case IOCTL_BLKSNAP_SNAPSHOT_DESTROY:
		return ioctl_snapshot_id(uarg, snapshot_destroy);
	case IOCTL_BLKSNAP_SNAPSHOT_TAKE:
		return ioctl_snapshot_id(uarg, snapshot_take);
	case IOCTL_BLKSNAP_SNAPSHOT_COLLECT:
		return ioctl_snapshot_collect(uarg);
	case IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT:
		return ioctl_snapshot_wait_event(uarg);
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

static int __init params_check(void)
{
	if (tracking_block_minimum_shift < SECTOR_SHIFT ||
	    tracking_block_minimum_shift > tracking_block_maximum_shift ||
	    tracking_block_maximum_shift > 30 ||
	    !tracking_block_maximum_count) {
		pr_err("bad tracking block parameters\n");
		return -EINVAL;
	}
	if (chunk_minimum_shift < PAGE_SHIFT ||
	    chunk_minimum_shift > chunk_maximum_shift ||
	    chunk_maximum_shift > 30 || !chunk_maximum_count) {
		pr_err("bad chunk parameters\n");
		return -EINVAL;
	}
	if (!diff_storage_minimum) {
		pr_err("diff_storage_minimum must not be 0\n");
		return -EINVAL;
	}
	return 0;
}

static int __init blksnap_init(void)
{
	int ret;

	ret = params_check();
	if (ret)
		return ret;
	ret = chunk_init();
	if (ret)
		return ret;
	ret = diff_area_init();
	if (ret)
		goto out_chunk_done;
	ret = snapimage_init();
	if (ret)
		goto out_diff_area_done;
	ret = tracker_init();
	if (ret)
		goto out_snapimage_done;
	ret = misc_register(&blksnap_ctrl_misc);
	if (ret)
		goto out_tracker_done;
	pr_info("version %d.%d.%d.%d loaded\n", BLKSNAP_VERSION_MAJOR,
		BLKSNAP_VERSION_MINOR, BLKSNAP_VERSION_REVISION,
		BLKSNAP_VERSION_BUILD);
	return 0;

out_tracker_done:
	tracker_done();
out_snapimage_done:
	snapimage_done();
out_diff_area_done:
	diff_area_done();
out_chunk_done:
	chunk_done();
	return ret;
}

static void __exit blksnap_exit(void)
{
	misc_deregister(&blksnap_ctrl_misc);
	snapshot_done();
	tracker_done();
	snapimage_done();
	diff_area_done();
	chunk_done();
	pr_info("unloaded\n");
}

module_init(blksnap_init);
module_exit(blksnap_exit);

MODULE_DESCRIPTION("Block device snapshots and change block tracking");
MODULE_VERSION("2.0.1");
MODULE_AUTHOR("blkfleet");
MODULE_LICENSE("GPL");

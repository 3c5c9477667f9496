// SPDX-License-Identifier: GPL-2.0-only
/*
 * Interception on stock kernels, which have no block-device filter API.
 *
 * Three kernel functions are redirected with ftrace (IPMODIFY), the way
 * livepatch redirects a function:
 *  - submit_bio_noacct(): bios to a device with an attached filter go to
 *    the filter's submit_bio() first;
 *  - blkdev_ioctl(): BLKFILTER_ATTACH, BLKFILTER_DETACH and BLKFILTER_CTL
 *    are served here, with the patched kernel's semantics;
 *  - del_gendisk(): the filters of a disk and its partitions are detached
 *    before the disk goes away.
 * A partition deleted on its own (BLKPG, a partition table re-read) has its
 * filter detached by a class interface on the block device class, whose
 * remove_dev() the driver core calls from device_del(), no hook needed.
 * A filter holds no open reference of its device, so it pins neither the
 * device nor its driver: a tracked zram or loop device can be removed and
 * its driver unloaded, and the filter goes with it, as on a patched kernel.
 *
 * The ftrace callback only decides whether to redirect (an xarray lookup
 * under RCU); everything else runs in the replacement function, which may
 * sleep. Calls made from this module's own code are never redirected: a
 * replacement calls the original function by its exported symbol, at its
 * entry, and the callback lets that call through because it returns into
 * this module. Every bio the module submits itself has passed the filter
 * already (blksnap_submit_bio()), is a read (which the filter lets pass),
 * or is meant to bypass it (blksnap_submit_bio_bypass()); del_gendisk() is
 * called here only for snapshot images, to which no filter attaches.
 * This file is built with -fno-optimize-sibling-calls (Kbuild): a tail jump
 * into an original would return into our caller's caller, which may not be
 * this module, and the call would recurse into the replacement.
 *
 * Control enters the kernel only at function entries, by direct calls: no
 * address is computed, looked up or offset, so kernels with indirect branch
 * tracking (IBT, 6.12) have nothing to object to. Functions are hooked by
 * name (ftrace_set_filter()), so blkdev_ioctl(), which is not exported,
 * needs no address at all.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/blkdev.h>
#include <linux/capability.h>
#include <linux/ftrace.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/srcu.h>
#include <linux/uaccess.h>
#include <linux/wait_bit.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>
#include "../include/uapi/linux/blk-filter.h"
#include "compat.h"
#include "intercept.h"
#include "snapimage.h"

/* A filter attached to one block device. */
struct attached_filter {
	struct blkfilter *flt;
	/*
	 * A device reference (not an open one): keeps the structure from
	 * being freed or reused while the filter is attached. Removal of the
	 * device detaches the filter first (del_gendisk(), remove_dev()).
	 */
	struct block_device *bdev;
	/* Detach after the device's removal (removal_watch). */
	struct work_struct removed_work;
	/* On the list of filters a del_gendisk() detaches. */
	struct list_head dying;
	/*
	 * BLKFILTER_CTL calls inside the filter. They run without
	 * filters_lock (they copy from and to user memory, which may fault
	 * for as long as its owner likes): the detach of this filter waits
	 * for them, nothing else does.
	 */
	atomic_t ctl_users;
};

/*
 * filters_lock serialises attach, the unpublishing of a filter (detach, disk
 * removal) and the lookup of a filter by a ctl (the role of the patched
 * block layer's filter lock); nothing waits under it for a detach to end or
 * for user memory. It guards @filters updates and @filter_ops. @filters
 * maps dev_t to struct attached_filter; it is read under filters_srcu in
 * the bio path and under RCU in ftrace callbacks. An entry is freed only
 * after an SRCU grace period.
 */
static DEFINE_MUTEX(filters_lock);
static DEFINE_XARRAY(filters);
DEFINE_STATIC_SRCU(filters_srcu);
static struct blkfilter_operations *filter_ops;

/* Tasks inside a replacement function; module exit waits for zero. */
static atomic_t hook_users = ATOMIC_INIT(0);

static inline void hook_enter(void)
{
	atomic_inc(&hook_users);
}

static inline void hook_leave(void)
{
	if (atomic_dec_and_test(&hook_users))
		wake_up_var(&hook_users);
}

struct hook {
	const char *name;
	void *replacement;
	/* Decide in the ftrace callback (atomic) whether to redirect. */
	bool (*wanted)(struct pt_regs *regs);
	/* The original, if the module calls it (logged for the IBT check). */
	void *orig;
	struct ftrace_ops ops;
};

static bool want_submit(struct pt_regs *regs);
static bool want_ioctl(struct pt_regs *regs);
static bool want_del_gendisk(struct pt_regs *regs);
static void blksnap_submit_bio_noacct(struct bio *bio);
static long blksnap_blkdev_ioctl(struct file *file, unsigned int cmd,
				 unsigned long arg);
static void blksnap_del_gendisk(struct gendisk *disk);

enum { HOOK_SUBMIT, HOOK_IOCTL, HOOK_DEL_GENDISK, HOOK_COUNT };

static struct hook hooks[HOOK_COUNT] = {
	[HOOK_SUBMIT] = {
		.name = "submit_bio_noacct",
		.replacement = blksnap_submit_bio_noacct,
		.wanted = want_submit,
		.orig = submit_bio_noacct,
	},
	[HOOK_IOCTL] = {
		.name = "blkdev_ioctl",
		.replacement = blksnap_blkdev_ioctl,
		.wanted = want_ioctl,
	},
	[HOOK_DEL_GENDISK] = {
		.name = "del_gendisk",
		.replacement = blksnap_del_gendisk,
		.wanted = want_del_gendisk,
		.orig = del_gendisk,
	},
};

static bool want_submit(struct pt_regs *regs)
{
	struct bio *bio = (struct bio *)regs->di;

	if (xa_empty(&filters))
		return false;
	/* A partition bio split after remapping comes back remapped. */
	if (bio_flagged(bio, BIO_REMAPPED))
		return false;
	return xa_load(&filters, bio->bi_bdev->bd_dev);
}

static bool want_ioctl(struct pt_regs *regs)
{
	unsigned int cmd = regs->si;

	return cmd == BLKFILTER_ATTACH || cmd == BLKFILTER_DETACH ||
	       cmd == BLKFILTER_CTL;
}

static bool want_del_gendisk(struct pt_regs *regs)
{
	return !xa_empty(&filters);
}

static void notrace hook_callback(unsigned long ip, unsigned long parent_ip,
				  struct ftrace_ops *ops,
				  struct ftrace_regs *fregs)
{
	struct hook *hook = container_of(ops, struct hook, ops);
	struct pt_regs *regs = ftrace_get_regs(fregs);

	/* The module's own calls, the replacements' among them, go through. */
	if (within_module(parent_ip, THIS_MODULE))
		return;
	if (regs && hook->wanted(regs))
		regs->ip = (unsigned long)hook->replacement;
}

struct blkfilter *blksnap_bio_filter(struct bio *bio)
{
	struct attached_filter *af = xa_load(&filters, bio->bi_bdev->bd_dev);

	return af ? af->flt : NULL;
}

/* Pass @bio to its device's filter, if any; true if the filter took it. */
static bool filter_bio(struct bio *bio)
{
	struct attached_filter *af;
	bool taken = false;
	int idx;

	idx = srcu_read_lock(&filters_srcu);
	af = xa_load(&filters, bio->bi_bdev->bd_dev);
	if (af)
		taken = af->flt->ops->submit_bio(bio);
	srcu_read_unlock(&filters_srcu, idx);
	return taken;
}

static void blksnap_submit_bio_noacct(struct bio *bio)
{
	hook_enter();
	if (!filter_bio(bio))
		submit_bio_noacct(bio);
	hook_leave();
}

bool blksnap_filter_published(struct block_device *bdev, struct blkfilter *flt)
{
	struct attached_filter *af;
	bool published;

	rcu_read_lock();
	af = xa_load(&filters, bdev->bd_dev);
	published = af && af->bdev == bdev && af->flt == flt;
	rcu_read_unlock();
	return published;
}

void blksnap_submit_bio(struct bio *bio)
{
	/* submit_bio() is called from here: it is not filtered again. */
	if (!filter_bio(bio))
		submit_bio(bio);
}

void blksnap_submit_bio_bypass(struct bio *bio)
{
	submit_bio_noacct(bio);
}

/*
 * Once @af has left @filters (under filters_lock), without filters_lock: no
 * bio and no ctl can find it any more; wait for those that did.
 */
static void detach_finish(struct attached_filter *af)
{
	/* No bio is inside the filter any more, nor will enter it. */
	synchronize_srcu(&filters_srcu);
	wait_var_event(&af->ctl_users, !atomic_read(&af->ctl_users));
	af->flt->ops->detach(af->flt);
	put_device(&af->bdev->bd_device);
	module_put(filter_ops->owner);
	/* ftrace callbacks read the entry under plain RCU. */
	synchronize_rcu();
	kfree(af);
}

/*
 * A block device that goes away without del_gendisk() of its disk: a
 * partition deleted by BLKPG_DEL_PARTITION or dropped by a re-read of the
 * partition table (it is not open then: the kernel refuses both while it
 * is). The driver core calls remove_dev() of every interface of the block
 * class from device_del(), under the class's mutex, which a take also
 * acquires (snapshots_lock, then add_disk() of an image): the filter leaves
 * @filters here, so that no bio and no ioctl reaches it any more, and the
 * rest of the detach (the tracker, its snapshot) runs in removed_wq.
 */
static struct workqueue_struct *removed_wq;

static void removed_work_fn(struct work_struct *work)
{
	struct attached_filter *af =
		container_of(work, struct attached_filter, removed_work);

	detach_finish(af);
}

static void block_dev_removed(struct device *dev)
{
	struct block_device *bdev = dev_to_bdev(dev);
	struct attached_filter *af;

	mutex_lock(&filters_lock);
	af = xa_load(&filters, bdev->bd_dev);
	if (af && af->bdev == bdev) {
		xa_erase(&filters, bdev->bd_dev);
		pr_info("%pg removed, its filter detached\n", bdev);
		INIT_WORK(&af->removed_work, removed_work_fn);
		queue_work(removed_wq, &af->removed_work);
	}
	mutex_unlock(&filters_lock);
}

BLKSNAP_CLASS_REMOVE_DEV(block_dev_removed_cb, block_dev_removed);

static struct class_interface removal_watch = {
	.remove_dev = block_dev_removed_cb,
};

static DEFINE_MUTEX(removal_watch_lock);
static bool removal_watch_on;

/*
 * The block device class is not exported: the watch is registered with the
 * class of the first device a filter attaches to, before that attach takes
 * filters_lock (register takes the class's mutex, under which
 * block_dev_removed() takes filters_lock).
 */
static int removal_watch_start(struct block_device *bdev)
{
	int ret = 0;

	mutex_lock(&removal_watch_lock);
	if (!removal_watch_on) {
		removal_watch.class = bdev->bd_device.class;
		ret = class_interface_register(&removal_watch);
		removal_watch_on = !ret;
	}
	mutex_unlock(&removal_watch_lock);
	return ret;
}

/*
 * Copy an ioctl argument (every one starts with the filter name) and check
 * that it names our filter.
 */
static int filter_arg_get(void *arg, const void __user *uarg, size_t size)
{
	const char *name = arg;

	BUILD_BUG_ON(offsetof(struct blkfilter_attach, name) ||
		     offsetof(struct blkfilter_detach, name) ||
		     offsetof(struct blkfilter_ctl, name));
	if (copy_from_user(arg, uarg, size))
		return -EFAULT;
	if (strnlen(name, BLKFILTER_NAME_LENGTH) == BLKFILTER_NAME_LENGTH)
		return -EINVAL;
	if (strcmp(name, filter_ops->name))
		return -ENOENT;
	return 0;
}

static int filter_attach(struct block_device *bdev,
			 struct blkfilter_attach __user *uarg)
{
	struct blkfilter_attach arg;
	struct attached_filter *af;
	struct blkfilter *flt;
	int ret;

	ret = filter_arg_get(&arg, uarg, sizeof(arg));
	if (ret)
		return ret;
	/* Attach options are reserved, as in the patched kernel. */
	if (arg.optlen)
		return -EINVAL;
	/*
	 * The module deletes its images itself, with a del_gendisk() that is
	 * not intercepted (see the top of this file), so it could not detach
	 * a filter from one.
	 */
	if (snapimage_is_image(bdev))
		return -EINVAL;
	ret = removal_watch_start(bdev);
	if (ret)
		return ret;

	af = kzalloc(sizeof(*af), GFP_KERNEL);
	if (!af)
		return -ENOMEM;
	atomic_set(&af->ctl_users, 0);

	mutex_lock(&filters_lock);
	if (xa_load(&filters, bdev->bd_dev)) {
		ret = -EALREADY;
		goto out_unlock;
	}
	if (!try_module_get(filter_ops->owner)) {
		ret = -ENODEV;
		goto out_unlock;
	}
	/* The caller has @bdev open: it cannot go away before this. */
	af->bdev = bdev;
	get_device(&bdev->bd_device);
	flt = filter_ops->attach(bdev);
	if (IS_ERR(flt)) {
		ret = PTR_ERR(flt);
		goto out_put_bdev;
	}
	af->flt = flt;
	ret = xa_insert(&filters, bdev->bd_dev, af, GFP_KERNEL);
	if (ret)
		goto out_detach;
	mutex_unlock(&filters_lock);
	return 0;

out_detach:
	filter_ops->detach(flt);
out_put_bdev:
	put_device(&bdev->bd_device);
	module_put(filter_ops->owner);
out_unlock:
	mutex_unlock(&filters_lock);
	kfree(af);
	return ret;
}

static int filter_detach(struct block_device *bdev,
			 struct blkfilter_detach __user *uarg)
{
	struct blkfilter_detach arg;
	struct attached_filter *af;
	int ret;

	ret = filter_arg_get(&arg, uarg, sizeof(arg));
	if (ret)
		return ret;

	mutex_lock(&filters_lock);
	af = xa_load(&filters, bdev->bd_dev);
	if (!af)
		ret = -ENOENT;
	else if (filter_ops->may_detach)
		ret = filter_ops->may_detach(af->flt);
	if (!ret)
		xa_erase(&filters, bdev->bd_dev);
	mutex_unlock(&filters_lock);
	if (!ret)
		detach_finish(af);
	return ret;
}

static int filter_control(struct block_device *bdev,
			  struct blkfilter_ctl __user *uarg)
{
	struct blkfilter_ctl arg;
	struct attached_filter *af;
	int ret;

	ret = filter_arg_get(&arg, uarg, sizeof(arg));
	if (ret)
		return ret;

	mutex_lock(&filters_lock);
	af = xa_load(&filters, bdev->bd_dev);
	if (af)
		atomic_inc(&af->ctl_users);
	mutex_unlock(&filters_lock);
	if (!af)
		return -ENOENT;

	ret = af->flt->ops->ctl(af->flt, arg.cmd, u64_to_user_ptr(arg.opt),
				&arg.optlen);
	/* A detach waiting for us frees @af: wake_up_var() only hashes it. */
	if (atomic_dec_and_test(&af->ctl_users))
		wake_up_var(&af->ctl_users);

	if (put_user(arg.optlen, &uarg->optlen))
		return -EFAULT;
	return ret;
}

static long blksnap_blkdev_ioctl(struct file *file, unsigned int cmd,
				 unsigned long arg)
{
	struct block_device *bdev = I_BDEV(file->f_mapping->host);
	void __user *uarg = (void __user *)arg;
	long ret;

	hook_enter();
	if (!capable(CAP_SYS_ADMIN))
		ret = -EACCES;
	else if (cmd == BLKFILTER_ATTACH)
		ret = filter_attach(bdev, uarg);
	else if (cmd == BLKFILTER_DETACH)
		ret = filter_detach(bdev, uarg);
	else
		ret = filter_control(bdev, uarg);
	hook_leave();
	return ret;
}

static void blksnap_del_gendisk(struct gendisk *disk)
{
	struct attached_filter *af, *next;
	unsigned long dev;
	LIST_HEAD(dying);

	hook_enter();
	mutex_lock(&filters_lock);
	xa_for_each(&filters, dev, af) {
		if (af->bdev->bd_disk == disk) {
			xa_erase(&filters, dev);
			list_add_tail(&af->dying, &dying);
		}
	}
	mutex_unlock(&filters_lock);
	list_for_each_entry_safe(af, next, &dying, dying)
		detach_finish(af);
	del_gendisk(disk);
	hook_leave();
}

static int hook_install(struct hook *hook)
{
	char name[32];
	int ret;

	/* ftrace_set_filter() may edit the pattern it parses. */
	strscpy(name, hook->name, sizeof(name));
	hook->ops.func = hook_callback;
	hook->ops.flags = FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_IPMODIFY;
	ret = ftrace_set_filter(&hook->ops, name, strlen(name), 0);
	if (ret) {
		pr_err("%s cannot be traced (not in available_filter_functions?): %d\n",
		       hook->name, ret);
		return ret;
	}
	ret = register_ftrace_function(&hook->ops);
	if (ret) {
		pr_err("register_ftrace_function(%s) failed: %d\n",
		       hook->name, ret);
		ftrace_free_filter(&hook->ops);
		return ret;
	}
	/*
	 * The in-VM suite checks these lines: every kernel function the
	 * module calls must be entered at offset 0 (an IBT kernel faults on
	 * an indirect branch anywhere else).
	 */
	if (hook->orig)
		pr_info("hooked %s, calls %pS\n", hook->name, hook->orig);
	else
		pr_info("hooked %s, calls nothing of it\n", hook->name);
	return 0;
}

static void hook_remove(struct hook *hook)
{
	int ret = unregister_ftrace_function(&hook->ops);

	if (ret)
		pr_err("unregister_ftrace_function(%s) failed: %d\n",
		       hook->name, ret);
	ftrace_free_filter(&hook->ops);
}

int blksnap_intercept_init(struct blkfilter_operations *ops)
{
	int i, ret;

	filter_ops = ops;
	removed_wq = alloc_workqueue("blksnap_removed", 0, 0);
	if (!removed_wq)
		return -ENOMEM;
	for (i = 0; i < HOOK_COUNT; i++) {
		ret = hook_install(&hooks[i]);
		if (ret)
			goto out_remove;
	}
	pr_info("stock kernel: block-device filter served by ftrace hooks\n");
	return 0;

out_remove:
	while (--i >= 0)
		hook_remove(&hooks[i]);
	synchronize_rcu_tasks();
	destroy_workqueue(removed_wq);
	return ret;
}

void blksnap_intercept_exit(struct blkfilter_operations *ops)
{
	int i;

	/*
	 * Attached filters hold a module reference: none is left here, but a
	 * removed device's detach may still be ending (its module_put() done).
	 */
	WARN_ON(!xa_empty(&filters));
	if (removal_watch_on)
		class_interface_unregister(&removal_watch);
	destroy_workqueue(removed_wq);
	for (i = HOOK_COUNT - 1; i >= 0; i--)
		hook_remove(&hooks[i]);
	/* Tasks redirected before the hooks went away leave our text. */
	synchronize_rcu_tasks();
	wait_var_event(&hook_users, !atomic_read(&hook_users));
	synchronize_rcu_tasks();
}

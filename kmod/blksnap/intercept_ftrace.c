// SPDX-License-Identifier: GPL-2.0
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
 *
 * The ftrace callback only decides whether to redirect (an xarray lookup
 * under RCU); everything else runs in the replacement function, which may
 * sleep. A replacement that needs the original function calls it just past
 * its ftrace call site, so the call is not intercepted again: calling the
 * entry instead would recurse, and a compiler-generated tail jump would
 * defeat ftrace's recursion guard.
 *
 * Symbols are resolved with kallsyms_lookup_name(), itself found with a
 * kprobe (it is not exported).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/blkdev.h>
#include <linux/capability.h>
#include <linux/ftrace.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/srcu.h>
#include <linux/uaccess.h>
#include <linux/wait_bit.h>
#include <linux/xarray.h>
#include "../include/uapi/linux/blk-filter.h"
#include "intercept.h"

#define X86_ENDBR64	0xfa1e0ff3U	/* f3 0f 1e fa, little endian */

/* A filter attached to one block device. */
struct attached_filter {
	struct blkfilter *flt;
	/*
	 * Our own open reference (FMODE_READ): keeps a partition from being
	 * deleted under the filter, as the patched kernel detaches on
	 * partition removal and we can only hook disk removal.
	 */
	struct block_device *bdev;
};

/*
 * filters_lock serialises attach, detach, ctl and disk removal (the role of
 * the patched block layer's filter lock). It guards @filters updates and
 * @filter_ops. @filters maps dev_t to struct attached_filter; it is read
 * under filters_srcu in the bio path and under RCU in ftrace callbacks. An
 * entry is freed only after an SRCU grace period.
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
	/* Address just past the ftrace call site of the original. */
	unsigned long orig;
	unsigned long site;
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
	},
};

static void orig_submit_bio_noacct(struct bio *bio)
{
	void (*fn)(struct bio *bio) = (void *)hooks[HOOK_SUBMIT].orig;

	fn(bio);
}

static void orig_del_gendisk(struct gendisk *disk)
{
	void (*fn)(struct gendisk *disk) = (void *)hooks[HOOK_DEL_GENDISK].orig;

	fn(disk);
}

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

	if (regs && hook->wanted(regs))
		regs->ip = (unsigned long)hook->replacement;
}

struct blkfilter *blksnap_bio_filter(struct bio *bio)
{
	struct attached_filter *af = xa_load(&filters, bio->bi_bdev->bd_dev);

	return af ? af->flt : NULL;
}

static void blksnap_submit_bio_noacct(struct bio *bio)
{
	struct attached_filter *af;
	bool taken = false;
	int idx;

	hook_enter();
	idx = srcu_read_lock(&filters_srcu);
	af = xa_load(&filters, bio->bi_bdev->bd_dev);
	if (af)
		taken = af->flt->ops->submit_bio(bio);
	srcu_read_unlock(&filters_srcu, idx);
	if (!taken)
		orig_submit_bio_noacct(bio);
	hook_leave();
}

void blksnap_submit_bio_bypass(struct bio *bio)
{
	orig_submit_bio_noacct(bio);
}

/* Called with filters_lock held. */
static void detach_locked(struct attached_filter *af)
{
	dev_t dev = af->bdev->bd_dev;

	xa_erase(&filters, dev);
	/* No bio is inside the filter any more, nor will enter it. */
	synchronize_srcu(&filters_srcu);
	af->flt->ops->detach(af->flt);
	blkdev_put(af->bdev, FMODE_READ);
	module_put(filter_ops->owner);
	/* ftrace callbacks read the entry under plain RCU. */
	synchronize_rcu();
	kfree(af);
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

	af = kzalloc(sizeof(*af), GFP_KERNEL);
	if (!af)
		return -ENOMEM;

	mutex_lock(&filters_lock);
	if (xa_load(&filters, bdev->bd_dev)) {
		ret = -EALREADY;
		goto out_unlock;
	}
	if (!try_module_get(filter_ops->owner)) {
		ret = -ENODEV;
		goto out_unlock;
	}
	af->bdev = blkdev_get_by_dev(bdev->bd_dev, FMODE_READ, NULL);
	if (IS_ERR(af->bdev)) {
		ret = PTR_ERR(af->bdev);
		goto out_put_module;
	}
	flt = filter_ops->attach(af->bdev);
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
	blkdev_put(af->bdev, FMODE_READ);
out_put_module:
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
		detach_locked(af);
	mutex_unlock(&filters_lock);
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
		ret = af->flt->ops->ctl(af->flt, arg.cmd,
					u64_to_user_ptr(arg.opt), &arg.optlen);
	else
		ret = -ENOENT;
	mutex_unlock(&filters_lock);

	if (af && put_user(arg.optlen, &uarg->optlen))
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
	struct attached_filter *af;
	unsigned long dev;

	hook_enter();
	mutex_lock(&filters_lock);
	xa_for_each(&filters, dev, af) {
		if (af->bdev->bd_disk == disk)
			detach_locked(af);
	}
	mutex_unlock(&filters_lock);
	orig_del_gendisk(disk);
	hook_leave();
}

typedef unsigned long (*kallsyms_lookup_name_t)(const char *name);

/*
 * kallsyms_lookup_name() is not exported: find it with a kprobe, once.
 * The probe sits on a function that the I/O path never calls: a probe on
 * a hot function would be hit by other CPUs while it is torn down.
 */
static kallsyms_lookup_name_t find_kallsyms_lookup_name(void)
{
	static struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	unsigned long addr;

	if (register_kprobe(&kp) < 0)
		return NULL;
	addr = (unsigned long)kp.addr;
	unregister_kprobe(&kp);
	return (kallsyms_lookup_name_t)addr;
}

static unsigned long lookup_symbol(const char *name)
{
	static kallsyms_lookup_name_t lookup;

	if (!lookup)
		lookup = find_kallsyms_lookup_name();
	return lookup ? lookup(name) : 0;
}

static int hook_install(struct hook *hook)
{
	unsigned long addr = lookup_symbol(hook->name);
	u8 insn[5];
	u32 endbr;
	int ret;

	if (!addr) {
		pr_err("cannot resolve %s\n", hook->name);
		return -ENOENT;
	}
	/* With IBT the ftrace call site follows an endbr64. */
	if (!copy_from_kernel_nofault(&endbr, (void *)addr, sizeof(endbr)) &&
	    endbr == X86_ENDBR64)
		addr += sizeof(endbr);
	/* The site holds the 5-byte call to __fentry__ or its nop. */
	if (copy_from_kernel_nofault(insn, (void *)addr, sizeof(insn)) ||
	    (insn[0] != 0xe8 && !(insn[0] == 0x0f && insn[1] == 0x1f))) {
		pr_err("%s has no ftrace call site at %pS\n", hook->name,
		       (void *)addr);
		return -EINVAL;
	}
	BUILD_BUG_ON(sizeof(insn) != MCOUNT_INSN_SIZE);
	hook->site = addr;
	hook->orig = addr + MCOUNT_INSN_SIZE;
	hook->ops.func = hook_callback;
	hook->ops.flags = FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_IPMODIFY;

	ret = ftrace_set_filter_ip(&hook->ops, addr, 0, 0);
	if (ret) {
		pr_err("ftrace_set_filter_ip(%s) failed: %d\n", hook->name, ret);
		return ret;
	}
	ret = register_ftrace_function(&hook->ops);
	if (ret) {
		pr_err("register_ftrace_function(%s) failed: %d\n",
		       hook->name, ret);
		ftrace_free_filter(&hook->ops);
	}
	return ret;
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
	return ret;
}

void blksnap_intercept_exit(struct blkfilter_operations *ops)
{
	int i;

	/* Attached filters hold a module reference: none is left here. */
	WARN_ON(!xa_empty(&filters));
	for (i = HOOK_COUNT - 1; i >= 0; i--)
		hook_remove(&hooks[i]);
	/* Tasks redirected before the hooks went away leave our text. */
	synchronize_rcu_tasks();
	wait_var_event(&hook_users, !atomic_read(&hook_users));
	synchronize_rcu_tasks();
}

// SPDX-License-Identifier: GPL-2.0-only
/* Helper library of the in-VM blksnap tests; see bsnap.h. */
#include "bsnap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

/* ---- verdicts ---- */

void t_fail(const char *fmt, ...)
{
	va_list ap;

	printf("FAIL: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(1);
}

void t_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

void t_expect_err(int ret, int err, const char *what)
{
	if (ret == -err)
		return;
	if (ret == 0)
		t_fail("%s: succeeded, expected %s", what, strerror(err));
	t_fail("%s: got %s (%d), expected %s", what, strerror(-ret), -ret, strerror(err));
}

void t_expect_ok(int ret, const char *what)
{
	if (ret)
		t_fail("%s: %s", what, strerror(-ret));
}

double t_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int xioctl(int fd, unsigned long req, void *arg)
{
	return ioctl(fd, req, arg) < 0 ? -errno : 0;
}

/* ---- device nodes ---- */

/* Makes @path a block or char node for the "MAJ:MIN" in @sysfs_dev. */
static int node_from_sysfs(const char *sysfs_dev, const char *path, mode_t type)
{
	unsigned int maj, min;
	FILE *f = fopen(sysfs_dev, "r");
	int n;

	if (!f)
		return -errno;
	n = fscanf(f, "%u:%u", &maj, &min);
	fclose(f);
	if (n != 2)
		return -EINVAL;
	if (mknod(path, type | 0600, makedev(maj, min)) && errno != EEXIST)
		return -errno;
	return 0;
}

int bs_ctl_open(void)
{
	const char *path = "/dev/" BLKSNAP_CTL;
	int fd = open(path, O_RDWR);

	if (fd < 0 && errno == ENOENT) {
		int ret = node_from_sysfs("/sys/class/misc/" BLKSNAP_CTL "/dev", path, S_IFCHR);

		if (ret)
			return ret;
		fd = open(path, O_RDWR);
	}
	return fd < 0 ? -errno : fd;
}

int bs_version(int ctl, struct blksnap_version *v)
{
	return xioctl(ctl, IOCTL_BLKSNAP_VERSION, v);
}

int bs_create(int ctl, const char *diff_storage, uint64_t limit_sect,
	      struct blksnap_uuid *id)
{
	struct blksnap_snapshot_create arg = {
		.diff_storage_limit_sect = limit_sect,
		.diff_storage_filename = (uintptr_t)diff_storage,
	};
	int ret = xioctl(ctl, IOCTL_BLKSNAP_SNAPSHOT_CREATE, &arg);

	if (!ret)
		*id = arg.id;
	return ret;
}

int bs_destroy(int ctl, const struct blksnap_uuid *id)
{
	struct blksnap_uuid arg = *id;

	return xioctl(ctl, IOCTL_BLKSNAP_SNAPSHOT_DESTROY, &arg);
}

int bs_take(int ctl, const struct blksnap_uuid *id)
{
	struct blksnap_uuid arg = *id;

	return xioctl(ctl, IOCTL_BLKSNAP_SNAPSHOT_TAKE, &arg);
}

int bs_collect(int ctl, struct blksnap_uuid *ids, uint32_t *count)
{
	struct blksnap_snapshot_collect arg = {
		.count = ids ? *count : 0,
		.ids = (uintptr_t)ids,
	};
	int ret = xioctl(ctl, IOCTL_BLKSNAP_SNAPSHOT_COLLECT, &arg);

	*count = arg.count;
	return ret;
}

int bs_wait_event(int ctl, const struct blksnap_uuid *id, uint32_t timeout_ms,
		  struct blksnap_snapshot_event *ev)
{
	memset(ev, 0, sizeof(*ev));
	ev->id = *id;
	ev->timeout_ms = timeout_ms;
	return xioctl(ctl, IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, ev);
}

/* ---- block device filter ---- */

int bs_attach(int bdev)
{
	struct blkfilter_attach arg = { .name = BLKSNAP_FILTER_NAME };

	return xioctl(bdev, BLKFILTER_ATTACH, &arg);
}

int bs_detach(int bdev)
{
	struct blkfilter_detach arg = { .name = BLKSNAP_FILTER_NAME };

	return xioctl(bdev, BLKFILTER_DETACH, &arg);
}

int bs_filter_ctl(int bdev, unsigned int cmd, void *buf, uint32_t *optlen)
{
	struct blkfilter_ctl arg = {
		.name = BLKSNAP_FILTER_NAME,
		.cmd = cmd,
		.optlen = *optlen,
		.opt = (uintptr_t)buf,
	};
	int ret = xioctl(bdev, BLKFILTER_CTL, &arg);

	*optlen = arg.optlen;
	return ret;
}

int bs_cbtinfo(int bdev, struct blksnap_cbtinfo *info)
{
	uint32_t len = sizeof(*info);

	memset(info, 0, sizeof(*info));
	return bs_filter_ctl(bdev, BLKFILTER_CTL_BLKSNAP_CBTINFO, info, &len);
}

int bs_cbtmap(int bdev, uint32_t offset, uint32_t length, uint8_t *map)
{
	const uint32_t step = 1u << 20;

	while (length) {
		uint32_t n = length < step ? length : step;
		struct blksnap_cbtmap arg = {
			.offset = offset, .length = n, .buffer = (uintptr_t)map,
		};
		uint32_t len = sizeof(arg);
		int ret = bs_filter_ctl(bdev, BLKFILTER_CTL_BLKSNAP_CBTMAP, &arg, &len);

		if (ret)
			return ret;
		offset += n;
		map += n;
		length -= n;
	}
	return 0;
}

int bs_cbtdirty(int bdev, const struct blksnap_sectors *ranges, uint32_t count)
{
	struct blksnap_cbtdirty arg = {
		.count = count, .dirty_sectors = (uintptr_t)ranges,
	};
	uint32_t len = sizeof(arg);

	return bs_filter_ctl(bdev, BLKFILTER_CTL_BLKSNAP_CBTDIRTY, &arg, &len);
}

int bs_snapshot_add(int bdev, const struct blksnap_uuid *id)
{
	struct blksnap_snapshotadd arg = { .id = *id };
	uint32_t len = sizeof(arg);

	return bs_filter_ctl(bdev, BLKFILTER_CTL_BLKSNAP_SNAPSHOTADD, &arg, &len);
}

int bs_snapshot_info(int bdev, struct blksnap_snapshotinfo *info)
{
	uint32_t len = sizeof(*info);

	memset(info, 0, sizeof(*info));
	return bs_filter_ctl(bdev, BLKFILTER_CTL_BLKSNAP_SNAPSHOTINFO, info, &len);
}

/* ---- devices ---- */

int t_open_bdev(const char *path, int flags)
{
	int fd = open(path, flags);

	if (fd < 0)
		t_fail("open %s: %s", path, strerror(errno));
	return fd;
}

uint64_t bdev_size(int fd)
{
	uint64_t size = 0;

	if (ioctl(fd, BLKGETSIZE64, &size))
		t_fail("BLKGETSIZE64: %s", strerror(errno));
	return size;
}

uint64_t path_sectors(const char *path)
{
	struct stat st;
	uint64_t size;
	int fd;

	if (stat(path, &st))
		t_fail("stat %s: %s", path, strerror(errno));
	if (!S_ISBLK(st.st_mode))
		return (1ull << 30) / SECTOR;
	fd = t_open_bdev(path, O_RDONLY);
	size = bdev_size(fd);
	close(fd);
	return size / SECTOR;
}

int bs_image_path(const char *name, char *path, size_t len)
{
	char sys[128];
	struct stat st;

	if (!name[0] || strchr(name, '/'))
		return -EINVAL;
	snprintf(path, len, "/dev/%s", name);
	if (!stat(path, &st))
		return S_ISBLK(st.st_mode) ? 0 : -ENOTBLK;
	snprintf(sys, sizeof(sys), "/sys/block/%s/dev", name);
	return node_from_sysfs(sys, path, S_IFBLK);
}

int t_open_image(int bdev, int flags, char *path, size_t len)
{
	struct blksnap_snapshotinfo info;
	char name[IMAGE_DISK_NAME_LEN + 1] = "";
	int ret = bs_snapshot_info(bdev, &info);

	if (ret)
		t_fail("SNAPSHOTINFO: %s", strerror(-ret));
	memcpy(name, info.image, IMAGE_DISK_NAME_LEN);
	ret = bs_image_path(name, path, len);
	if (ret)
		t_fail("no node for image '%s': %s", name, strerror(-ret));
	ret = t_open_bdev(path, flags);
	if (bdev_size(ret) != bdev_size(bdev))
		t_fail("image %s has %llu bytes, its device %llu", path,
		       (unsigned long long)bdev_size(ret), (unsigned long long)bdev_size(bdev));
	return ret;
}

void t_snap_take(struct t_snap *s, const char *diff_storage, uint64_t limit_sect,
		 const int *bdevs, int n)
{
	int i, ret;

	s->ctl = bs_ctl_open();
	if (s->ctl < 0)
		t_fail("open control device: %s", strerror(-s->ctl));
	for (i = 0; i < n; i++) {
		ret = bs_attach(bdevs[i]);
		if (ret && ret != -EALREADY)
			t_fail("attach device #%d: %s", i, strerror(-ret));
	}
	t_expect_ok(bs_create(s->ctl, diff_storage, limit_sect, &s->id), "snapshot create");
	for (i = 0; i < n; i++)
		t_expect_ok(bs_snapshot_add(bdevs[i], &s->id), "snapshot add");
	t_expect_ok(bs_take(s->ctl, &s->id), "snapshot take");
}

void t_snap_destroy(struct t_snap *s)
{
	t_expect_ok(bs_destroy(s->ctl, &s->id), "snapshot destroy");
	close(s->ctl);
	s->ctl = -1;
}

/* ---- data ---- */

struct stamp {
	uint64_t magic;
	uint64_t sector;
	uint64_t seq;
	uint32_t tag;
	uint32_t pad;
	uint64_t fill[59];
	uint64_t sum;
};

_Static_assert(sizeof(struct stamp) == SECTOR, "a stamp is one sector");

#define STAMP_MAGIC 0x626c6b736e617031ull	/* "blksnap1" */

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

static uint64_t stamp_sum(const struct stamp *s)
{
	const uint64_t *w = (const uint64_t *)s;
	uint64_t sum = 0;
	size_t i;

	for (i = 0; i < SECTOR / 8 - 1; i++)
		sum = mix(sum ^ w[i]) + i;
	return sum;
}

void stamp_sector(void *buf, uint32_t tag, uint64_t sector, uint64_t seq)
{
	struct stamp *s = buf;
	uint64_t x = mix(sector ^ (seq << 40) ^ tag);
	size_t i;

	s->magic = STAMP_MAGIC;
	s->sector = sector;
	s->seq = seq;
	s->tag = tag;
	s->pad = 0;
	for (i = 0; i < 59; i++)
		s->fill[i] = x = mix(x + i);
	s->sum = stamp_sum(s);
}

int stamp_check(const void *buf, uint32_t tag, uint64_t sector, uint64_t *seq)
{
	const struct stamp *s = buf;

	if (s->magic != STAMP_MAGIC || s->sector != sector || s->tag != tag ||
	    s->sum != stamp_sum(s))
		return -1;
	*seq = s->seq;
	return 0;
}

void t_stamp_range(int fd, uint32_t tag, uint64_t first, uint64_t count, uint64_t seq)
{
	const uint64_t batch = 2048;	/* 1 MiB */
	uint8_t *buf = t_alloc(batch * SECTOR);

	while (count) {
		uint64_t n = count < batch ? count : batch, i;

		for (i = 0; i < n; i++)
			stamp_sector(buf + i * SECTOR, tag, first + i, seq);
		t_pwrite(fd, buf, n * SECTOR, first * SECTOR);
		first += n;
		count -= n;
	}
	free(buf);
}

uint64_t verify_stamps(int fd, uint32_t tag, uint64_t nsect, const uint32_t *expect,
		       uint32_t seq_all, const char *what)
{
	const uint64_t batch = 2048;	/* 1 MiB */
	uint8_t *buf = t_alloc(batch * SECTOR);
	uint64_t first, bad = 0;

	for (first = 0; first < nsect; first += batch) {
		uint64_t n = nsect - first < batch ? nsect - first : batch, i;

		t_pread(fd, buf, n * SECTOR, first * SECTOR);
		for (i = 0; i < n; i++) {
			uint64_t sector = first + i, seq = 0;
			uint32_t want = expect ? expect[sector] : seq_all;

			if (stamp_check(buf + i * SECTOR, tag, sector, &seq) == 0 && seq == want)
				continue;
			if (bad++ < 5)
				t_info("%s: sector %llu: %s (seq %llu, want %u)", what,
				       (unsigned long long)sector,
				       stamp_check(buf + i * SECTOR, tag, sector, &seq) ?
				       "not a valid stamp" : "wrong sequence",
				       (unsigned long long)seq, want);
		}
	}
	free(buf);
	return bad;
}

void t_verify(int fd, uint32_t tag, uint64_t nsect, const uint32_t *expect,
	      uint32_t seq_all, const char *what)
{
	uint64_t bad = verify_stamps(fd, tag, nsect, expect, seq_all, what);

	if (bad)
		t_fail("%s: %llu sectors wrong", what, (unsigned long long)bad);
}

uint32_t *t_expect_new(uint64_t nsect, uint32_t seq)
{
	uint32_t *e = malloc(nsect * sizeof(*e));
	uint64_t i;

	if (!e)
		t_fail("out of memory");
	for (i = 0; i < nsect; i++)
		e[i] = seq;
	return e;
}

void *t_alloc(size_t len)
{
	void *p = NULL;

	if (posix_memalign(&p, 4096, len ? len : 4096))
		t_fail("out of memory (%zu bytes)", len);
	memset(p, 0, len);
	return p;
}

void t_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	ssize_t n = pwrite(fd, buf, len, off);

	if (n != (ssize_t)len)
		t_fail("write of %zu bytes at %llu: %s", len, (unsigned long long)off,
		       n < 0 ? strerror(errno) : "short write");
}

void t_pread(int fd, void *buf, size_t len, uint64_t off)
{
	ssize_t n = pread(fd, buf, len, off);

	if (n != (ssize_t)len)
		t_fail("read of %zu bytes at %llu: %s", len, (unsigned long long)off,
		       n < 0 ? strerror(errno) : "short read");
}

uint64_t rnd_next(uint64_t *state)
{
	uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ull;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dull;
}

uint64_t rnd_below(uint64_t *state, uint64_t n)
{
	return n ? rnd_next(state) % n : 0;
}

const char *uuid_str(const struct blksnap_uuid *id, char buf[33])
{
	int i;

	for (i = 0; i < 16; i++)
		sprintf(buf + 2 * i, "%02x", id->b[i]);
	return buf;
}

int t_loop_setup(int loopctl, int backing, uint64_t bytes)
{
	struct loop_config cfg = { .fd = backing };
	char path[32];
	int n, fd, i;

	n = ioctl(loopctl, LOOP_CTL_GET_FREE);
	if (n < 0)
		t_fail("LOOP_CTL_GET_FREE: %s", strerror(errno));
	snprintf(path, sizeof(path), "/dev/loop%d", n);
	/* devtmpfs creates the node; wait for it a little */
	for (i = 0; i < 100 && access(path, F_OK); i++)
		usleep(10000);
	fd = open(path, O_RDWR);
	if (fd < 0)
		t_fail("open %s: %s", path, strerror(errno));
	cfg.info.lo_sizelimit = bytes;
	if (ioctl(fd, LOOP_CONFIGURE, &cfg) < 0)
		t_fail("LOOP_CONFIGURE %s: %s", path, strerror(errno));
	close(fd);
	return n;
}

void t_loop_remove(int loopctl, int n)
{
	char path[32];
	int fd;

	snprintf(path, sizeof(path), "/dev/loop%d", n);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		t_fail("open %s: %s", path, strerror(errno));
	if (ioctl(fd, LOOP_CLR_FD) < 0)
		t_fail("LOOP_CLR_FD %s: %s", path, strerror(errno));
	close(fd);
	if (ioctl(loopctl, LOOP_CTL_REMOVE, n) < 0)
		t_fail("LOOP_CTL_REMOVE %d: %s", n, strerror(errno));
}

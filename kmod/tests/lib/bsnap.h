/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Small helper library for the in-VM blksnap tests: the ioctls of the
 * blksnap UAPI, device nodes, sector stamps, direct I/O and the test
 * verdict conventions.
 *
 * Conventions: functions that wrap one ioctl return 0 or -errno and never
 * exit; t_*() helpers end the test with "FAIL: <reason>" and exit status 1
 * when the check they name does not hold.
 */
#ifndef BSNAP_H
#define BSNAP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <linux/blk-filter.h>
#include <linux/blksnap.h>

#define SECTOR 512u

/* ---- verdicts ---- */
void t_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void t_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Fails unless @ret is -@err (a wrapped ioctl's result). */
void t_expect_err(int ret, int err, const char *what);
/* Fails unless @ret is 0. */
void t_expect_ok(int ret, const char *what);
double t_now(void);
/*
 * A new loop device over the first @bytes of @backing (an open fd), through
 * /dev/loop-control (@loopctl); returns its number.
 */
int t_loop_setup(int loopctl, int backing, uint64_t bytes);
/* Clears loop device @n and removes it (LOOP_CLR_FD, LOOP_CTL_REMOVE). */
void t_loop_remove(int loopctl, int n);

/* ---- control device ---- */
/* Opens /dev/blksnap-control, creating the node from sysfs if missing. */
int bs_ctl_open(void);
int bs_version(int ctl, struct blksnap_version *v);
/* diff_storage: path of a block device, directory or file. */
int bs_create(int ctl, const char *diff_storage, uint64_t limit_sect,
	      struct blksnap_uuid *id);
int bs_destroy(int ctl, const struct blksnap_uuid *id);
int bs_take(int ctl, const struct blksnap_uuid *id);
/* Fills at most *count ids; *count becomes the number of snapshots. */
int bs_collect(int ctl, struct blksnap_uuid *ids, uint32_t *count);
int bs_wait_event(int ctl, const struct blksnap_uuid *id, uint32_t timeout_ms,
		  struct blksnap_snapshot_event *ev);

/* ---- block device filter ---- */
int bs_attach(int bdev);
int bs_detach(int bdev);
/* BLKFILTER_CTL with the "blksnap" name; *optlen is updated. */
int bs_filter_ctl(int bdev, unsigned int cmd, void *buf, uint32_t *optlen);
int bs_cbtinfo(int bdev, struct blksnap_cbtinfo *info);
/* Reads @length bytes of the frozen map from block @offset, in a loop. */
int bs_cbtmap(int bdev, uint32_t offset, uint32_t length, uint8_t *map);
int bs_cbtdirty(int bdev, const struct blksnap_sectors *ranges, uint32_t count);
int bs_snapshot_add(int bdev, const struct blksnap_uuid *id);
int bs_snapshot_info(int bdev, struct blksnap_snapshotinfo *info);

/* ---- devices ---- */
/* Opens a block device (O_DIRECT unless @buffered), failing the test on error. */
int t_open_bdev(const char *path, int flags);
uint64_t bdev_size(int fd);
/* Sectors of the block device at @path; for a file or directory, 1 GiB. */
uint64_t path_sectors(const char *path);
/* "/dev/<name>" of an image, creating the node from sysfs if needed. */
int bs_image_path(const char *name, char *path, size_t len);
/*
 * Opens the image of @bdev (from SNAPSHOTINFO); fails the test on error or
 * when the image's size differs from the device's.
 */
int t_open_image(int bdev, int flags, char *path, size_t len);

/*
 * A snapshot of a set of devices: attach (an attached filter is fine),
 * create, add each, take.  Fails the test on any error.
 */
struct t_snap {
	int ctl;
	struct blksnap_uuid id;
};
void t_snap_take(struct t_snap *s, const char *diff_storage, uint64_t limit_sect,
		 const int *bdevs, int n);
void t_snap_destroy(struct t_snap *s);

/* ---- data ---- */
/*
 * A stamped sector: magic, device tag, sector number, sequence number,
 * filler derived from them, and a checksum over the rest.  A sector that
 * was copied to the wrong place, torn, or left over from another
 * generation fails its check.
 */
void stamp_sector(void *buf, uint32_t tag, uint64_t sector, uint64_t seq);
/* 0 if valid for (tag, sector); stores the sequence number in *seq. */
int stamp_check(const void *buf, uint32_t tag, uint64_t sector, uint64_t *seq);
/* Stamps [first, first + count) sectors of @fd with @seq. */
void t_stamp_range(int fd, uint32_t tag, uint64_t first, uint64_t count, uint64_t seq);

/*
 * Reads sectors [0, nsect) of @fd and checks each is a valid stamp of @tag
 * whose sequence number is expect[sector] (or @seq_all when @expect is
 * NULL).  Prints the first few mismatches as "<what>: ..." and returns how
 * many sectors are wrong; a read error fails the test.
 */
uint64_t verify_stamps(int fd, uint32_t tag, uint64_t nsect, const uint32_t *expect,
		       uint32_t seq_all, const char *what);

/* verify_stamps() that fails the test when any sector is wrong. */
void t_verify(int fd, uint32_t tag, uint64_t nsect, const uint32_t *expect,
	      uint32_t seq_all, const char *what);
/* An expect[] array for @nsect sectors, all @seq. */
uint32_t *t_expect_new(uint64_t nsect, uint32_t seq);

void *t_alloc(size_t len);	/* 4 KiB aligned, zeroed, fails the test */
void t_pwrite(int fd, const void *buf, size_t len, uint64_t off);
void t_pread(int fd, void *buf, size_t len, uint64_t off);

/*
 * Background writers: @nthreads threads write stamped ranges of 1..@max_len
 * sectors at random places of @fd, each inside a stripe of @stripe sectors
 * that only it writes, with increasing sequence numbers from @seq, and
 * record in expect[] the sequence number each sector must hold afterwards.
 * A failed write fails the test.
 */
#define T_LOAD_MAX_THREADS 8
struct t_load {
	int fd;
	uint32_t tag;
	uint64_t nsect;
	uint32_t *expect;
	int nthreads;
	uint64_t stripe;
	uint32_t max_len;
	uint32_t seq;		/* next sequence number */
	uint64_t writes;	/* out: writes done */
	int stop;
	pthread_t threads[T_LOAD_MAX_THREADS];
};
/* Fills @l for @nthreads writers on all of @fd, expecting @seq everywhere. */
void t_load_init(struct t_load *l, int fd, uint32_t tag, int nthreads, uint64_t stripe,
		 uint32_t max_len, uint32_t seq);
void t_load_start(struct t_load *l);
void t_load_stop(struct t_load *l);

/* xorshift64* random numbers, one state per thread. */
uint64_t rnd_next(uint64_t *state);
uint64_t rnd_below(uint64_t *state, uint64_t n);

const char *uuid_str(const struct blksnap_uuid *id, char buf[33]);

#endif /* BSNAP_H */

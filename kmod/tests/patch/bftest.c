// SPDX-License-Identifier: GPL-2.0-only
/*
 * bftest: drives the block device filter ioctls for the patch tests.
 *
 * Each command prints one result line: "OK" (plus values) on success or the
 * errno name (ENOENT, EALREADY, ...) on failure, and exits 0 in both cases,
 * so the test script compares the line with what it expects.  Usage errors
 * exit 2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/blkpg.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/blk-filter.h>
#include "testfilter/testfilt.h"

#define IO_BLOCK 4096

static const char *errname(int err)
{
	switch (err) {
	case ENOENT: return "ENOENT";
	case EALREADY: return "EALREADY";
	case EBUSY: return "EBUSY";
	case EINVAL: return "EINVAL";
	case EACCES: return "EACCES";
	case EPERM: return "EPERM";
	case ENODEV: return "ENODEV";
	case ENXIO: return "ENXIO";
	case ENOSPC: return "ENOSPC";
	case EIO: return "EIO";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case ENOTTY: return "ENOTTY";
	case EFAULT: return "EFAULT";
	default: return strerror(err);
	}
}

static int result(int ret)
{
	if (ret < 0)
		printf("%s\n", errname(errno));
	else
		printf("OK\n");
	return 0;
}

static int open_dev(const char *path, int flags)
{
	int fd = open(path, flags);

	if (fd < 0) {
		printf("open %s: %s\n", path, errname(errno));
		exit(1);
	}
	return fd;
}

static void set_name(__u8 *dst, const char *name)
{
	memset(dst, 0, BLKFILTER_NAME_LENGTH);
	strncpy((char *)dst, name, BLKFILTER_NAME_LENGTH);
}

static int do_attach(const char *dev, const char *name, __u32 optlen)
{
	struct blkfilter_attach arg = { .optlen = optlen };
	__u32 opt = 0;
	int fd = open_dev(dev, O_RDONLY);

	set_name(arg.name, name);
	if (optlen)
		arg.opt = (uintptr_t)&opt;
	return result(ioctl(fd, BLKFILTER_ATTACH, &arg));
}

static int do_detach(const char *dev, const char *name)
{
	struct blkfilter_detach arg;
	int fd = open_dev(dev, O_RDONLY);

	set_name(arg.name, name);
	return result(ioctl(fd, BLKFILTER_DETACH, &arg));
}

/* A name that fills all 32 bytes has no terminating NUL. */
static int do_badname(const char *dev)
{
	struct blkfilter_attach arg = { 0 };
	int fd = open_dev(dev, O_RDONLY);

	memset(arg.name, 'x', sizeof(arg.name));
	return result(ioctl(fd, BLKFILTER_ATTACH, &arg));
}

static int ctl(int fd, const char *name, __u32 cmd, void *buf, __u32 *len)
{
	struct blkfilter_ctl arg = { .cmd = cmd, .optlen = *len };
	int ret;

	set_name(arg.name, name);
	arg.opt = (uintptr_t)buf;
	ret = ioctl(fd, BLKFILTER_CTL, &arg);
	*len = arg.optlen;
	return ret;
}

static int do_stats(const char *dev, const char *name)
{
	struct testfilt_stats st;
	__u32 len = sizeof(st);
	int fd = open_dev(dev, O_RDONLY);

	if (ctl(fd, name, TESTFILT_CMD_STATS, &st, &len) < 0)
		return result(-1);
	printf("OK reads=%llu writes=%llu flushes=%llu deferred=%llu",
	       (unsigned long long)st.reads, (unsigned long long)st.writes,
	       (unsigned long long)st.flushes,
	       (unsigned long long)st.deferred);
	printf(" failed=%llu last=%llu mode=%u\n",
	       (unsigned long long)st.failed,
	       (unsigned long long)st.last_write_sector, st.mode);
	return 0;
}

/* A buffer too small: the filter fails and reports the size it needs. */
static int do_stats_small(const char *dev, const char *name)
{
	char buf[4];
	__u32 len = sizeof(buf);
	int fd = open_dev(dev, O_RDONLY);

	if (ctl(fd, name, TESTFILT_CMD_STATS, buf, &len) < 0)
		printf("%s len=%u\n", errname(errno), len);
	else
		printf("OK len=%u\n", len);
	return 0;
}

/*
 * Any filter command with a zeroed buffer of @len bytes: prints the result,
 * the length reported back and the buffer in hex.
 */
static int do_ctl_raw(const char *dev, const char *name, __u32 cmd,
		      __u32 len)
{
	unsigned char *buf = calloc(1, len ? len : 1);
	int fd = open_dev(dev, O_RDONLY), ret;
	__u32 i;

	if (!buf)
		return 1;
	ret = ctl(fd, name, cmd, buf, &len);
	printf("%s len=%u", ret < 0 ? errname(errno) : "OK", len);
	if (!ret) {
		printf(" data=");
		for (i = 0; i < len; i++)
			printf("%02x", buf[i]);
	}
	printf("\n");
	return 0;
}

static int do_mode(const char *dev, const char *name, __u32 mode)
{
	__u32 len = sizeof(mode);
	int fd = open_dev(dev, O_RDONLY);

	return result(ctl(fd, name, TESTFILT_CMD_MODE, &mode, &len));
}

static int do_reset(const char *dev, const char *name)
{
	__u32 len = 0;
	int fd = open_dev(dev, O_RDONLY);

	return result(ctl(fd, name, TESTFILT_CMD_RESET, NULL, &len));
}

static void *block_buf(int byte)
{
	void *buf;

	if (posix_memalign(&buf, IO_BLOCK, IO_BLOCK)) {
		printf("out of memory\n");
		exit(1);
	}
	memset(buf, byte, IO_BLOCK);
	return buf;
}

/* Write @count 4 KiB blocks of @byte from block @first, one bio each. */
static int do_write(const char *dev, long first, long count, int byte)
{
	void *buf = block_buf(byte);
	int fd = open_dev(dev, O_WRONLY | O_DIRECT);
	long i;

	for (i = 0; i < count; i++)
		if (pwrite(fd, buf, IO_BLOCK, (first + i) * IO_BLOCK) !=
		    IO_BLOCK)
			return result(-1);
	return result(fsync(fd));
}

/* Check that @count blocks from block @first hold @byte. */
static int do_verify(const char *dev, long first, long count, int byte)
{
	void *want = block_buf(byte), *got = block_buf(0);
	int fd = open_dev(dev, O_RDONLY | O_DIRECT);
	long i;

	for (i = 0; i < count; i++) {
		if (pread(fd, got, IO_BLOCK, (first + i) * IO_BLOCK) !=
		    IO_BLOCK)
			return result(-1);
		if (memcmp(want, got, IO_BLOCK)) {
			printf("MISMATCH block=%ld\n", first + i);
			return 0;
		}
	}
	return result(0);
}

static int do_delpart(const char *disk, int partno)
{
	struct blkpg_partition part = { .pno = partno };
	struct blkpg_ioctl_arg arg = {
		.op = BLKPG_DEL_PARTITION,
		.datalen = sizeof(part),
		.data = &part,
	};
	int fd = open_dev(disk, O_RDONLY);

	return result(ioctl(fd, BLKPG, &arg));
}

static int do_rereadpt(const char *disk)
{
	int fd = open_dev(disk, O_RDONLY);

	return result(ioctl(fd, BLKRRPART));
}

static int do_loopremove(int nr)
{
	int fd = open_dev("/dev/loop-control", O_RDWR);

	return result(ioctl(fd, LOOP_CTL_REMOVE, nr));
}

/* Drop root (and so CAP_SYS_ADMIN), then try to attach. */
static int do_unpriv_attach(const char *dev, const char *name)
{
	struct blkfilter_attach arg = { 0 };
	int fd = open_dev(dev, O_RDONLY);

	if (setgid(65534) || setuid(65534)) {
		printf("setuid: %s\n", errname(errno));
		return 1;
	}
	set_name(arg.name, name);
	return result(ioctl(fd, BLKFILTER_ATTACH, &arg));
}

/*
 * Attach and detach @rounds times while a child process keeps writing to
 * the device, to exercise the hook against concurrent detach.  Prints OK and
 * the number of failed attach/detach calls (expected 0).
 */
static int do_stress(const char *dev, const char *name, int rounds)
{
	struct blkfilter_attach att = { 0 };
	struct blkfilter_detach det;
	int fd = open_dev(dev, O_RDONLY), failures = 0, status, i;
	pid_t child;

	set_name(att.name, name);
	set_name(det.name, name);
	child = fork();
	if (child < 0)
		return result(-1);
	if (!child) {
		void *buf = block_buf(0x5a);
		int wfd = open_dev(dev, O_WRONLY | O_DIRECT);

		for (;;)
			for (i = 0; i < 64; i++)
				if (pwrite(wfd, buf, IO_BLOCK,
					   (off_t)i * IO_BLOCK) != IO_BLOCK)
					_exit(1);
	}
	for (i = 0; i < rounds; i++) {
		if (ioctl(fd, BLKFILTER_ATTACH, &att) < 0)
			failures++;
		usleep(2000);
		if (ioctl(fd, BLKFILTER_DETACH, &det) < 0)
			failures++;
	}
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	printf("OK failures=%d\n", failures);
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: bftest attach|attachopt|detach|stats|statssmall|reset DEV NAME\n"
		"       bftest mode DEV NAME MODE | badname DEV | unpriv DEV NAME\n"
		"       bftest ctlraw DEV NAME CMD LEN\n"
		"       bftest write|verify DEV FIRST COUNT BYTE\n"
		"       bftest delpart DISK PARTNO | rereadpt DISK | loopremove NR\n"
		"       bftest stress DEV NAME ROUNDS\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";

	if (argc == 4 && !strcmp(cmd, "attach"))
		return do_attach(argv[2], argv[3], 0);
	if (argc == 4 && !strcmp(cmd, "attachopt"))
		return do_attach(argv[2], argv[3], sizeof(__u32));
	if (argc == 4 && !strcmp(cmd, "detach"))
		return do_detach(argv[2], argv[3]);
	if (argc == 3 && !strcmp(cmd, "badname"))
		return do_badname(argv[2]);
	if (argc == 4 && !strcmp(cmd, "stats"))
		return do_stats(argv[2], argv[3]);
	if (argc == 4 && !strcmp(cmd, "statssmall"))
		return do_stats_small(argv[2], argv[3]);
	if (argc == 4 && !strcmp(cmd, "reset"))
		return do_reset(argv[2], argv[3]);
	if (argc == 6 && !strcmp(cmd, "ctlraw"))
		return do_ctl_raw(argv[2], argv[3], strtoul(argv[4], NULL, 0),
				  strtoul(argv[5], NULL, 0));
	if (argc == 5 && !strcmp(cmd, "mode"))
		return do_mode(argv[2], argv[3], strtoul(argv[4], NULL, 0));
	if (argc == 4 && !strcmp(cmd, "unpriv"))
		return do_unpriv_attach(argv[2], argv[3]);
	if (argc == 6 && !strcmp(cmd, "write"))
		return do_write(argv[2], atol(argv[3]), atol(argv[4]),
				(int)strtol(argv[5], NULL, 0));
	if (argc == 6 && !strcmp(cmd, "verify"))
		return do_verify(argv[2], atol(argv[3]), atol(argv[4]),
				 (int)strtol(argv[5], NULL, 0));
	if (argc == 4 && !strcmp(cmd, "delpart"))
		return do_delpart(argv[2], atoi(argv[3]));
	if (argc == 3 && !strcmp(cmd, "rereadpt"))
		return do_rereadpt(argv[2]);
	if (argc == 3 && !strcmp(cmd, "loopremove"))
		return do_loopremove(atoi(argv[2]));
	if (argc == 5 && !strcmp(cmd, "stress"))
		return do_stress(argv[2], argv[3], atoi(argv[4]));
	usage();
	return 2;
}

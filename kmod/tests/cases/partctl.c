// SPDX-License-Identifier: GPL-2.0-only
/*
 * partctl: partition and loop device control for the shell cases (not a
 * test by itself; busybox has no BLKPG or loop-control commands).
 *
 *   partctl del DISK N                   BLKPG_DEL_PARTITION
 *   partctl add DISK N START_SECT NR_SECT BLKPG_ADD_PARTITION
 *   partctl mbr DISK START1 NR1 START2 NR2
 *                                        writes an MBR with two Linux
 *                                        partitions (sectors of 512 bytes)
 *   partctl loopremove N                 LOOP_CTL_REMOVE of /dev/loopN
 *
 * Exit status 0 on success, 1 with "partctl: <what>: <error>" on failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/blkpg.h>
#include <linux/loop.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static void die(const char *what)
{
	printf("partctl: %s: %s\n", what, strerror(errno));
	exit(1);
}

static long long num(const char *s)
{
	char *end;
	long long v = strtoll(s, &end, 0);

	if (!*s || *end || v < 0) {
		printf("partctl: not a number: %s\n", s);
		exit(1);
	}
	return v;
}

static int blkpg(const char *disk, int op, int pno, long long start,
		 long long len)
{
	struct blkpg_partition part = {
		.start = start * 512,
		.length = len * 512,
		.pno = pno,
	};
	struct blkpg_ioctl_arg arg = {
		.op = op,
		.datalen = sizeof(part),
		.data = &part,
	};
	int fd = open(disk, O_RDONLY);

	if (fd < 0)
		die(disk);
	if (ioctl(fd, BLKPG, &arg))
		die(op == BLKPG_DEL_PARTITION ? "BLKPG_DEL_PARTITION" :
						"BLKPG_ADD_PARTITION");
	close(fd);
	return 0;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
}

static int mbr(const char *disk, char **argv)
{
	uint8_t sector[512] = { 0 };
	int i, fd;

	for (i = 0; i < 2; i++) {
		uint8_t *e = sector + 446 + 16 * i;

		e[4] = 0x83;
		put_le32(e + 8, num(argv[2 * i]));
		put_le32(e + 12, num(argv[2 * i + 1]));
	}
	sector[510] = 0x55;
	sector[511] = 0xaa;
	fd = open(disk, O_WRONLY);
	if (fd < 0)
		die(disk);
	if (pwrite(fd, sector, sizeof(sector), 0) != sizeof(sector) ||
	    fsync(fd))
		die("write MBR");
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "del"))
		return blkpg(argv[2], BLKPG_DEL_PARTITION, num(argv[3]), 0, 0);
	if (argc == 6 && !strcmp(argv[1], "add"))
		return blkpg(argv[2], BLKPG_ADD_PARTITION, num(argv[3]),
			     num(argv[4]), num(argv[5]));
	if (argc == 7 && !strcmp(argv[1], "mbr"))
		return mbr(argv[2], argv + 3);
	if (argc == 3 && !strcmp(argv[1], "loopremove")) {
		int fd = open("/dev/loop-control", O_RDWR);

		if (fd < 0)
			die("/dev/loop-control");
		if (ioctl(fd, LOOP_CTL_REMOVE, (int)num(argv[2])) < 0)
			die("LOOP_CTL_REMOVE");
		return 0;
	}
	printf("usage: partctl del DISK N | add DISK N START NR | mbr DISK S1 N1 S2 N2 | loopremove N\n");
	return 1;
}

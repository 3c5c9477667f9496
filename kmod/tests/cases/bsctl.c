// SPDX-License-Identifier: GPL-2.0-only
/*
 * bsctl: a small command line driver of the blksnap UAPI for the shell
 * cases (not a test by itself).
 *
 *   bsctl attach DEV | detach DEV
 *   bsctl snap DIFF_STORAGE LIMIT_SECT DEV...   prints "ID <hex>" and
 *                                               "IMAGE <dev> <path>" lines
 *   bsctl destroy ID
 *   bsctl cbt DEV                               prints "<generation> <change number>"
 *   bsctl count                                 prints the number of snapshots
 *   bsctl cleanup DEV...                        destroys every snapshot and
 *                                               detaches the filter from DEVs
 *
 * Exit status 0 on success, 1 with "bsctl: <what>: <error>" on failure.
 */
#include "bsnap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int ctl(void)
{
	int fd = bs_ctl_open();

	if (fd < 0) {
		printf("bsctl: open control device: %s\n", strerror(-fd));
		exit(1);
	}
	return fd;
}

static void check(int ret, const char *what)
{
	if (ret) {
		printf("bsctl: %s: %s\n", what, strerror(-ret));
		exit(1);
	}
}

static int parse_id(const char *hex, struct blksnap_uuid *id)
{
	unsigned int v, i;

	if (strlen(hex) != 32)
		return -EINVAL;
	for (i = 0; i < 16; i++) {
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -EINVAL;
		id->b[i] = v;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct blksnap_uuid id;
	char buf[64];
	int fd, i;

	if (argc < 2)
		goto usage;
	if (!strcmp(argv[1], "attach") && argc == 3) {
		fd = t_open_bdev(argv[2], O_RDONLY);
		check(bs_attach(fd), "attach");
	} else if (!strcmp(argv[1], "detach") && argc == 3) {
		fd = t_open_bdev(argv[2], O_RDONLY);
		check(bs_detach(fd), "detach");
	} else if (!strcmp(argv[1], "snap") && argc >= 5) {
		int c = ctl(), n = argc - 4, *fds = calloc(n, sizeof(int));

		for (i = 0; i < n; i++) {
			int ret;

			fds[i] = t_open_bdev(argv[4 + i], O_RDONLY);
			ret = bs_attach(fds[i]);
			if (ret != -EALREADY)
				check(ret, "attach");
		}
		check(bs_create(c, argv[2], strtoull(argv[3], NULL, 0), &id), "create");
		printf("ID %s\n", uuid_str(&id, buf));
		for (i = 0; i < n; i++)
			check(bs_snapshot_add(fds[i], &id), "add");
		check(bs_take(c, &id), "take");
		for (i = 0; i < n; i++) {
			struct blksnap_snapshotinfo info;
			char name[IMAGE_DISK_NAME_LEN + 1] = "";

			check(bs_snapshot_info(fds[i], &info), "snapshotinfo");
			memcpy(name, info.image, IMAGE_DISK_NAME_LEN);
			check(bs_image_path(name, buf, sizeof(buf)), "image node");
			printf("IMAGE %s %s\n", argv[4 + i], buf);
		}
	} else if (!strcmp(argv[1], "destroy") && argc == 3) {
		check(parse_id(argv[2], &id), "snapshot id");
		check(bs_destroy(ctl(), &id), "destroy");
	} else if (!strcmp(argv[1], "cbt") && argc == 3) {
		struct blksnap_cbtinfo info;

		fd = t_open_bdev(argv[2], O_RDONLY);
		check(bs_cbtinfo(fd, &info), "cbtinfo");
		printf("%s %u\n", uuid_str(&info.generation_id, buf), info.changes_number);
	} else if (!strcmp(argv[1], "count") && argc == 2) {
		uint32_t count = 0;

		check(bs_collect(ctl(), NULL, &count), "collect");
		printf("%u\n", count);
	} else if (!strcmp(argv[1], "cleanup")) {
		struct blksnap_uuid ids[64];
		uint32_t count = 64, k;
		int c = ctl();

		check(bs_collect(c, ids, &count), "collect");
		for (k = 0; k < count && k < 64; k++)
			check(bs_destroy(c, &ids[k]), "destroy");
		for (i = 2; i < argc; i++) {
			int ret;

			fd = t_open_bdev(argv[i], O_RDONLY);
			ret = bs_detach(fd);
			if (ret != -ENOENT)
				check(ret, "detach");
			close(fd);
		}
	} else {
		goto usage;
	}
	return 0;
usage:
	printf("usage: bsctl attach|detach DEV | snap DIFF LIMIT_SECT DEV... | destroy ID |"
	       " cbt DEV | count | cleanup DEV...\n");
	return 1;
}

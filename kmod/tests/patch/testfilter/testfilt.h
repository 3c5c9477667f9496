/* SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note */
/*
 * Commands of the test block device filter "testfilt" (BLKFILTER_CTL),
 * shared by the module and the test programs.
 */
#ifndef _TESTFILT_H
#define _TESTFILT_H

#include <linux/types.h>

#define TESTFILT_NAME		"testfilt"
/* A second filter type from the same module, to test EBUSY. */
#define TESTFILT_OTHER_NAME	"testfilt2"

enum testfilt_cmd {
	/* out: struct testfilt_stats */
	TESTFILT_CMD_STATS = 0,
	/* in: __u32 mode (enum testfilt_mode) */
	TESTFILT_CMD_MODE = 1,
	/* no buffer: zero the counters */
	TESTFILT_CMD_RESET = 2,
};

enum testfilt_mode {
	/* count the bio and let it pass */
	TESTFILT_MODE_PASS = 0,
	/* count it; end writes with data at once with an I/O error */
	TESTFILT_MODE_FAIL_WRITES = 1,
	/* count it, take it, and resubmit it from a work item */
	TESTFILT_MODE_DEFER = 2,
	/* count it and let it pass; refuse BLKFILTER_DETACH with EBUSY */
	TESTFILT_MODE_PIN = 3,
};

struct testfilt_stats {
	__u64 reads;		/* read bios seen */
	__u64 writes;		/* write bios with data seen */
	__u64 flushes;		/* empty flush bios seen */
	__u64 deferred;		/* bios taken and resubmitted */
	__u64 failed;		/* bios taken and ended with an error */
	__u64 last_write_sector; /* first sector of the last write seen */
	__u32 mode;
	__u32 padding;
};

#endif /* _TESTFILT_H */

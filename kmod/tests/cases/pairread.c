// SPDX-License-Identifier: GPL-2.0-only
/*
 * pairread: paired sequential reads of two block devices, for the bench
 * (not a test by itself).
 *
 *   pairread A B OFFSET_MIB SIZE_MIB
 *
 * Reads SIZE_MIB MiB from OFFSET_MIB of both devices, 1 MiB at a time with
 * O_DIRECT, the two reads of each MiB back to back: A then B on even
 * steps, B then A on odd ones, so whichever read warms a shared lower
 * layer for the other does so equally often, and a change of host load
 * hits both alike (under TCG the guest's clock follows the host's load).
 * Prints one line:
 *
 *   <seconds reading A> <seconds reading B> <median of the per-MiB ratios A/B>
 *   <seconds A, trimmed> <seconds B, trimmed> <slow reads of A> <of B>
 *
 * The trimmed sums leave out the slowest tenth of each device's reads, the
 * same number on both sides: under TCG on a shared host a few reads stall
 * for tens of milliseconds when the host deschedules the vCPU, and a
 * handful of such stalls moved a round's plain sums by 10-25 %.  A slow
 * read is one over 4 times its device's median read: if one device's path
 * stalled by itself, its count shows it.
 *
 * Exit status 0, or 1 with "pairread: <what>: <error>".
 */
#include "bsnap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIB (1024u * 1024u)

static void die(const char *what)
{
	fprintf(stderr, "pairread: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double timed_read(int fd, void *buf, off_t at, const char *name)
{
	double t = t_now();
	ssize_t n = pread(fd, buf, MIB, at);

	if (n != (ssize_t)MIB) {
		if (n >= 0)
			errno = EIO;
		die(name);
	}
	return t_now() - t;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/*
 * Sorts @t[0..n) and returns the sum of its fastest n - n / 10; *@slow is
 * how many exceed 4 times the median.
 */
static double trimmed_sum(double *t, unsigned long n, unsigned long *slow)
{
	double sum = 0, median;
	unsigned long i;

	qsort(t, n, sizeof(*t), cmp_double);
	median = n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
	*slow = 0;
	for (i = 0; i < n; i++) {
		if (i < n - n / 10)
			sum += t[i];
		if (t[i] > 4 * median)
			(*slow)++;
	}
	return sum;
}

int main(int argc, char **argv)
{
	unsigned long off, size, i, slow_a, slow_b;
	double ta = 0, tb = 0, *ratio, *time_a, *time_b, tta, ttb;
	void *buf;
	int a, b;

	if (argc != 5) {
		fprintf(stderr, "usage: pairread A B OFFSET_MIB SIZE_MIB\n");
		return 1;
	}
	off = strtoul(argv[3], NULL, 0);
	size = strtoul(argv[4], NULL, 0);
	if (!size) {
		errno = EINVAL;
		die("size");
	}
	a = open(argv[1], O_RDONLY | O_DIRECT);
	if (a < 0)
		die(argv[1]);
	b = open(argv[2], O_RDONLY | O_DIRECT);
	if (b < 0)
		die(argv[2]);
	buf = t_alloc(MIB);
	ratio = calloc(size, sizeof(*ratio));
	time_a = calloc(size, sizeof(*time_a));
	time_b = calloc(size, sizeof(*time_b));
	if (!ratio || !time_a || !time_b)
		die("calloc");
	for (i = 0; i < size; i++) {
		off_t at = (off_t)(off + i) * MIB;
		double da, db;

		if (i % 2) {
			db = timed_read(b, buf, at, argv[2]);
			da = timed_read(a, buf, at, argv[1]);
		} else {
			da = timed_read(a, buf, at, argv[1]);
			db = timed_read(b, buf, at, argv[2]);
		}
		ta += da;
		tb += db;
		time_a[i] = da;
		time_b[i] = db;
		ratio[i] = db > 0 ? da / db : 0;
	}
	qsort(ratio, size, sizeof(*ratio), cmp_double);
	tta = trimmed_sum(time_a, size, &slow_a);
	ttb = trimmed_sum(time_b, size, &slow_b);
	printf("%.6f %.6f %.3f %.6f %.6f %lu %lu\n", ta, tb,
	       size % 2 ? ratio[size / 2] :
			  (ratio[size / 2 - 1] + ratio[size / 2]) / 2,
	       tta, ttb, slow_a, slow_b);
	free(time_b);
	free(time_a);
	free(ratio);
	close(a);
	close(b);
	return 0;
}

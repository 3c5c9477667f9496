// SPDX-License-Identifier: GPL-2.0-only
/*
 * content ORIGIN DIFF_STORAGE SECONDS
 *
 * The image holds exactly the data of the moment of the take while
 * several threads overwrite the origin at random: every sector of the
 * origin is stamped, a snapshot is taken, writers run for SECONDS while a
 * reader re-verifies the whole image again and again; afterwards the image
 * is verified twice more (the second time with the copies written back)
 * and the origin must hold exactly what was written.
 */
#include "bsnap.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define TAG 0xc0417e47

struct verifier {
	int fd;
	uint64_t nsect;
	int stop;
	unsigned int passes;
	uint64_t bad;
};

static void *verify_loop(void *p)
{
	struct verifier *v = p;

	while (!__atomic_load_n(&v->stop, __ATOMIC_ACQUIRE)) {
		v->bad += verify_stamps(v->fd, TAG, v->nsect, NULL, 1, "image during writes");
		v->passes++;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct verifier v = { 0 };
	struct t_load load = { 0 };
	struct t_snap snap;
	char image[64];
	uint64_t nsect;
	pthread_t th;
	double secs;
	int origin, img;

	if (argc != 4)
		t_fail("usage: content ORIGIN DIFF_STORAGE SECONDS");
	secs = atof(argv[3]);
	origin = t_open_bdev(argv[1], O_RDWR | O_DIRECT);
	nsect = bdev_size(origin) / SECTOR;

	t_info("stamping %llu sectors", (unsigned long long)nsect);
	t_stamp_range(origin, TAG, 0, nsect, 1);
	t_snap_take(&snap, argv[2], path_sectors(argv[2]), &origin, 1);
	img = t_open_image(origin, O_RDONLY | O_DIRECT, image, sizeof(image));
	t_verify(img, TAG, nsect, NULL, 1, "image right after the take");

	/* 1 MiB stripes, writes up to 128 KiB: they cross chunk boundaries */
	t_load_init(&load, origin, TAG, 4, 2048, 256, 1);

	v.fd = img;
	v.nsect = nsect;
	t_load_start(&load);
	if (pthread_create(&th, NULL, verify_loop, &v))
		t_fail("pthread_create");
	usleep((useconds_t)(secs * 1e6));
	t_load_stop(&load);
	__atomic_store_n(&v.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	t_info("%llu writes, %u image passes during writes",
	       (unsigned long long)load.writes, v.passes);
	if (v.bad)
		t_fail("%llu sector mismatches on the image while writes ran",
		       (unsigned long long)v.bad);
	if (!v.passes || load.writes < 100)
		t_fail("too little work done to prove anything");

	t_verify(img, TAG, nsect, NULL, 1, "image after the writes, pass 1");
	/*
	 * Written back, copies lying in one run of a block-device storage are
	 * read from it without a worker (diff_area_image_in_storage()).
	 */
	sync();
	t_verify(img, TAG, nsect, NULL, 1, "image after the writes and a sync, pass 2");
	t_verify(origin, TAG, nsect, load.expect, 0, "origin");
	close(img);
	t_snap_destroy(&snap);
	t_expect_ok(bs_detach(origin), "detach");
	t_verify(origin, TAG, nsect, load.expect, 0, "origin after destroy");
	t_info("ok");
	return 0;
}

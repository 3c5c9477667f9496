#!/bin/sh
# The in-VM benchmark (bf.mode=bench).  Disks: vda a large sparse origin
# (so that a short random-write run keeps hitting chunks not copied yet and
# really measures copy-on-write), vdb the blksnap difference storage, vdc
# the dm-snapshot exception store.  Every figure is a ratio to the raw
# device measured in the same boot.  Writes "BENCH <name> <value> <unit>"
# lines to the results port.
# shellcheck source=guest/common.sh
. /t/common.sh
RUNTIME=$(tr " " "\n" </proc/cmdline | sed -n "s/^bf\.runtime=//p")
RUNTIME=${RUNTIME:-10}

# Results go to the console (stderr) and the results port; stdout is kept
# for the numbers the helpers below return.
out() {
	echo "BENCH $*" >&2
	echo "BENCH $*" >/dev/ttyS1
}

# randwrite <device>: 4 KiB O_DIRECT random-write IOPS, 4 threads.
randwrite() {
	fio --thread --name=rw --filename="$1" --rw=randwrite --bs=4k --direct=1 \
		--ioengine=psync --numjobs=4 --time_based --runtime="$RUNTIME" \
		--randrepeat=0 --group_reporting --output-format=terse --terse-version=3 |
		awk -F';' '{ printf "%d\n", $49 }'
}

# seqread <device> <offset MiB>: 1 MiB O_DIRECT sequential read of 512 MiB, KiB/s.
seqread() {
	fio --thread --name=sr --filename="$1" --rw=read --bs=1M --direct=1 --ioengine=psync \
		--offset="$2"M --size=512M --output-format=terse --terse-version=3 |
		awk -F';' '{ printf "%d\n", $7 }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", (b > 0 ? a / b : 0) }'; }

bf_reload_module || { out error 1 "blksnap does not load"; exit 1; }
sectors=$(blockdev --getsz /dev/vda)

# The regions the read tests use hold data (not holes of the sparse file).
dd if=/dev/zero of=/dev/vda bs=1M seek=1024 count=1536 oflag=direct conv=notrunc 2>/dev/null

# dm_randwrite <chunk sectors>: IOPS through a dm-snapshot origin.
dm_randwrite() {
	if ! dmsetup --noudevsync create bforigin --table "0 $sectors snapshot-origin /dev/vda" >&2 ||
		! dmsetup --noudevsync create bfsnap --table "0 $sectors snapshot /dev/vda /dev/vdc N $1" >&2 ||
		! dmsetup mknodes >&2; then
		out error 1 "dm-snapshot setup failed"
		echo 0
		return
	fi
	randwrite /dev/mapper/bforigin
	dmsetup --noudevsync remove bfsnap >&2
	dmsetup --noudevsync remove bforigin >&2
}

# Two rounds of every configuration, interleaved, so that drift of a
# shared host hits all of them alike; ratios are of the sums.
raw=0 cbt=0 cow=0 dm256=0 dm4=0
for round in 1 2; do
	raw=$((raw + $(randwrite /dev/vda)))
	bsctl attach /dev/vda || { out error 1 "attach failed"; exit 1; }
	cbt=$((cbt + $(randwrite /dev/vda)))
	snap=$(bsctl snap /dev/vdb "$(blockdev --getsz /dev/vdb)" /dev/vda) ||
		{ out error 1 "snapshot failed: $snap"; exit 1; }
	cow=$((cow + $(randwrite /dev/vda)))
	id=$(echo "$snap" | sed -n 's/^ID //p')
	img=$(echo "$snap" | sed -n 's/^IMAGE [^ ]* //p')
	if [ $round = 1 ]; then
		bsctl destroy "$id" || out error 1 "destroy failed"
		bsctl detach /dev/vda || out error 1 "detach failed"
	fi
	[ $round = 2 ] && break
	dm256=$((dm256 + $(dm_randwrite 512)))
	dm4=$((dm4 + $(dm_randwrite 8)))
done

# Image reads (snapshot of round 2 still held): a region hardly touched by
# the random writes (served from the origin) and a region overwritten
# first (served from the storage).
o=$(seqread /dev/vda 1024)
i=$(seqread "$img" 1024)
out origin_seqread_mibps $((o / 1024)) MiB/s
out image_seqread_ratio "$(ratio "$i" "$o")" ratio
dd if=/dev/zero of=/dev/vda bs=1M seek=2048 count=512 oflag=direct conv=notrunc 2>/dev/null
o=$(seqread /dev/vda 2048)
i=$(seqread "$img" 2048)
out image_seqread_copied_ratio "$(ratio "$i" "$o")" ratio
bsctl destroy "$id" || out error 1 "destroy failed"
bsctl detach /dev/vda || out error 1 "detach failed"
dm256=$((dm256 + $(dm_randwrite 512)))
dm4=$((dm4 + $(dm_randwrite 8)))

out raw_randwrite_iops $((raw / 2)) iops
out cbt_randwrite_ratio "$(ratio "$cbt" "$raw")" ratio
out cow_randwrite_iops $((cow / 2)) iops
out cow_randwrite_ratio "$(ratio "$cow" "$raw")" ratio
out dmsnap_256k_randwrite_ratio "$(ratio "$dm256" "$raw")" ratio
out dmsnap_4k_randwrite_ratio "$(ratio "$dm4" "$raw")" ratio

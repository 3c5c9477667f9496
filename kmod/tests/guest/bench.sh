#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
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
ROUNDS=$(tr " " "\n" </proc/cmdline | sed -n "s/^bf\.rounds=//p")
ROUNDS=${ROUNDS:-5}
SEQ_MIB=256

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
raw=0 cbt=0 cow=0 dmsame=0 dm4=0
for round in 1 2; do
	raw=$((raw + $(randwrite /dev/vda)))
	bsctl attach /dev/vda || { out error 1 "attach failed"; exit 1; }
	cbt=$((cbt + $(randwrite /dev/vda)))
	snap=$(bsctl snap /dev/vdb "$(blockdev --getsz /dev/vdb)" /dev/vda) ||
		{ out error 1 "snapshot failed: $snap"; exit 1; }
	cow=$((cow + $(randwrite /dev/vda)))
	id=$(echo "$snap" | sed -n 's/^ID //p')
	img=$(echo "$snap" | sed -n 's/^IMAGE [^ ]* //p')
	# The chunk size blksnap chose for this image (its kernel log line):
	# dm-snapshot is measured at the same one.
	chunk_kib=$(dmesg | sed -n "s/.*blksnap-image: $(basename "$img"): [0-9]* sectors, chunk \([0-9]*\) KiB.*/\1/p" | tail -n 1)
	case $chunk_kib in
	'' | *[!0-9]*) out error 1 "no chunk size logged for $img"; exit 1 ;;
	esac
	if [ $round = 1 ]; then
		bsctl destroy "$id" || out error 1 "destroy failed"
		bsctl detach /dev/vda || out error 1 "detach failed"
	fi
	[ $round = 2 ] && break
	dmsame=$((dmsame + $(dm_randwrite $((chunk_kib * 2)))))
	dm4=$((dm4 + $(dm_randwrite 8)))
done

bsctl destroy "$id" || out error 1 "destroy failed"
bsctl detach /dev/vda || out error 1 "detach failed"
dmsame=$((dmsame + $(dm_randwrite $((chunk_kib * 2)))))
dm4=$((dm4 + $(dm_randwrite 8)))

# Image reads against origin reads, on a fresh snapshot.  A round reads
# the same $SEQ_MIB MiB of both with /t/pairread: 1 MiB O_DIRECT reads, the
# origin's and the image's read of each MiB back to back (which one goes
# first alternates), so a change of host load hits both alike; the page
# cache is written back and dropped first.  The round's ratio is origin
# read time over image read time, each summed without its slowest tenth
# of reads (host stalls; see pairread.c); every round is printed with the
# untrimmed ratio, the median of its per-MiB ratios and each device's
# count of slow reads, and the figure is the median of the rounds.
# readpair <label> <offset MiB>: prints the rounds, the median ratio.
readpair() {
	ratios=""
	r=1
	while [ "$r" -le "$ROUNDS" ]; do
		sync
		echo 3 >/proc/sys/vm/drop_caches
		p=$(/t/pairread /dev/vda "$img" "$2" "$SEQ_MIB" 2>&1) ||
			{ out error 1 "pairread failed: $p"; return; }
		# shellcheck disable=SC2086
		set -- "$1" "$2" $p
		x=$(ratio "$6" "$7")
		out "$1_round$r" "$x" "ratio # untrimmed $(ratio "$3" "$4"), origin $(awk -v t="$3" -v m="$SEQ_MIB" \
			'BEGIN { printf "%d", m / t }') MiB/s, image $(awk -v t="$4" \
			-v m="$SEQ_MIB" 'BEGIN { printf "%d", m / t }') MiB/s, median per-MiB ratio $5, slow reads origin $8 image $9"
		set -- "$1" "$2"
		ratios="$ratios $x"
		r=$((r + 1))
	done
	# shellcheck disable=SC2086
	printf '%s\n' $ratios | sort -n | awk '{ v[NR] = $1 }
		END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

bsctl attach /dev/vda || { out error 1 "attach failed"; exit 1; }
snap=$(bsctl snap /dev/vdb "$(blockdev --getsz /dev/vdb)" /dev/vda) ||
	{ out error 1 "snapshot failed: $snap"; exit 1; }
id=$(echo "$snap" | sed -n 's/^ID //p')
img=$(echo "$snap" | sed -n 's/^IMAGE [^ ]* //p')
# Untouched: no chunk copied yet, every image read passes to the origin.
out image_seqread_ratio "$(readpair image_seqread 1024)" "ratio (median of $ROUNDS)"
# Copied: the whole range overwritten first, every image read comes from
# the difference storage.
dd if=/dev/zero of=/dev/vda bs=1M seek=2048 count="$SEQ_MIB" oflag=direct conv=notrunc 2>/dev/null
out image_seqread_copied_ratio "$(readpair image_seqread_copied 2048)" "ratio (median of $ROUNDS)"
# Mixed: every other MiB overwritten, the image alternates between the
# origin and the storage within each 1 MiB read pair.
m=0
while [ "$m" -lt "$SEQ_MIB" ]; do
	dd if=/dev/zero of=/dev/vda bs=1M seek=$((1536 + m)) count=1 oflag=direct conv=notrunc 2>/dev/null
	m=$((m + 2))
done
out image_seqread_mixed_ratio "$(readpair image_seqread_mixed 1536)" "ratio (median of $ROUNDS)"
bsctl destroy "$id" || out error 1 "destroy failed"
bsctl detach /dev/vda || out error 1 "detach failed"

out raw_randwrite_iops $((raw / 2)) iops
out cbt_randwrite_ratio "$(ratio "$cbt" "$raw")" ratio
out cow_randwrite_iops $((cow / 2)) iops
out cow_randwrite_ratio "$(ratio "$cow" "$raw")" ratio
out cow_chunk_kib "$chunk_kib" KiB
out "dmsnap_${chunk_kib}k_randwrite_ratio" "$(ratio "$dmsame" "$raw")" ratio
[ "$chunk_kib" = 4 ] || out dmsnap_4k_randwrite_ratio "$(ratio "$dm4" "$raw")" ratio

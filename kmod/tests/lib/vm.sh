# SPDX-License-Identifier: GPL-2.0-only
# shellcheck shell=bash
# Shared machinery of kmod/tests/run and kmod/tests/bench: host packages,
# module and test program builds, the busybox initramfs, the QEMU boot and
# the scan of the console log.  Sourced, never executed.
#
# Kernels by name (bf_select_kernel, the --kernel option of run, bench and
# tests/conformance/vm/run): 6.1, 6.12, 6.12-rt, 6.12-cloud are Debian 12's
# packaged kernels (installed with apt-get when missing); 6.1-patched and
# 6.12-patched are built from Debian's linux-source with kmod/patches by
# build-kernel.
#
# Environment (all optional):
#   KERNEL     kernel image to boot   (default: newest /boot/vmlinuz-6.1.0-*-amd64)
#   KVER       its release string     (default: $KDIR/include/config/kernel.release,
#              else the image file name)
#   KDIR       module build directory (default: /lib/modules/$KVER/build)
#   KMODROOT   root holding lib/modules/$KVER with virtio/ext4/dm modules
#              (default: /); modules built into the kernel are skipped
#   WORK       work directory         (default: kmod/tests/.work/<mode>-<pid>)
#   QEMU_TIMEOUT_SLACK  extra seconds per boot on top of the case budgets
#   BLKSNAP_PARAMS      module parameters passed to insmod in the guest

BF_TESTS_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
BF_REPO=$(cd -- "$BF_TESTS_DIR/../.." && pwd)
BF_PACKAGES=(linux-image-amd64 linux-headers-amd64 qemu-system-x86 busybox-static
	fio e2fsprogs cpio kmod gcc make libc6-dev dmsetup xz-utils binutils)
BF_KERNEL_NAMES="6.1 6.12 6.12-rt 6.12-cloud 6.1-patched 6.12-patched"

bf_log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
bf_die() { bf_log "error: $*"; exit 2; }

bf_install_packages() {
	local missing=() p
	for p in "${BF_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
			missing+=("$p")
	done
	[[ ${#missing[@]} -eq 0 ]] && return 0
	bf_log "installing: ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		"${missing[@]}" >&2
}

# Points KERNEL and KDIR at the kernel with the block-filter patches
# (series 6.1 by default, or 6.12), built (or taken from its cache) by
# kmod/tests/build-kernel.
bf_use_patched_kernel() {
	local series=${1:-6.1} paths bk_args=()
	[[ -x $BF_TESTS_DIR/build-kernel ]] || bf_die "kmod/tests/build-kernel is missing"
	[[ $series == 6.1 ]] || bk_args=(--series "$series")
	BF_KERNEL_NAME=$series-patched
	paths=$("$BF_TESTS_DIR/build-kernel" "${bk_args[@]}") ||
		bf_die "building the patched $series kernel failed"
	KERNEL=$(sed -n 's/^BZIMAGE=//p' <<<"$paths")
	KDIR=$(sed -n 's/^BUILD_DIR=//p' <<<"$paths")
	[[ -n $KERNEL && -n $KDIR ]] || bf_die "build-kernel printed no BZIMAGE/BUILD_DIR"
	export KERNEL KDIR
}

# bf_select_kernel <name>: one of $BF_KERNEL_NAMES; sets KERNEL (and KDIR
# for the patched ones), installing Debian's packages for the packaged ones.
bf_select_kernel() {
	local name=$1 flavour pkgs=()
	case $name in
	6.1) flavour='6.1.0-*-amd64' pkgs=(linux-image-amd64 linux-headers-amd64) ;;
	6.12) flavour='6.12.*+deb12-amd64'
		pkgs=(linux-image-6.12-amd64 linux-headers-6.12-amd64 pahole) ;;
	6.12-rt) flavour='6.12.*+deb12-rt-amd64'
		pkgs=(linux-image-6.12-rt-amd64 linux-headers-6.12-rt-amd64 pahole) ;;
	6.12-cloud) flavour='6.12.*+deb12-cloud-amd64'
		pkgs=(linux-image-6.12-cloud-amd64 linux-headers-6.12-cloud-amd64 pahole) ;;
	6.1-patched) bf_use_patched_kernel 6.1; return ;;
	6.12-patched) bf_use_patched_kernel 6.12; return ;;
	*) bf_die "unknown kernel '$name' (one of: $BF_KERNEL_NAMES)" ;;
	esac
	BF_PACKAGES+=("${pkgs[@]}")
	bf_install_packages
	KERNEL=$(find /boot -maxdepth 1 -name "vmlinuz-$flavour" | sort -V | tail -n 1)
	[[ -n $KERNEL ]] || bf_die "no /boot/vmlinuz-$flavour after installing ${pkgs[*]}"
	BF_KERNEL_NAME=$name
	export KERNEL
}

# Sets KERNEL, KVER, KDIR, KMODROOT.
bf_resolve_kernel() {
	if [[ -z ${KERNEL:-} ]]; then
		KERNEL=$(find /boot -maxdepth 1 -name 'vmlinuz-6.1.0-*-amd64' | sort -V | tail -n 1)
		[[ -n $KERNEL ]] || bf_die "no /boot/vmlinuz-6.1.0-*-amd64; set KERNEL"
	fi
	[[ -r $KERNEL ]] || bf_die "cannot read kernel image $KERNEL"
	if [[ -z ${KVER:-} && -n ${KDIR:-} && -r $KDIR/include/config/kernel.release ]]; then
		KVER=$(<"$KDIR/include/config/kernel.release")
	fi
	if [[ -z ${KVER:-} ]]; then
		KVER=$(basename -- "$KERNEL")
		KVER=${KVER#vmlinuz-}
	fi
	KDIR=${KDIR:-/lib/modules/$KVER/build}
	KMODROOT=${KMODROOT:-/}
	[[ -d $KDIR ]] || bf_die "module build directory $KDIR missing; set KDIR"
	export KERNEL KVER KDIR KMODROOT
}

# bf_setup_work <mode>: a fresh work directory for this run.
bf_setup_work() {
	local mode=$1
	WORK=${WORK:-${BF_TESTS_DIR}/.work/${mode}-$$}
	rm -rf -- "$WORK"
	mkdir -p -- "$WORK"
	export WORK
}

# Builds blksnap.ko from a copy of the sources, so that our object files
# never land in (or race with) the module author's tree.
bf_build_module() {
	local src=$WORK/src
	BF_MODULE=""
	if [[ ! -f $BF_REPO/kmod/blksnap/Makefile && ! -f $BF_REPO/kmod/blksnap/Kbuild ]]; then
		bf_log "warning: kmod/blksnap has no Makefile/Kbuild: no module in the guest"
		return 0
	fi
	mkdir -p -- "$src/kmod"
	tar -C "$BF_REPO/kmod" --exclude='*.o' --exclude='*.ko' --exclude='*.cmd' \
		--exclude='*.mod' --exclude='*.mod.c' --exclude='Module.symvers' \
		--exclude='modules.order' -cf - blksnap include | tar -C "$src/kmod" -xf -
	bf_log "building blksnap.ko against $KDIR"
	if ! nice -n 10 make -s -j2 -C "$KDIR" M="$src/kmod/blksnap" modules \
		>"$WORK/module-build.log" 2>&1; then
		cat "$WORK/module-build.log" >&2
		bf_die "module build failed"
	fi
	# Warning-free on every kernel: compiler, modpost and objtool (whose
	# IBT checks on 6.12 flag code that an IBT CPU would fault on).
	if grep -qiE 'warning|error' "$WORK/module-build.log"; then
		cat "$WORK/module-build.log" >&2
		bf_die "module build against $KDIR printed warnings"
	fi
	BF_MODULE=$(find "$src/kmod/blksnap" -name 'blksnap.ko' | head -n 1)
	[[ -n $BF_MODULE ]] || bf_die "build produced no blksnap.ko"
	bf_check_module_symbols "$BF_MODULE"
}

# The module must not find kernel addresses for itself (kprobes,
# kallsyms): an address it computes is where an IBT kernel faults. It may
# only call what it links against.
bf_check_module_symbols() {
	local bad undef
	# nm's whole output first: grep -q in a pipe under pipefail can make
	# nm die of SIGPIPE and the test read as false
	undef=$(nm -u -- "$1" | awk '{ print $2 }')
	bad=$(grep -E '^(register_kprobe|unregister_kprobe|kallsyms_lookup_name|kallsyms_on_each_symbol)$' \
		<<<"$undef" || true)
	[[ -z $bad ]] || bf_die "blksnap.ko resolves kernel addresses itself: ${bad//$'\n'/ }"
	BF_INTERCEPT=ftrace
	if grep -qx blkfilter_register <<<"$undef"; then BF_INTERCEPT=native; fi
	export BF_INTERCEPT
}

# Builds every C program in kmod/tests/cases/ statically with the shared
# helper library, against the project's UAPI headers.
bf_build_programs() {
	local out=$WORK/bin c lib
	mkdir -p -- "$out"
	shopt -s nullglob
	lib=("$BF_TESTS_DIR"/lib/*.c)
	for c in "$BF_TESTS_DIR"/cases/*.c; do
		bf_log "compiling $(basename -- "$c")"
		nice -n 10 gcc -static -O2 -g -Wall -Wextra -Werror -pthread -D_GNU_SOURCE \
			-I "$BF_REPO/kmod/include/uapi" -I "$BF_TESTS_DIR/lib" \
			-o "$out/$(basename -- "$c" .c)" "$c" "${lib[@]}" ||
			bf_die "compiling $c failed"
	done
	shopt -u nullglob
}

# Copies a dynamically linked program and the libraries ldd names.
bf_copy_with_libs() {
	local root=$1 prog=$2 lib
	install -D -m 0755 "$prog" "$root/bin/$(basename -- "$prog")"
	while read -r lib; do
		[[ -e $root$lib ]] || install -D -m 0755 "$lib" "$root$lib"
	done < <(ldd "$prog" | grep -o '/[^ ]*')
}

# Copies the named kernel modules and their dependencies into the initramfs
# and indexes them with depmod so that busybox modprobe resolves them.
bf_copy_kernel_modules() {
	local root=$1 m ko dst
	shift
	mkdir -p -- "$root/lib/modules/$KVER"
	for m in "$@"; do
		while read -r ko; do
			dst=$root${ko#"${KMODROOT%/}"}
			# busybox modprobe loads plain .ko files only (6.12's are .ko.xz)
			case $ko in
			*.ko.xz) dst=${dst%.xz} ;;
			*.ko.zst) dst=${dst%.zst} ;;
			*.ko.gz) dst=${dst%.gz} ;;
			esac
			[[ -e $dst ]] && continue
			mkdir -p -- "$(dirname -- "$dst")"
			case $ko in
			*.ko.xz) xz -dc -- "$ko" >"$dst" ;;
			*.ko.zst) zstd -qdc -- "$ko" >"$dst" ;;
			*.ko.gz) gzip -dc -- "$ko" >"$dst" ;;
			*) install -m 0644 "$ko" "$dst" ;;
			esac
		done < <(modprobe -S "$KVER" -d "$KMODROOT" --show-depends "$m" 2>/dev/null |
			awk '$1 == "insmod" { print $2 }')
	done
	local f
	for f in modules.builtin modules.builtin.modinfo modules.order; do
		[[ -e $KMODROOT/lib/modules/$KVER/$f ]] &&
			cp -- "$KMODROOT/lib/modules/$KVER/$f" "$root/lib/modules/$KVER/"
	done
	depmod -b "$root" "$KVER"
}

# bf_build_initramfs: busybox, the module, test programs, guest scripts,
# fio, e2fsprogs, dmsetup and the kernel modules they need.
bf_build_initramfs() {
	local root=$WORK/initramfs p
	rm -rf -- "$root"
	mkdir -p -- "$root"/{bin,sbin,dev,proc,sys,tmp,mnt,t,lib,etc}
	install -m 0755 "$(command -v busybox)" "$root/bin/busybox"
	install -m 0755 "$BF_TESTS_DIR/guest/init" "$root/init"
	install -m 0755 "$BF_TESTS_DIR"/guest/*.sh "$root/t/"
	install -m 0644 "$BF_TESTS_DIR/guest/cases.tab" "$root/t/"
	find "$WORK/bin" -type f -exec install -m 0755 -t "$root/t/" {} +
	[[ -z $BF_MODULE ]] || install -m 0644 "$BF_MODULE" "$root/lib/blksnap.ko"
	for p in fio mke2fs e2fsck dmsetup; do
		bf_copy_with_libs "$root" "$(PATH=$PATH:/sbin:/usr/sbin command -v "$p")"
	done
	ln -s mke2fs "$root/bin/mkfs.ext4"
	bf_copy_kernel_modules "$root" virtio_pci virtio_blk crc32c_generic ext4 dm_snapshot dm_delay zram loop
	printf 'root:x:0:0:root:/:/bin/sh\n' >"$root/etc/passwd"
	(cd -- "$root" && find . -print0 | cpio --null -o -H newc --quiet) >"$WORK/initramfs.cpio"
}

# bf_prepare <mode>: everything before the first boot.
bf_prepare() {
	bf_install_packages
	bf_resolve_kernel
	bf_setup_work "$1"
	bf_log "kernel ${BF_KERNEL_NAME:-custom}: $KERNEL ($KVER), work dir $WORK"
	bf_build_module
	bf_build_programs
	bf_build_initramfs
}

# bf_make_disks <name:size>...: fresh sparse raw files; sets BF_DISK_ARGS.
bf_make_disks() {
	local spec name size
	BF_DISK_ARGS=()
	for spec in "$@"; do
		name=${spec%%:*}
		size=${spec#*:}
		rm -f -- "$WORK/$name.img"
		truncate -s "$size" "$WORK/$name.img"
		BF_DISK_ARGS+=(-drive "file=$WORK/$name.img,format=raw,if=virtio,cache=none,aio=threads")
	done
}

# bf_boot <log> <results> <seconds> <kernel args>: one boot; returns
# qemu's (or timeout's) status.  The guest writes results to its second
# serial port, which lands in <results>.
bf_boot() {
	local log=$1 results=$2 secs=$3 args=$4 rc=0
	timeout -k 10 "$secs" qemu-system-x86_64 -accel "${BF_QEMU_ACCEL:-tcg,thread=multi}" -m 1024 -smp 2 \
		-nographic -no-reboot -kernel "$KERNEL" -initrd "$WORK/initramfs.cpio" \
		-append "console=ttyS0 panic=-1 oops=panic no_timer_check rdinit=/init bf.intercept=${BF_INTERCEPT:-none} $args" \
		-serial mon:stdio -serial "file:$results" "${BF_DISK_ARGS[@]}" \
		</dev/null >>"$log" 2>&1 || rc=$?
	return "$rc"
}

# Kernel messages that mean the kernel found something wrong (lockdep's own
# reports start with WARNING: or BUG:; its boot banner must not match).
BF_SPLAT_RE='(BUG:|WARNING:|Oops|general protection fault|Kernel panic|KASAN|UBSAN|kfence|blocked for more than|soft lockup|hard LOCKUP|self-detected stall|rcu: INFO: rcu_|Call Trace:|list_add corruption|list_del corruption|kernel BUG|DEBUG_LOCKS_WARN_ON|suspicious RCU usage|inconsistent lock state|possible circular locking|possible recursive locking|lock held when returning|bad unlock balance|INFO: lockdep is turned off)'

# bf_splats <log>: prints the splat lines of a console log.
bf_splats() {
	grep -naE "$BF_SPLAT_RE" -- "$1" || true
}

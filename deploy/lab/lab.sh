#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The QEMU lab: N guests (Debian's stock kernels under TCG, 6.1 unless told
# otherwise, the blksnap module, blkfleet-agent with mutual TLS) and
# blkfleet-server on this host with SQLite and a local repository. Guests
# reach nothing but QEMU's user network; the host reaches each guest's agent
# and command channel through hostfwd on 127.0.0.1 only.
#
#   deploy/lab/lab.sh start [--hosts N] [--size MIB] [--kernel LIST]
#                                                      build what is missing, boot, start the server
#       --kernel LIST  comma-separated, one per guest (h1 first), the last one
#                      repeated for the rest: 6.1 (default), 6.12 (Debian 12's
#                      linux-image-6.12-amd64) or the path of a kernel image
#                      whose /lib/modules/<release> (with build/) is installed
#   deploy/lab/lab.sh stop [--keep]                    stop everything; remove the lab dir unless --keep
#   deploy/lab/lab.sh exec HOST COMMAND...             run a shell command in a guest (its status is ours)
#   deploy/lab/lab.sh reboot HOST                      power a guest off and boot it again (CBT is lost)
#   deploy/lab/lab.sh status                           guests, ports, server
#
# The lab lives in $BLKFLEET_LAB_DIR (default /tmp/blkfleet-lab); after start
# `source $BLKFLEET_LAB_DIR/lab.env` points the blkfleet CLI at the server.
# Each guest has vda (SIZE MiB, ext4 with data, mounted at /data, backed
# up), vdb (SIZE MiB, empty, a restore target) and vdc (1 GiB, ext4 at /ds,
# the difference storage). Nothing is mounted on the host.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/../.." && pwd)
lab=${BLKFLEET_LAB_DIR:-/tmp/blkfleet-lab}
bin=${BLKFLEET_LAB_BUILD:-$root/build/default}

log() { printf '[lab %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# lab_exec HOST COMMAND: runs COMMAND with /bin/sh in the guest, prints its
# output (stdout and stderr), returns its status (255: guest unreachable).
lab_exec() {
  local h=$1 port out rc
  shift
  port=$(cat "$lab/$h/cmd.port" 2>/dev/null) || return 255
  exec 3<>"/dev/tcp/127.0.0.1/$port" 2>/dev/null || return 255
  printf '%s\n' "( $* ) </dev/null 2>&1" 'echo "__LAB_RC=$?"' 'exit' >&3
  out=$(cat <&3) || true
  exec 3<&-
  [[ $out == *__LAB_RC=* ]] || return 255
  rc=${out##*__LAB_RC=}
  rc=${rc%%[!0-9]*}
  out=${out%__LAB_RC=*}
  [[ -z $out ]] || printf '%s' "$out"
  return "${rc:-255}"
}

# kernel_key SPEC: the directory name of a kernel of --kernel in the lab.
kernel_key() {
  case $1 in
    6.1 | 6.12) echo "$1" ;;
    *) basename -- "$1" | tr -c 'A-Za-z0-9._+\n-' _ ;;
  esac
}

# check_kernel SPEC: a name the lab knows or a readable kernel image.
check_kernel() {
  case $1 in
    6.1 | 6.12) return 0 ;;
    */*) [[ -f $1 && -r $1 ]] || die "--kernel: $1 is not a readable kernel image" ;;
    *) die "--kernel: unknown kernel '$1' (6.1, 6.12 or the path of a kernel image)" ;;
  esac
}

build() {
  # shellcheck source-path=SCRIPTDIR source=../../kmod/tests/lib/vm.sh
  . "$root/kmod/tests/lib/vm.sh"
  bf_install_packages
  bash "$root/deploy/setup.sh" build >&2
  # BLKFLEET_LAB_BUILD may name another configured build tree (tests/run.sh
  # passes the packaging build's); otherwise the default preset's.
  if [[ -f $bin/CMakeCache.txt && $bin != "$root/build/default" ]]; then
    log "building blkfleet in $bin"
  else
    log "building blkfleet (preset default)"
    cmake --preset default -S "$root" >/dev/null
  fi
  cmake --build "$bin" -j "$(nproc)" --target blkfleet-agent blkfleet-server blkfleet >&2

  log "pki (CA, server, operator, one certificate per agent)"
  local pki=$lab/pki cli=$bin/client/blkfleet h spec
  "$cli" pki init --dir "$pki" >/dev/null
  "$cli" pki issue --dir "$pki" --kind server --name lab-server --san 127.0.0.1 --san localhost >/dev/null
  "$cli" pki issue --dir "$pki" --kind operator --name lab-admin --role admin >/dev/null
  for h in "${hosts[@]}"; do
    "$cli" pki issue --dir "$pki" --kind agent --name "$h" --san 127.0.0.1 >/dev/null
  done

  # One module build and one initramfs per distinct kernel.
  local -A done_keys=()
  for spec in "${host_kernel[@]}"; do
    [[ -n ${done_keys[$(kernel_key "$spec")]:-} ]] && continue
    done_keys[$(kernel_key "$spec")]=1
    build_kernel "$spec"
  done
  rm -rf -- "$lab/build"
}

# build_kernel SPEC: blksnap.ko built against the kernel's headers and an
# initramfs with the kernel's own modules, in $lab/kernels/<key>/.
build_kernel() {
  local spec=$1 kd
  kd=$lab/kernels/$(kernel_key "$spec")
  unset KERNEL KVER KDIR
  export KMODROOT=/
  case $spec in
    6.1 | 6.12) bf_select_kernel "$spec" ;;
    *) KERNEL=$spec ;;
  esac
  bf_resolve_kernel
  [[ -d /lib/modules/$KVER/kernel ]] || die "--kernel $spec: no /lib/modules/$KVER (its virtio and ext4 modules)"
  mkdir -p "$kd"
  WORK=$lab/build/$(kernel_key "$spec")
  mkdir -p "$WORK"
  bf_build_module
  [[ -n $BF_MODULE ]] || die "no blksnap.ko for $KVER"
  echo "$KERNEL" >"$kd/image"
  echo "$KVER" >"$kd/release"

  log "initramfs for $KVER"
  local r=$WORK/initramfs pki=$lab/pki h
  rm -rf -- "$r"
  mkdir -p -- "$r"/{bin,sbin,dev,proc,sys,tmp,lib,etc/lab/pki}
  install -m 0755 "$(command -v busybox)" "$r/bin/busybox"
  install -m 0755 "$here/guest-init" "$r/init"
  install -m 0755 "$here/hash-hook" "$r/bin/lab-hash-hook"
  install -m 0644 "$BF_MODULE" "$r/lib/blksnap.ko"
  bf_copy_with_libs "$r" "$bin/agent/blkfleet-agent"
  bf_copy_kernel_modules "$r" virtio_pci virtio_blk virtio_net crc32c_generic ext4 >/dev/null
  cp "$pki"/ca.crt "$r/etc/lab/pki/"
  for h in "${hosts[@]}"; do cp "$pki/$h.crt" "$pki/$h.key" "$r/etc/lab/pki/"; done
  printf 'root:x:0:0:root:/:/bin/sh\n' >"$r/etc/passwd"
  printf '127.0.0.1 localhost\n' >"$r/etc/hosts"
  printf '%s\n' "--listen 0.0.0.0:7443 --backend kernel --device /dev/vda --diff-storage-dir /ds" \
    "--diff-storage-limit 512MiB --allowed-server lab-server --snapshot-hook /bin/lab-hash-hook" \
    "--restore-device /dev/vdb" \
    >"$r/etc/lab/agent.args.default"
  (cd -- "$r" && find . -print0 | cpio --null -o -H newc --quiet) >"$kd/initramfs.cpio"
  rm -rf -- "$WORK"
}

# make_disks HOST: vda with an ext4 filesystem holding data (random and
# text files, seeded by the host name), vdb empty, vdc ext4 for /ds.
make_disks() {
  local h=$1 d=$lab/$1 src i
  src=$d/seed
  mkdir -p "$src/random" "$src/text"
  for i in 1 2 3 4 5 6; do
    head -c $((6 << 20)) /dev/zero |
      openssl enc -aes-128-ctr -pass "pass:$h-$i" -nosalt -pbkdf2 >"$src/random/blob$i.bin"
  done
  cp -r /usr/include/linux "$src/text/" 2>/dev/null || true
  cp -r /usr/share/common-licenses "$src/text/" 2>/dev/null || true
  truncate -s "${size_mib}M" "$d/vda.img"
  mkfs.ext4 -q -F -L data -E lazy_itable_init=0,lazy_journal_init=0 -d "$src" "$d/vda.img"
  rm -rf -- "$src"
  truncate -s "${size_mib}M" "$d/vdb.img"
  truncate -s 1G "$d/vdc.img"
  mkfs.ext4 -q -F -L ds -E lazy_itable_init=0,lazy_journal_init=0 "$d/vdc.img"
}

# boot HOST: starts the guest's QEMU in the background.
boot() {
  local h=$1 d=$lab/$1 disk args=() kd
  kd=$lab/kernels/$(cat "$d/kernel")
  for disk in vda vdb vdc; do
    args+=(-drive "file=$d/$disk.img,format=raw,if=virtio,cache=none,aio=threads")
  done
  : >"$d/console.log"
  : >"$d/serial.log"
  qemu-system-x86_64 -accel tcg,thread=multi -m 1024 -smp 1 -display none -no-reboot \
    -kernel "$(cat "$kd/image")" -initrd "$kd/initramfs.cpio" \
    -append "console=ttyS0 panic=-1 no_timer_check rdinit=/init lab.host=$h" \
    -serial "file:$d/console.log" -serial "file:$d/serial.log" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$(cat "$d/agent.port")-:7443,hostfwd=tcp:127.0.0.1:$(cat "$d/cmd.port")-:7000" \
    -device virtio-net-pci,netdev=n0 "${args[@]}" \
    -pidfile "$d/qemu.pid" -daemonize
}

# wait_ready HOST: the command channel answers and the agent listens.
wait_ready() {
  local h=$1 i
  for ((i = 0; i < 600; i++)); do
    if grep -q SETUP-FAIL "$lab/$h/serial.log" 2>/dev/null; then
      die "$h: $(grep -m1 SETUP-FAIL "$lab/$h/serial.log")"
    fi
    if lab_exec "$h" 'netstat -ltn | grep -q ":7443 "' >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  tail -n 30 "$lab/$h/console.log" >&2
  die "$h did not come up in 300 s"
}

start_server() {
  local s=$lab/server pki=$lab/pki
  mkdir -p "$s"
  rm -f "$s/port"
  setsid "$bin/server/blkfleet-server" --listen 127.0.0.1:0 --port-file "$s/port" \
    --data-dir "$s/data" --tls-ca "$pki/ca.crt" --tls-cert "$pki/lab-server.crt" \
    --tls-key "$pki/lab-server.key" >>"$s/log" 2>&1 </dev/null &
  echo $! >"$s/pid"
  local i
  for ((i = 0; i < 300; i++)); do
    [[ -s $s/port ]] && break
    sleep 0.1
  done
  [[ -s $s/port ]] || die "the server did not start: $(tail -n 5 "$s/log")"
}

write_env() {
  local h
  {
    echo "export BLKFLEET_SERVER=127.0.0.1:$(cat "$lab/server/port")"
    echo "export BLKFLEET_TLS_CA=$lab/pki/ca.crt"
    echo "export BLKFLEET_TLS_CERT=$lab/pki/lab-admin.crt"
    echo "export BLKFLEET_TLS_KEY=$lab/pki/lab-admin.key"
    echo "export BLKFLEET_LAB_DIR=$lab"
    echo "BLKFLEET_LAB_HOSTS=\"${hosts[*]}\""
    for h in "${hosts[@]}"; do echo "BLKFLEET_LAB_AGENT_$h=127.0.0.1:$(cat "$lab/$h/agent.port")"; done
    # The release each guest boots (lab.sh exec HOST 'uname -r' asks the guest).
    for h in "${hosts[@]}"; do echo "BLKFLEET_LAB_KERNEL_$h=$(cat "$lab/kernels/$(cat "$lab/$h/kernel")/release")"; done
  } >"$lab/lab.env"
}

cmd_start() {
  local n=2 klist=6.1 spec
  size_mib=256
  while (($#)); do
    case $1 in
      --hosts) n=$2; shift ;;
      --size) size_mib=$2; shift ;;
      --kernel) (($# >= 2)) || die "--kernel needs a list (e.g. 6.1,6.12)"; klist=$2; shift ;;
      *) die "start: unknown argument $1" ;;
    esac
    shift
  done
  [[ $n =~ ^[1-9][0-9]?$ ]] || die "--hosts: $n is not a number from 1 to 99"
  [[ $size_mib =~ ^[0-9]+$ && $size_mib -ge 64 ]] || die "--size: $size_mib is not a size >= 64 (MiB)"
  [[ ! -e $lab/lab.env ]] || die "a lab is already running in $lab (deploy/lab/lab.sh stop)"
  local -a specs
  [[ -n $klist && $klist != *, && $klist != ,* && $klist != *,,* ]] || die "--kernel: '$klist' has an empty entry"
  IFS=, read -ra specs <<<"$klist"
  ((${#specs[@]} <= n)) || die "--kernel: ${#specs[@]} kernels for $n guests"
  local -A spec_of=()
  for i in "${!specs[@]}"; do
    check_kernel "${specs[i]}"
    [[ ${specs[i]} != */* ]] || specs[i]=$(realpath -- "${specs[i]}")
    spec=${spec_of[$(kernel_key "${specs[i]}")]:-${specs[i]}}
    [[ $spec == "${specs[i]}" ]] || die "--kernel: $spec and ${specs[i]} have the same file name"
    spec_of[$(kernel_key "${specs[i]}")]=${specs[i]}
  done
  hosts=()
  host_kernel=()
  for ((i = 1; i <= n; i++)); do
    hosts+=("h$i")
    host_kernel+=("${specs[i <= ${#specs[@]} ? i - 1 : ${#specs[@]} - 1]}")
  done
  rm -rf -- "$lab"
  mkdir -p "$lab"
  local t0 h
  t0=$(date +%s.%N)
  build
  for h in "${hosts[@]}"; do
    mkdir -p "$lab/$h"
    kernel_key "${host_kernel[${h#h} - 1]}" >"$lab/$h/kernel"
    free_port >"$lab/$h/agent.port"
    free_port >"$lab/$h/cmd.port"
    make_disks "$h"
  done
  local t1
  t1=$(date +%s.%N)
  for h in "${hosts[@]}"; do log "$h: kernel $(cat "$lab/kernels/$(cat "$lab/$h/kernel")/release")"; done
  log "booting ${hosts[*]}"
  for h in "${hosts[@]}"; do boot "$h"; done
  start_server
  for h in "${hosts[@]}"; do wait_ready "$h"; done
  write_env
  local t2
  t2=$(date +%s.%N)
  printf 'lab_build_seconds %.1f\nlab_boot_seconds %.1f\n' "$(bc <<<"$t1 - $t0")" "$(bc <<<"$t2 - $t1")" |
    tee "$lab/timings"
  log "ready: source $lab/lab.env"
}

# alive PID: the process exists and is not a zombie (a daemonized QEMU is
# reparented to PID 1, which need not reap it).
alive() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n $st && $st != Z* ]]
}

# wait_gone PID TENTHS: waits up to TENTHS x 0.1 s for PID to be gone.
wait_gone() {
  local i
  for ((i = 0; i < $2; i++)); do alive "$1" || return 0; sleep 0.1; done
  ! alive "$1"
}

cmd_stop() {
  local keep=0 f pid pids=() left=() i err
  [[ ${1:-} == --keep ]] && keep=1
  [[ -d $lab ]] || return 0
  # Read every pid first: QEMU unlinks its own pidfile as it exits, so a
  # pidfile seen a moment ago may be gone by the time it is read.
  for f in "$lab"/*/qemu.pid "$lab/server/pid"; do
    pid=$(cat -- "$f" 2>/dev/null) || continue
    [[ $pid =~ ^[0-9]+$ ]] && pids+=("$pid")
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    wait_gone "$pid" 50 && continue
    log "pid $pid did not stop on SIGTERM in 5 s: SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
    wait_gone "$pid" 50 || left+=("$pid")
  done
  rm -f -- "$lab"/*/qemu.pid "$lab/server/pid" "$lab/lab.env"
  ((${#left[@]} == 0)) || die "still running after SIGKILL: ${left[*]} (kept $lab)"
  if ((keep)); then log "stopped; kept $lab"; return 0; fi
  # A process that has just died may still be closing files in the lab: try
  # the removal again before giving up.
  for ((i = 0; i < 5; i++)); do
    err=$(rm -rf -- "$lab" 2>&1) && break
    sleep 0.5
  done
  [[ ! -e $lab ]] || die "could not remove $lab: $(head -n 3 <<<"$err")"
  log "stopped"
}

cmd_reboot() {
  local h=$1 pid
  [[ -s $lab/$h/qemu.pid ]] || die "no running guest $h"
  lab_exec "$h" 'sync; umount /data; umount /ds' >/dev/null || true
  pid=$(cat "$lab/$h/qemu.pid")
  kill "$pid"
  wait_gone "$pid" 100 || kill -9 "$pid" 2>/dev/null || true
  boot "$h"
  wait_ready "$h"
}

cmd_status() {
  [[ -f $lab/lab.env ]] || { echo "no lab in $lab"; return 1; }
  cat "$lab/lab.env"
  local h names
  read -ra names <<<"$(sed -n 's/^BLKFLEET_LAB_HOSTS="\(.*\)"/\1/p' "$lab/lab.env")"
  for h in "${names[@]}"; do
    if lab_exec "$h" true >/dev/null 2>&1; then echo "$h up ($(cat "$lab/$h/kernel"))"; else echo "$h DOWN"; fi
  done
}

what=${1:-}
[[ -n $what ]] && shift
case $what in
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  exec)
    (($# >= 2)) || die "usage: lab.sh exec HOST COMMAND..."
    lab_exec "$@"
    ;;
  reboot) (($# == 1)) || die "usage: lab.sh reboot HOST"; cmd_reboot "$1" ;;
  status) cmd_status ;;
  *) sed -n '2,19p' "$0"; exit 2 ;;
esac

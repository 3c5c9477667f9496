#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Checks below hand values to `bash -c '...'` as positional parameters, on purpose:
# shellcheck disable=SC2016
# The Debian packages end to end: build them (deploy/debian/build.sh), check
# them (contents, dependencies, conffiles, lintian), verify the systemd units
# (systemd-analyze verify and security), install them with apt on a fresh
# Debian 12 made by debootstrap, check what the maintainer scripts made
# (DKMS builds blksnap for the 6.1 and 6.12 kernels, before and after the
# package, and names the headers a kernel without them lacks),
# start blkfleet-server and blkfleet-agent from the installed packages the
# way their units would (same flags from /etc/blkfleet/*.conf, same user,
# no-new-privs and capability bounding set) with certificates made by
# `blkfleet pki`, back up and restore through them, stop them, and purge.
#
# systemd is not PID 1 here (nor in the chroot), so the units are checked
# statically and the daemons run by tests/packaging/unit_argv.py's reading
# of them; ProtectSystem= and the other namespace settings are not applied.
#
# Usage: tests/packaging/run.sh     (root; network to deb.debian.org)
# Env:   BLKFLEET_PKG_MIRROR (default http://deb.debian.org/debian)
#        BLKFLEET_PKG_SECURITY_MIRROR (default http://deb.debian.org/debian-security:
#          bookworm-security, where Debian 12 has its 6.12 kernels and current 6.1)
#        BLKFLEET_PKG_KEEP=1 keeps the work directory
# Ends with "packaging: N passed, N failed".
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mirror="${BLKFLEET_PKG_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${BLKFLEET_PKG_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
work="$(mktemp -d /tmp/blkfleet-pkg.XXXXXX)"
chroot_dir="$work/root"
pass=0
fail=0
pids=()

log() { printf '== %s\n' "$*"; }
ok() { pass=$((pass + 1)); printf 'ok   %s\n' "$1"; }
bad() { fail=$((fail + 1)); printf 'FAIL %s\n' "$1"; }
# check NAME CMD...: one assertion.
check() {
  local name="$1"
  shift
  if "$@"; then ok "$name"; else bad "$name"; fi
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
in_root() { chroot "$chroot_dir" "$@"; }

cleanup() {
  local p m
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # Unmount everything below the chroot before anything is removed.
  while IFS= read -r m; do
    umount -l "$m" || true
  done < <(awk -v r="$chroot_dir" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r)
  if [[ "${BLKFLEET_PKG_KEEP:-0}" == 1 ]]; then
    echo "work directory kept: $work"
  elif ! awk -v r="$chroot_dir" 'index($2, r) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
    rm -rf "$work"
  else
    echo "mounts left under $chroot_dir: not removing $work" >&2
  fi
}
trap cleanup EXIT

if [[ $(id -u) -ne 0 ]]; then
  echo "packaging: needs root (debootstrap, chroot)" >&2
  echo "packaging: 0 passed, 1 failed"
  exit 1
fi
bash "$root/deploy/setup.sh" build
bash "$root/deploy/setup.sh" packaging

# --- build --------------------------------------------------------------------
log "build the packages"
t=$(now)
debs="$work/debs"
bash "$root/deploy/debian/build.sh" "$debs"
echo "packaging_build_seconds $(secs "$t") s"
kmod_version="$(sed -nE 's/^PACKAGE_VERSION="([^"]+)"/\1/p' "$root/kmod/dkms.conf")"
for p in blksnap-dkms blkfleet-agent blkfleet-server blkfleet-client; do
  check "$p built" bash -c 'compgen -G "$1" >/dev/null' _ "$debs/${p}_*.deb"
done
deb() { compgen -G "$debs/${1}_*.deb" | head -1; }
field() { dpkg-deb -f "$(deb "$1")" "$2"; }

# --- package contents and metadata -------------------------------------------
log "contents and metadata"
check "agent Depends has the gRPC library (dpkg-shlibdeps)" grep -q 'libgrpc++' <<<"$(field blkfleet-agent Depends)"
check "server Depends has gRPC, SQLite, zstd and adduser" \
  bash -c 'grep -q "libgrpc++" <<<"$1" && grep -q libsqlite3 <<<"$1" && grep -q libzstd <<<"$1" && grep -q adduser <<<"$1"' _ "$(field blkfleet-server Depends)"
check "blksnap-dkms Depends on dkms, is Architecture all" \
  bash -c '[[ "$1" == *dkms* && "$2" == all ]]' _ "$(field blksnap-dkms Depends)" "$(field blksnap-dkms Architecture)"
conffiles_of() { dpkg-deb --ctrl-tarfile "$(deb "$1")" | tar -xOf - ./conffiles 2>/dev/null || true; }
check "agent.conf is a conffile" grep -qx /etc/blkfleet/agent.conf <<<"$(conffiles_of blkfleet-agent)"
check "server.conf is a conffile" grep -qx /etc/blkfleet/server.conf <<<"$(conffiles_of blkfleet-server)"
listing() { dpkg-deb -c "$(deb "$1")" | awk '{ print $6 }'; }
check "dkms source tree in /usr/src/blksnap-$kmod_version" \
  bash -c 'grep -qx "./usr/src/blksnap-$1/dkms.conf" <<<"$2" && grep -qx "./usr/src/blksnap-$1/blksnap/main.c" <<<"$2" && grep -qx "./usr/src/blksnap-$1/include/uapi/linux/blksnap.h" <<<"$2"' \
  _ "$kmod_version" "$(listing blksnap-dkms)"
check "agent ships its unit and modules-load.d/blksnap.conf" \
  bash -c 'grep -qx ./lib/systemd/system/blkfleet-agent.service <<<"$1" && grep -qx ./usr/lib/modules-load.d/blksnap.conf <<<"$1"' _ "$(listing blkfleet-agent)"

log "lintian"
t=$(now)
lint="$work/lintian.txt"
lintian --tag-display-limit 0 --suppress-tags-from-file "$root/deploy/debian/lintian-overrides.txt" \
  "$debs"/*.deb >"$lint" 2>&1 || true
cat "$lint"
echo "packaging_lintian_seconds $(secs "$t") s"
echo "lintian_errors $(grep -c '^E: ' "$lint" || true) count"
echo "lintian_warnings $(grep -c '^W: ' "$lint" || true) count"
check "lintian: no errors" bash -c '! grep -q "^E: " "$1"' _ "$lint"

# --- the units, statically ----------------------------------------------------
log "systemd units"
units="$work/units"
for p in blkfleet-agent blkfleet-server; do dpkg-deb -x "$(deb "$p")" "$units"; done
# systemd's own units (targets, modprobe@.service) for the references to resolve.
cp -an /lib/systemd/system/. "$units/lib/systemd/system/"
for u in blkfleet-server blkfleet-agent; do
  # Any message (an unknown or unparsable setting is only a warning) fails.
  rc=0
  out="$(systemd-analyze verify --root="$units" "$units/lib/systemd/system/$u.service" 2>&1)" || rc=$?
  [[ -z "$out" ]] || echo "$out"
  check "systemd-analyze verify $u.service: clean (exit $rc)" test "$rc:$out" = "0:"
  sec="$(systemd-analyze security --offline=yes --root="$units" "$units/lib/systemd/system/$u.service" 2>&1 | tail -1)"
  score="$(grep -oE '[0-9]+\.[0-9]+' <<<"$sec" | head -1)"
  echo "${u//-/_}_exposure ${score:-?} score (systemd-analyze security, 0 best, 10 worst)"
  [[ "$u" != blkfleet-server ]] || server_exposure="$score"
  [[ "$u" != blkfleet-agent ]] || agent_exposure="$score"
done
# Measured 1.5 (server) and 2.5 (agent: CAP_SYS_ADMIN, block devices, the
# blksnap module); the bounds leave half a point before a regression fails.
check "server exposure ${server_exposure:-?} below 2.0" awk -v s="$server_exposure" 'BEGIN { exit !(s != "" && s < 2.0) }'
check "agent exposure ${agent_exposure:-?} below 3.0" awk -v s="$agent_exposure" 'BEGIN { exit !(s != "" && s < 3.0) }'

# --- a fresh Debian 12 --------------------------------------------------------
log "debootstrap bookworm (minbase) from $mirror"
t=$(now)
debootstrap --variant=minbase bookworm "$chroot_dir" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -20 "$work/debootstrap.log"; bad "debootstrap"; echo "packaging: $pass passed, $fail failed"; exit 1; }
echo "debootstrap_seconds $(secs "$t") s"
cp /etc/resolv.conf "$chroot_dir/etc/resolv.conf"
mount -t proc proc "$chroot_dir/proc"
# bookworm-security as on any Debian 12 host: the 6.12 kernels are there only.
echo "deb $security_mirror bookworm-security main" >>"$chroot_dir/etc/apt/sources.list"
in_root apt-get update -q >"$work/apt-update.log" 2>&1 || { tail -20 "$work/apt-update.log"; bad "apt-get update (bookworm-security)"; }
mkdir -p "$chroot_dir/tmp/debs"
cp "$debs"/*.deb "$chroot_dir/tmp/debs/"

# --- kernels: blksnap-dkms builds the module for each --------------------------
# The kernels a Debian 12 host has: 6.1 with its headers (headers only: all
# DKMS needs) and a 6.12 cloud kernel as image only, both before the
# package; 6.12 stock (its headers depend on its image) after the package,
# built by DKMS's kernel hooks. INITRD=No: the kernels' initramfs-tools hook
# makes no initramfs (nothing boots these kernels here).
kapt() {
  DEBIAN_FRONTEND=noninteractive INITRD=No chroot "$chroot_dir" \
    apt-get install -y -q --no-install-recommends "$@"
}
# kernel_like ERE: the release in /lib/modules matching ERE (empty if none).
kernel_like() { in_root ls -1 /lib/modules 2>/dev/null | grep -E "$1" | tail -1 || true; }
dkms_status() { in_root dkms status 2>&1 || true; }
# built_for K: dkms status has blksnap installed for kernel K.
built_for() { grep -F "blksnap/$kmod_version, $1, " <<<"$(dkms_status)" | grep -q ': installed$'; }
ko_of() { in_root sh -c 'ls -1 /lib/modules/"$1"/updates/dkms/blksnap.ko* 2>/dev/null' _ "$1" | head -1 || true; }
# module_checks K: DKMS built and installed blksnap for kernel K, for K.
module_checks() {
  local k="${1:-none}" ko magic
  check "dkms status: blksnap/$kmod_version installed for $k" built_for "$k"
  ko="$(ko_of "$k")"
  check "blksnap module for $k: ${ko:-none}" test -n "$ko"
  magic="$(in_root modinfo -F vermagic "${ko:-/none}" 2>/dev/null || true)"
  check "modinfo vermagic of ${ko##*/} for $k: ${magic:-none}" test "${magic%% *}" = "$k"
  check "DKMS's make.log for $k: no compiler warning" bash -c 'test -s "$1" && ! grep -q "warning:" "$1"' _ \
    "$chroot_dir/var/lib/dkms/blksnap/$kmod_version/$k/x86_64/log/make.log"
}
# said LOG TEXT: the log has the line TEXT (a fixed string).
said() { grep -qF -- "$2" "$1"; }
no_headers_line() { echo "blksnap-dkms: kernel $1: NO blksnap module: its headers are not installed (package linux-headers-$1)."; }

log "kernels before the package: 6.1 headers, a 6.12 cloud image without headers"
t=$(now)
if kapt linux-headers-amd64 linux-image-6.12-cloud-amd64 >"$work/kernels-before.log" 2>&1; then
  ok "apt install linux-headers-amd64 linux-image-6.12-cloud-amd64"
else
  tail -30 "$work/kernels-before.log"
  bad "apt install linux-headers-amd64 linux-image-6.12-cloud-amd64"
fi
echo "kernels_before_seconds $(secs "$t") s"
k61="$(kernel_like '^6\.1\.[0-9]+-[0-9]+-amd64$')"
kcloud="$(kernel_like '^6\.12\..*-cloud-amd64$')"
check "kernels in /lib/modules: 6.1 (${k61:-none}) and 6.12 cloud (${kcloud:-none})" test -n "$k61" -a -n "$kcloud"

log "apt install ./*.deb in the chroot"
t=$(now)
install_log="$work/install.log"
# Without Recommends: the root stays minimal; the kernels and headers the
# test wants are installed above and below by name.
if (cd "$chroot_dir/tmp/debs" && DEBIAN_FRONTEND=noninteractive chroot "$chroot_dir" \
  sh -c 'cd /tmp/debs && apt-get install -y -q --no-install-recommends ./*.deb') >"$install_log" 2>&1; then
  ok "apt install ./*.deb"
else
  tail -40 "$install_log"
  bad "apt install ./*.deb"
  echo "packaging: $pass passed, $fail failed"
  exit 1
fi
echo "apt_install_seconds $(secs "$t") s (DKMS builds blksnap for $k61 in it)"
grep -E 'blksnap-dkms|blkfleet-(agent|server)' "$install_log" | grep -v -e '^Get:' -e '^Selecting' -e '^Preparing' -e '^Unpacking' || true

log "what the packages made"
for p in blksnap-dkms blkfleet-agent blkfleet-server blkfleet-client; do
  check "$p installed" bash -c '[[ "$(chroot "$1" dpkg-query -W -f="\${Status}" "$2")" == "install ok installed" ]]' _ "$chroot_dir" "$p"
done
pw="$(in_root getent passwd blkfleet || true)"
check "system user blkfleet (uid < 1000, home /var/lib/blkfleet, no login shell)" \
  bash -c 'IFS=: read -r _ _ uid _ _ home shell <<<"$1"; ((uid < 1000)) && [[ $home == /var/lib/blkfleet && $shell == */nologin ]]' _ "$pw"
# Owners by name inside the chroot (the host does not know the user blkfleet).
check "/var/lib/blkfleet blkfleet:blkfleet 750" test "$(in_root stat -c '%U:%G %a' /var/lib/blkfleet)" = "blkfleet:blkfleet 750"
check "/var/lib/blkfleet-agent root 700" test "$(in_root stat -c '%U %a' /var/lib/blkfleet-agent)" = "root 700"
check "/etc/blkfleet/pki root:blkfleet 750" test "$(in_root stat -c '%U:%G %a' /etc/blkfleet/pki)" = "root:blkfleet 750"
for u in blkfleet-agent blkfleet-server; do
  check "$u.service enabled (multi-user.target.wants)" test -L "$chroot_dir/etc/systemd/system/multi-user.target.wants/$u.service"
done
check "conffiles registered" bash -c 'grep -q /etc/blkfleet/agent.conf <<<"$1" && grep -q /etc/blkfleet/server.conf <<<"$1"' _ \
  "$(in_root dpkg-query -W -f='${Conffiles}\n' blkfleet-agent blkfleet-server)"
check "nothing started in the chroot" bash -c '! pgrep -f "^/usr/sbin/blkfleet-(agent|server)" >/dev/null || 
  for p in $(pgrep -f "^/usr/sbin/blkfleet-(agent|server)"); do [[ "$(readlink "/proc/$p/root")" != "$1" ]] || exit 1; done' _ "$chroot_dir"
check "dkms registered blksnap/$kmod_version" grep -q "^blksnap/$kmod_version" <<<"$(dkms_status)"

log "blksnap for every kernel present at installation"
module_checks "$k61"
check "postinst: built and installed for $k61" said "$install_log" "blksnap-dkms: kernel $k61: blksnap $kmod_version built and installed"
check "postinst: $kcloud has no module, names linux-headers-$kcloud" said "$install_log" "$(no_headers_line "$kcloud")"
check "no module for ${kcloud:-none} (dkms status, /lib/modules)" bash -c '[[ -n $2 ]] && ! grep -qF "$1, $2, " <<<"$3" && test -z "$4"' _ \
  "blksnap/$kmod_version" "$kcloud" "$(dkms_status)" "$(ko_of "$kcloud")"
check "postinst summary: installed for $k61, NOT for $kcloud" bash -c \
  'grep -q "^blksnap-dkms: blksnap $3 is installed for:.* $2\( \|$\)" "$1" && grep -q "^blksnap-dkms: NOT for:.* $4\( \|$\)" "$1"' \
  _ "$install_log" "$k61" "$kmod_version" "$kcloud"
# Nothing silently skipped: every kernel folder and the running kernel (the
# host's, which the chroot sees) has its line.
unreported=()
for k in $(in_root ls -1 /lib/modules) "$(uname -r)"; do
  grep -qF "blksnap-dkms: kernel $k" "$install_log" || unreported+=("$k")
done
check "postinst: a line for every kernel (${#unreported[@]} without: ${unreported[*]})" test "${#unreported[@]}" = 0

log "a kernel installed after the package: 6.12 image and headers, DKMS's hook builds blksnap"
t=$(now)
after_log="$work/kernel-after.log"
if kapt linux-headers-6.12-amd64 >"$after_log" 2>&1; then
  ok "apt install linux-headers-6.12-amd64 (with its image)"
else
  tail -40 "$after_log"
  bad "apt install linux-headers-6.12-amd64 (with its image)"
fi
echo "kernel_after_seconds $(secs "$t") s (download, unpack, DKMS build for 6.12)"
k612="$(kernel_like '^6\.12\.[0-9]+\+deb12-amd64$')"
module_checks "$k612"
# DKMS's own hook built it: the package's hook, after it, found it installed.
check "DKMS's hook built it, zz-blksnap-dkms found it installed" said "$after_log" \
  "blksnap-dkms: kernel ${k612:-none}: blksnap $kmod_version installed ("
module_checks "$k61"

log "an image-only kernel's hooks run again (dpkg-reconfigure): the package's hook names the headers"
reconf_log="$work/reconfigure.log"
DEBIAN_FRONTEND=noninteractive INITRD=No in_root dpkg-reconfigure "linux-image-$kcloud" >"$reconf_log" 2>&1 || tail -20 "$reconf_log"
check "zz-blksnap-dkms: $kcloud has no module, names linux-headers-$kcloud" said "$reconf_log" "$(no_headers_line "$kcloud")"

log "a kernel outside the supported releases (6.6, headers present) is refused by name"
fake=6.6.0-99-amd64
mkdir -p "$chroot_dir/lib/modules/$fake/build/include"
check "blksnap-dkms-kernel $fake: does not support this kernel" grep -qF \
  "blksnap-dkms: kernel $fake: NO blksnap module: blksnap $kmod_version does not support this kernel" \
  <<<"$(in_root /usr/lib/blksnap-dkms/blksnap-dkms-kernel "$fake" 2>&1)"
rc=0
in_root dkms build -m blksnap -v "$kmod_version" -k "$fake" >/dev/null 2>&1 || rc=$?
check "dkms build -k $fake refused by BUILD_EXCLUSIVE_KERNEL (exit $rc, 77 expected)" test "$rc" = 77
rm -rf "${chroot_dir:?}/lib/modules/$fake"

# --- PKI and configuration as an operator would ---------------------------------
log "PKI (blkfleet pki) and configuration"
pki=/etc/blkfleet/pki
in_root blkfleet pki init --dir "$pki" >/dev/null
in_root blkfleet pki issue --dir "$pki" --kind server --name backup1 --san 127.0.0.1 >/dev/null
in_root blkfleet pki issue --dir "$pki" --kind agent --name h1 --san 127.0.0.1 >/dev/null
in_root blkfleet pki issue --dir "$pki" --kind operator --name alice --role admin >/dev/null
in_root chgrp blkfleet "$pki/backup1.key"
in_root chmod 0640 "$pki/backup1.key"
check "pki: CA key 0600 root" test "$(stat -c '%U %a' "$chroot_dir$pki/ca.key")" = "root 600"

# set_conf FILE KEY VALUE: edits one setting of an EnvironmentFile.
set_conf() {
  local f="$chroot_dir$1"
  grep -q "^$2=" "$f" || { echo "no $2= in $1" >&2; return 1; }
  sed -i "s|^$2=.*|$2=$3|" "$f"
}
set_conf /etc/blkfleet/server.conf LISTEN 127.0.0.1:0
set_conf /etc/blkfleet/server.conf TLS_CERT "$pki/backup1.crt"
set_conf /etc/blkfleet/server.conf TLS_KEY "$pki/backup1.key"
# Metrics are on by default, on loopback; the test keeps the address and
# takes any free port (the host's network is shared with the chroot).
check "server.conf ships METRICS on 127.0.0.1:9480" grep -qx 'METRICS=--metrics-listen 127.0.0.1:9480' "$chroot_dir/etc/blkfleet/server.conf"
check "agent.conf ships METRICS on 127.0.0.1:9401" grep -qx 'METRICS=--metrics-listen 127.0.0.1:9401' "$chroot_dir/etc/blkfleet/agent.conf"
set_conf /etc/blkfleet/server.conf METRICS "--metrics-listen 127.0.0.1:0 --metrics-port-file /var/lib/blkfleet/metrics-port"
set_conf /etc/blkfleet/server.conf EXTRA_ARGS "--port-file /var/lib/blkfleet/port"
# An encrypted repository, set up as docs/operations.md says.
check "server.conf ships REPO_KEY empty (a plain repository)" grep -qx 'REPO_KEY=' "$chroot_dir/etc/blkfleet/server.conf"
check "blkfleet-server --init-repo-key" in_root blkfleet-server --init-repo-key /etc/blkfleet/repo.key
in_root chown blkfleet /etc/blkfleet/repo.key
check "repository key 0400 blkfleet" test "$(stat -c '%a' "$chroot_dir/etc/blkfleet/repo.key") $(in_root stat -c '%U' /etc/blkfleet/repo.key)" = "400 blkfleet"
set_conf /etc/blkfleet/server.conf REPO_KEY "--repo-key-file /etc/blkfleet/repo.key"
set_conf /etc/blkfleet/agent.conf BACKEND sim
set_conf /etc/blkfleet/agent.conf LISTEN 127.0.0.1:0
set_conf /etc/blkfleet/agent.conf TLS_CERT "$pki/h1.crt"
set_conf /etc/blkfleet/agent.conf TLS_KEY "$pki/h1.key"
set_conf /etc/blkfleet/agent.conf DIFF_STORAGE_LIMIT 64MiB
set_conf /etc/blkfleet/agent.conf DEVICES ""
set_conf /etc/blkfleet/agent.conf METRICS "--metrics-listen 127.0.0.1:0 --metrics-port-file /var/lib/blkfleet-agent/metrics-port"
set_conf /etc/blkfleet/agent.conf EXTRA_ARGS \
  "--sim-dir /var/lib/blkfleet-agent/sim --sim-device vda=24MiB --hostname h1 --port-file /var/lib/blkfleet-agent/port"
mkdir -p "$chroot_dir/var/lib/blkfleet-agent/sim"
head -c $((24 << 20)) /dev/urandom >"$chroot_dir/var/lib/blkfleet-agent/sim/vda.img"

# start UNIT LOG: runs the unit's ExecStart in the chroot; sets $started.
start() {
  local argv=()
  mapfile -d '' argv < <(python3 "$root/tests/packaging/unit_argv.py" "$chroot_dir" "/lib/systemd/system/$1.service")
  printf '%s: %s\n' "$1" "${argv[*]}"
  chroot "$chroot_dir" "${argv[@]}" >"$2" 2>&1 &
  started=$!
  pids+=("$started")
}
wait_file() {
  local _
  for _ in $(seq 1 300); do
    [[ -s "$1" ]] && { head -1 "$1"; return 0; }
    sleep 0.1
  done
  return 1
}

log "start the daemons as their units would"
start blkfleet-server "$work/server.log"
server_pid=$started
start blkfleet-agent "$work/agent.log"
agent_pid=$started
server_port="$(wait_file "$chroot_dir/var/lib/blkfleet/port" || true)"
agent_port="$(wait_file "$chroot_dir/var/lib/blkfleet-agent/port" || true)"
check "blkfleet-server serves TLS (port ${server_port:-none})" test -n "$server_port"
check "blkfleet-agent serves TLS (port ${agent_port:-none})" test -n "$agent_port"
if [[ -z "$server_port" || -z "$agent_port" ]]; then
  tail -20 "$work/server.log" "$work/agent.log"
fi
status_of() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
check "server runs as blkfleet" test "$(ps -o uid= -p "$server_pid" | tr -d ' ')" = "$(in_root id -u blkfleet)"
check "server: no new privileges, empty bounding set" \
  test "$(status_of "$server_pid" NoNewPrivs) $(status_of "$server_pid" CapBnd)" = "1 0000000000000000"
check "agent: no new privileges, bounding set CAP_SYS_ADMIN only" \
  test "$(status_of "$agent_pid" NoNewPrivs) $(status_of "$agent_pid" CapBnd)" = "1 0000000000200000"

log "a backup and a restore through the packaged daemons"
cli() {
  chroot "$chroot_dir" env BLKFLEET_TLS_CA="$pki/ca.crt" BLKFLEET_TLS_CERT="$pki/alice.crt" \
    BLKFLEET_TLS_KEY="$pki/alice.key" blkfleet --server "127.0.0.1:$server_port" "$@"
}
check "host add h1" cli host add h1 --agent "127.0.0.1:$agent_port" --device vda
check "backup run h1 --wait" cli backup run h1 --wait
backup_id="$(cli backup list --host h1 | awk 'NR > 1 { print $1; exit }')"
check "backup listed (${backup_id:-none})" test -n "$backup_id"
check "restore --wait" cli restore "$backup_id" --to /var/lib/blkfleet/h1-vda.img --wait
check "restored image equals the device byte for byte" \
  cmp "$chroot_dir/var/lib/blkfleet-agent/sim/vda.img" "$chroot_dir/var/lib/blkfleet/h1-vda.img"
check "restored file owned by blkfleet" test "$(in_root stat -c %U /var/lib/blkfleet/h1-vda.img)" = blkfleet
check "plaintext CLI refused by the TLS server" \
  bash -c '! chroot "$1" blkfleet --insecure --server "127.0.0.1:$2" host list >/dev/null 2>&1' _ "$chroot_dir" "$server_port"

log "a real Prometheus scrapes both daemons (deploy/prometheus)"
t=$(now)
server_metrics_port="$(wait_file "$chroot_dir/var/lib/blkfleet/metrics-port" || true)"
agent_metrics_port="$(wait_file "$chroot_dir/var/lib/blkfleet-agent/metrics-port" || true)"
check "server serves /metrics (port ${server_metrics_port:-none})" test -n "$server_metrics_port"
check "agent serves /metrics (port ${agent_metrics_port:-none})" test -n "$agent_metrics_port"
# The shipped scrape configuration and rules; only the targets (and the
# intervals: 2 s instead of 30 s) changed. Debian's prometheus, not as a
# service: its own data directory and a free loopback port.
prom="$work/prometheus"
mkdir -p "$prom/data"
cp -r "$root/deploy/prometheus/rules" "$prom/rules"
python3 "$root/tests/packaging/prom_config.py" "$root/deploy/prometheus/prometheus.yml" \
  "127.0.0.1:${server_metrics_port:-1}" "127.0.0.1:${agent_metrics_port:-1}" h1 2s >"$prom/prometheus.yml"
check "promtool check config (shipped scrape config and rules)" promtool check config "$prom/prometheus.yml"
prom_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
prom_url="http://127.0.0.1:$prom_port"
prometheus --config.file="$prom/prometheus.yml" --storage.tsdb.path="$prom/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$prom/log" 2>&1 &
prom_pid=$!
pids+=("$prom_pid")
# api PATH [curl args]: the data of a Prometheus API answer, empty on any error.
api() {
  local path="$1"
  shift
  curl -fsS -G "$prom_url$path" "$@" 2>/dev/null | jq -ce 'select(.status == "success") | .data' 2>/dev/null || true
}
# value EXPR: the value of the first sample an instant query returns, empty when none.
value() { api /api/v1/query --data-urlencode "query=$1" | jq -r '.result[0].value[1] // empty' 2>/dev/null || true; }
# Ready when both targets were scraped and every rule was evaluated at least once.
prom_ready=0
for _ in $(seq 1 60); do
  if [[ "$(api /api/v1/targets | jq '[.activeTargets[] | select(.health != "unknown")] | length' 2>/dev/null)" == 2 &&
    "$(api /api/v1/rules | jq '[.groups[].rules[] | select(.health == "unknown")] | length' 2>/dev/null)" == 0 ]]; then
    prom_ready=1
    break
  fi
  sleep 0.5
done
echo "prometheus_first_scrape_seconds $(secs "$t") s"
check "prometheus scraped both targets and evaluated the rules" test "$prom_ready" = 1
[[ "$prom_ready" == 1 ]] || tail -20 "$prom/log"
# at_least EXPR MIN: the query has a sample >= MIN.
at_least() { awk -v v="$(value "$1")" -v m="$2" 'BEGIN { exit !(v != "" && v + 0 >= m + 0) }'; }
check "up{job=blkfleet-server} == 1" test "$(value 'up{job="blkfleet-server"}')" = 1
check "up{job=blkfleet-agent,host=h1} == 1" test "$(value 'up{job="blkfleet-agent",host="h1"}')" = 1
check "server: jobs_total{kind=backup,outcome=succeeded} >= 1" \
  at_least 'blkfleet_server_jobs_total{job="blkfleet-server",kind="backup",outcome="succeeded"}' 1
check "server: jobs_total{kind=restore,outcome=succeeded} >= 1" \
  at_least 'blkfleet_server_jobs_total{job="blkfleet-server",kind="restore",outcome="succeeded"}' 1
age="$(value 'time() - blkfleet_backup_last_success_timestamp_seconds{job="blkfleet-server",host="h1",device="vda"}')"
check "server: last success of h1/vda present and recent (${age:-none} s ago)" \
  awk -v a="$age" 'BEGIN { exit !(a != "" && a + 0 >= 0 && a + 0 < 900) }'
check "server: backup read 24 MiB" at_least 'blkfleet_server_backup_read_bytes_total{job="blkfleet-server"}' $((24 << 20))
check "agent: image read bytes >= 24 MiB (host h1)" \
  at_least 'blkfleet_agent_image_read_bytes_total{job="blkfleet-agent",host="h1"}' $((24 << 20))
check "agent: image sent bytes > 0" at_least 'blkfleet_agent_image_sent_bytes_total{job="blkfleet-agent",host="h1"}' 1
rules="$(api /api/v1/rules)"
shipped_groups="$(python3 -c 'import sys, yaml; print(" ".join(sorted(g["name"] for g in yaml.safe_load(open(sys.argv[1]))["groups"])))' \
  "$root/deploy/prometheus/rules/blkfleet.rules.yml")"
check "rules: the shipped groups loaded ($shipped_groups)" \
  test "$(jq -r '[.groups[].name] | sort | join(" ")' <<<"${rules:-null}" 2>/dev/null)" = "$shipped_groups"
check "rules: $(jq '[.groups[].rules[]] | length' <<<"${rules:-null}" 2>/dev/null) rules, every one health ok" \
  jq -e '[.groups[].rules[]] | length > 0 and all(.health == "ok" and (.lastError // "") == "")' <<<"${rules:-null}"
# The first rule evaluation may come before the first scrape of the server
# (the readiness loop above only waits for one of each): the recorded series
# appears at the next evaluation, 2 s later. Poll for up to 5 intervals.
eventually() {
  local _
  for _ in $(seq 1 20); do
    "$@" && return 0
    sleep 0.5
  done
  return 1
}
check "recording rule blkfleet:backup_max_age_seconds for h1/vda" \
  eventually at_least 'blkfleet:backup_max_age_seconds{host="h1",device="vda"}' 1
check "no alert firing after a good backup" \
  test "$(api /api/v1/alerts | jq '[.alerts[] | select(.state == "firing")] | length' 2>/dev/null)" = 0
kill -TERM "$prom_pid"
wait "$prom_pid" || true
pids=("$server_pid" "$agent_pid")
echo "prometheus_check_seconds $(secs "$t") s"

log "stop (SIGTERM, as systemctl stop)"
for p in "$server_pid" "$agent_pid"; do
  kill -TERM "$p"
  rc=0
  wait "$p" || rc=$?
  check "pid $p stopped cleanly on SIGTERM (exit $rc)" test "$rc" = 0
done
pids=()

log "disaster recovery: blkfleet-restore reads the repository with no server"
check "blkfleet-restore lists backup $backup_id of h1 with vda" grep -qE "^$backup_id +h1 .* vda:$((24 << 20))" \
  <<<"$(in_root blkfleet-restore --repo /var/lib/blkfleet/repo --repo-key-file /etc/blkfleet/repo.key list 2>&1)"
check "the repository is encrypted (repo.json has key_check)" grep -q key_check "$chroot_dir/var/lib/blkfleet/repo/repo.json"
check "blkfleet-restore extract without the key refused, nothing written" bash -c \
  '! chroot "$1" blkfleet-restore --repo /var/lib/blkfleet/repo extract --backup "$2" --device vda --output /root/nokey.img 2>/dev/null && ! test -e "$1/root/nokey.img"' \
  _ "$chroot_dir" "$backup_id"
check "blkfleet-restore extract --repo-key-file" in_root blkfleet-restore --repo /var/lib/blkfleet/repo \
  --repo-key-file /etc/blkfleet/repo.key extract --backup "$backup_id" --device vda --output /root/h1-vda.img
check "extracted image equals the device byte for byte" \
  cmp "$chroot_dir/var/lib/blkfleet-agent/sim/vda.img" "$chroot_dir/root/h1-vda.img"

# --- purge --------------------------------------------------------------------
log "apt purge"
in_root dpkg-query -L blkfleet-agent blkfleet-server blkfleet-client blksnap-dkms 2>/dev/null | sort -u >"$work/files"
purge_log="$work/purge.log"
if DEBIAN_FRONTEND=noninteractive in_root apt-get purge -y -q blkfleet-agent blkfleet-server blkfleet-client blksnap-dkms >"$purge_log" 2>&1; then
  ok "apt purge"
else
  tail -30 "$purge_log"
  bad "apt purge"
fi
left="$(in_root dpkg-query -W -f='${Package} ${Status}\n' blkfleet-agent blkfleet-server blkfleet-client blksnap-dkms 2>/dev/null | grep -v 'not-installed' || true)"
check "no package left in any state" test -z "$left"
remaining=()
while IFS= read -r f; do
  [[ -n "$f" && "$f" != /. ]] || continue
  if [[ -e "$chroot_dir$f" && ! -d "$chroot_dir$f" ]]; then remaining+=("$f"); fi
done <"$work/files"
check "every packaged file gone (${#remaining[@]} left: ${remaining[*]:0:5})" test "${#remaining[@]}" = 0
check "conffiles gone" bash -c '! test -e "$1/etc/blkfleet/agent.conf" && ! test -e "$1/etc/blkfleet/server.conf"' _ "$chroot_dir"
check "unit enablement gone" bash -c '! compgen -G "$1/etc/systemd/system/multi-user.target.wants/blkfleet-*" >/dev/null' _ "$chroot_dir"
check "agent state folder gone" test ! -e "$chroot_dir/var/lib/blkfleet-agent"
check "the repository key kept" test -s "$chroot_dir/etc/blkfleet/repo.key"
check "the server's backups kept, and said so" \
  bash -c 'test -e "$1/var/lib/blkfleet/catalog.db" && grep -q "are kept" "$2"' _ "$chroot_dir" "$purge_log"
check "dkms forgot blksnap" bash -c '! chroot "$1" dkms status 2>/dev/null | grep -q blksnap && ! test -e "$1/usr/src/blksnap-$2"' _ "$chroot_dir" "$kmod_version"
check "the built modules gone ($k61, $k612)" bash -c '! compgen -G "$1/lib/modules/*/updates/dkms/blksnap.ko*" >/dev/null' _ "$chroot_dir"
check "the kernel hooks gone" bash -c '! compgen -G "$1/etc/kernel/*/zz-blksnap-dkms" >/dev/null' _ "$chroot_dir"

echo "packaging: $pass passed, $fail failed"
((fail == 0))

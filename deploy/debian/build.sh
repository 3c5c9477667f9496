#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the blkfleet Debian packages from this checkout with dpkg-dev's own
# tools (dpkg-shlibdeps, dpkg-gencontrol, dpkg-deb), no debian/ source
# package: the binaries come from one CMake build with Debian's hardening
# build flags, the package metadata from deploy/debian/<package>/.
#
#   deploy/debian/build.sh [OUTDIR]       (default OUTDIR: build/deb/out)
#
# Packages: blksnap-dkms (module source for DKMS), blkfleet-agent,
# blkfleet-server, blkfleet-client (the `blkfleet` CLI, `blkfleet pki`, and
# blkfleet-restore when the tree has it). Env: BLKFLEET_DEB_REVISION (the
# Debian revision, default 1), BLKFLEET_DEB_JOBS (default nproc).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
meta="$root/deploy/debian"
build="$root/build/deb"
out="$(realpath -m "${1:-$build/out}")"
revision="${BLKFLEET_DEB_REVISION:-1}"
jobs="${BLKFLEET_DEB_JOBS:-$(nproc)}"

log() { printf '== %s\n' "$*"; }

for tool in dpkg-deb dpkg-shlibdeps dpkg-gencontrol help2man cmake ninja; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing (deploy/setup.sh package)" >&2; exit 1; }
done

upstream="$(sed -nE 's/^project\(blkfleet VERSION ([0-9.]+).*/\1/p' "$root/CMakeLists.txt")"
kmod_version="$(sed -nE 's/^PACKAGE_VERSION="([^"]+)"/\1/p' "$root/kmod/dkms.conf")"
[[ -n "$upstream" && -n "$kmod_version" ]] || { echo "build.sh: cannot read the versions" >&2; exit 1; }
version="$upstream-$revision"

# Debian's hardening flags (PIE, bindnow, fortify, stack protector), without
# the path-mapping flags so that ccache (CCACHE_BASEDIR) shares objects
# between checkouts.
log "build (Debian build flags) in $build"
eval "$(DEB_BUILD_MAINT_OPTIONS='hardening=+all reproducible=-fixfilepath,-fixdebugpath' dpkg-buildflags --export=sh)"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=None -DBLKFLEET_BUILD_TESTS=OFF \
  -DCMAKE_C_FLAGS="$CPPFLAGS $CFLAGS" -DCMAKE_CXX_FLAGS="$CPPFLAGS $CXXFLAGS" \
  -DCMAKE_EXE_LINKER_FLAGS="$LDFLAGS" -DCMAKE_INSTALL_PREFIX=/usr >/dev/null
targets=(blkfleet-agent blkfleet-server blkfleet)
if grep -rqs --include=CMakeLists.txt 'add_executable(blkfleet-restore' "$root"/{agent,server,client,common}; then targets+=(blkfleet-restore); fi
cmake --build "$build" -j "$jobs" --target "${targets[@]}"

bin_agent="$build/agent/blkfleet-agent"
bin_server="$build/server/blkfleet-server"
bin_cli="$build/client/blkfleet"
bin_restore="$(find "$build" -maxdepth 3 -type f -name blkfleet-restore -perm -u+x | head -1)"

# A throw-away Debian source tree: debian/control and a one-entry changelog,
# which dpkg-shlibdeps and dpkg-gencontrol read.
stage="$build/stage"
rm -rf "$stage"
mkdir -p "$stage/src/debian" "$out"
cp "$meta/control" "$stage/src/debian/control"
commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
maintainer="$(sed -nE 's/^Maintainer: //p' "$meta/control")"
when="$(date -R -d "@$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)")"
cat >"$stage/src/debian/changelog" <<CHANGELOG
blkfleet ($version) unstable; urgency=medium

  * Built from git commit $commit.

 -- $maintainer  $when
CHANGELOG

# pkg_dir NAME: a fresh package root with its documentation folder.
pkg_dir() {
  local d="$stage/$1"
  mkdir -p "$d/DEBIAN" "$d/usr/share/doc/$1"
  cp "$meta/copyright" "$d/usr/share/doc/$1/copyright"
  gzip -9n -c "$stage/src/debian/changelog" >"$d/usr/share/doc/$1/changelog.Debian.gz"
  echo "$d"
}

# install_bin SRC DEST: an executable, stripped (debug info stays in the build).
install_bin() {
  install -D -m 0755 "$1" "$2"
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$2"
}

# manpage BIN SECTION DIR SUMMARY: a manual page made from BIN --help.
manpage() {
  local name
  name="$(basename "$1")"
  mkdir -p "$3/usr/share/man/man$2"
  help2man --no-info --no-discard-stderr --section "$2" --version-string "$upstream" \
    --name "$4" "$1" | gzip -9n >"$3/usr/share/man/man$2/$name.$2.gz"
}

# scripts NAME DIR: the maintainer scripts, with the module version filled in.
scripts() {
  local f
  for f in postinst prerm postrm; do
    [[ -f "$meta/$1/$f" ]] || continue
    sed "s/@KMOD_VERSION@/$kmod_version/g" "$meta/$1/$f" >"$2/DEBIAN/$f"
    chmod 0755 "$2/DEBIAN/$f"
  done
}

# finish NAME DIR VERSION [BINARIES...]: shlibs, control file, conffiles, .deb.
finish() {
  local name="$1" dir="$2" ver="$3" vars="$stage/$1.substvars"
  shift 3
  : >"$vars"
  if (($# > 0)); then
    (cd "$stage/src" && dpkg-shlibdeps -T"$vars" "$@")
  fi
  case "$name" in
    blkfleet-agent | blkfleet-server) echo 'misc:Depends=init-system-helpers (>= 1.54~)' >>"$vars" ;;
    *) echo 'misc:Depends=' >>"$vars" ;;
  esac
  if [[ -d "$dir/etc" ]]; then
    (cd "$dir" && find etc -type f | sed 's|^|/|' | sort) >"$dir/DEBIAN/conffiles"
  fi
  (cd "$stage/src" && dpkg-gencontrol -p"$name" -v"$ver" -T"$vars" -P"$dir")
  find "$dir" -type d -exec chmod 0755 {} +
  (cd "$dir" && find . -path ./DEBIAN -prune -o -type f -print0 | sort -z |
    xargs -0 md5sum | sed 's|  \./|  |') >"$dir/DEBIAN/md5sums"
  chmod 0644 "$dir/DEBIAN/md5sums" "$dir/DEBIAN/control"
  dpkg-deb --root-owner-group -Zxz --build "$dir" "$out" >/dev/null
  echo "  $out/${name}_${ver}_$(dpkg-deb -f "$out/${name}_${ver}"_*.deb Architecture).deb"
}

log "packages $version (module $kmod_version) into $out"
rm -f "$out"/*.deb
docs="$root/docs/operations.md"

# blksnap-dkms: the module source as DKMS wants it in /usr/src/NAME-VERSION.
d="$(pkg_dir blksnap-dkms)"
src="$d/usr/src/blksnap-$kmod_version"
mkdir -p "$src/blksnap" "$src/include/uapi/linux" "$d/usr/lib/blksnap-dkms"
install -m 0644 "$root/kmod/dkms.conf" "$root/kmod/Makefile" "$src/"
install -m 0644 "$root"/kmod/blksnap/*.[ch] "$root/kmod/blksnap/Kbuild" "$src/blksnap/"
install -m 0644 "$root"/kmod/include/uapi/linux/*.h "$src/include/uapi/linux/"
# The per-kernel check and report (postinst, kernel hooks), and the hooks
# that run it after DKMS's own for a new kernel or new headers.
sed "s/@KMOD_VERSION@/$kmod_version/g" "$meta/blksnap-dkms/blksnap-dkms-kernel" >"$d/usr/lib/blksnap-dkms/blksnap-dkms-kernel"
chmod 0755 "$d/usr/lib/blksnap-dkms/blksnap-dkms-kernel"
for hooks in postinst.d header_postinst.d; do
  install -D -m 0755 "$meta/blksnap-dkms/kernel-hook" "$d/etc/kernel/$hooks/zz-blksnap-dkms"
done
scripts blksnap-dkms "$d"
finish blksnap-dkms "$d" "$kmod_version-$revision"

# blkfleet-agent
d="$(pkg_dir blkfleet-agent)"
install_bin "$bin_agent" "$d/usr/sbin/blkfleet-agent"
manpage "$bin_agent" 8 "$d" "blkfleet backup agent (snapshots, CBT, image streaming)"
install -D -m 0644 "$root/deploy/systemd/blkfleet-agent.service" "$d/lib/systemd/system/blkfleet-agent.service"
install -D -m 0644 "$root/deploy/systemd/blksnap.modules-load.conf" "$d/usr/lib/modules-load.d/blksnap.conf"
install -D -m 0644 "$root/deploy/systemd/agent.conf" "$d/etc/blkfleet/agent.conf"
if [[ -f "$docs" ]]; then gzip -9n -c "$docs" >"$d/usr/share/doc/blkfleet-agent/operations.md.gz"; fi
scripts blkfleet-agent "$d"
finish blkfleet-agent "$d" "$version" "$d/usr/sbin/blkfleet-agent"

# blkfleet-server
d="$(pkg_dir blkfleet-server)"
install_bin "$bin_server" "$d/usr/sbin/blkfleet-server"
manpage "$bin_server" 8 "$d" "blkfleet backup server (catalog, repository, jobs)"
install -D -m 0644 "$root/deploy/systemd/blkfleet-server.service" "$d/lib/systemd/system/blkfleet-server.service"
install -D -m 0644 "$root/deploy/systemd/server.conf" "$d/etc/blkfleet/server.conf"
if [[ -f "$docs" ]]; then gzip -9n -c "$docs" >"$d/usr/share/doc/blkfleet-server/operations.md.gz"; fi
scripts blkfleet-server "$d"
finish blkfleet-server "$d" "$version" "$d/usr/sbin/blkfleet-server"

# blkfleet-client: the CLI (and blkfleet-restore, the recovery tool, when built).
d="$(pkg_dir blkfleet-client)"
install_bin "$bin_cli" "$d/usr/bin/blkfleet"
manpage "$bin_cli" 1 "$d" "blkfleet command line tool and PKI"
client_bins=("$d/usr/bin/blkfleet")
if [[ -n "$bin_restore" ]]; then
  install_bin "$bin_restore" "$d/usr/bin/blkfleet-restore"
  manpage "$bin_restore" 1 "$d" "restore a blkfleet backup straight from a repository"
  client_bins+=("$d/usr/bin/blkfleet-restore")
fi
finish blkfleet-client "$d" "$version" "${client_bins[@]}"
log "done"

#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian 12 packages blkfleet builds and tests with, when any is
# missing. Usage: deploy/setup.sh [build|kmod|packaging|all]   (default: all)
set -euo pipefail

what="${1:-all}"

build_pkgs=(
  build-essential cmake ninja-build pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libssl-dev openssl prometheus-cpp-dev libgtest-dev libgmock-dev
  libbenchmark-dev libzstd-dev libsqlite3-dev libcli11-dev nlohmann-json3-dev
  libyaml-cpp-dev tzdata
  reuse  # tests/license/check.sh: the license check (ctest label unit)
  prometheus  # promtool: checks of /metrics and of deploy/prometheus in the tests
  # The NBD export (server/nbd): a plugin for Debian's nbdkit, and the real
  # clients its tests use (nbdinfo, nbdcopy from libnbd-bin; qemu-img).
  nbdkit nbdkit-plugin-dev libnbd-bin qemu-utils
)
kmod_pkgs=(
  build-essential bc flex bison libelf-dev libssl-dev cpio kmod xz-utils
  linux-image-amd64 linux-headers-amd64 linux-source-6.1
  # the kernel matrix: Debian 12's 6.12 (stock, rt, cloud) beside 6.1; pahole
  # for modules of kernels with BTF (6.12)
  linux-image-6.12-amd64 linux-headers-6.12-amd64
  linux-image-6.12-rt-amd64 linux-headers-6.12-rt-amd64
  linux-image-6.12-cloud-amd64 linux-headers-6.12-cloud-amd64
  linux-source-6.12 pahole dmsetup
  qemu-system-x86 busybox-static fio e2fsprogs python3
)

# Debian packages (deploy/debian/build.sh) and their test (tests/packaging).
packaging_pkgs=(
  dpkg-dev help2man lintian debootstrap systemd util-linux python3 procps
  prometheus curl jq python3-yaml  # a real Prometheus scrapes the installed daemons
)

case "$what" in
  build) pkgs=("${build_pkgs[@]}") ;;
  kmod) pkgs=("${kmod_pkgs[@]}") ;;
  packaging) pkgs=("${packaging_pkgs[@]}") ;;
  all) pkgs=("${build_pkgs[@]}" "${kmod_pkgs[@]}" "${packaging_pkgs[@]}") ;;
  *) echo "usage: $0 [build|kmod|packaging|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#pkgs[@]} packages present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "setup: missing packages (run as root to install): ${missing[*]}" >&2
  exit 1
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
echo "setup: done"

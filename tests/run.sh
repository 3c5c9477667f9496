#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The whole test suite, or one part of it. Installs what it needs, configures,
# builds, runs, and ends with one line "tests: N passed, N failed".
#
#   tests/run.sh                 every part below except bench
#   tests/run.sh unit            unit tests (C++, under ASan+UBSan)
#   tests/run.sh conformance     backend conformance suite (sim backend)
#   tests/run.sh integration     real processes over loopback gRPC
#   tests/run.sh kmod            the blksnap module in QEMU on the kernel matrix: every case on
#                                Debian's 6.1 and 6.12 and on 6.12 with kmod/patches/linux-6.12,
#                                the core cases on 6.12-rt, 6.12-cloud and 6.1 with
#                                kmod/patches/linux-6.1 (patched kernels built, ~7 min each),
#                                the filter patch tests on both patched kernels, and the
#                                conformance suite on the kernel backend in the VM
#   tests/run.sh kmod-full       every case on every kernel of the matrix (before a release)
#   tests/run.sh packaging       the Debian packages: built, lintian, units verified, installed
#                                with apt on a debootstrap'ed Debian 12, daemons run as their
#                                units would with `blkfleet pki` certificates, purged (~5 min)
#   tests/run.sh e2e             the lab end to end (tests/e2e/run): QEMU guests with the
#                                module and the agent, the server, mutual TLS (~10 min)
#   tests/run.sh bench           the benchmarks (tests/bench/run.sh)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

parts=("$@")
if ((${#parts[@]} == 0)); then
  parts=(unit conformance integration kmod packaging e2e)
fi

preset="${BLKFLEET_TEST_PRESET:-asan}"
total_pass=0
total_fail=0
failed_parts=()

log() { printf '== %s\n' "$*"; }

build_cpp() {
  [[ -n "${built:-}" ]] && return 0
  bash deploy/setup.sh build
  log "configure + build (preset $preset)"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$(nproc)"
  built=1
}

# Runs ctest on one label and adds its counts to the totals.
run_ctest() {
  local label="$1" out rc=0 pass fail
  build_cpp
  log "ctest -L $label"
  out="$(mktemp)"
  # Unit and conformance tests are processes of their own with their own
  # temporary directories: run them on every core. Integration tests start
  # daemons and time them, so they run one at a time.
  local jobs=1
  [[ $label == integration ]] || jobs=$(nproc)
  ctest --preset "$preset" -L "^${label}\$" --timeout 600 -j "$jobs" 2>&1 | tee "$out" || rc=$?
  if grep -q 'No tests were found' "$out"; then
    echo "tests: no $label tests found" >&2
    rm -f "$out"
    total_fail=$((total_fail + 1))
    failed_parts+=("$label (no tests)")
    return 0
  fi
  fail="$(sed -nE 's/.* tests passed, ([0-9]+) tests failed out of ([0-9]+).*/\1/p' "$out" | tail -1)"
  all="$(sed -nE 's/.* tests passed, ([0-9]+) tests failed out of ([0-9]+).*/\2/p' "$out" | tail -1)"
  rm -f "$out"
  if [[ -z "$all" ]]; then
    total_fail=$((total_fail + 1))
    failed_parts+=("$label (ctest did not finish)")
    return 0
  fi
  pass=$((all - fail))
  total_pass=$((total_pass + pass))
  total_fail=$((total_fail + fail))
  if ((rc != 0 || fail != 0)); then failed_parts+=("$label"); fi
}

# Runs a script that ends with "N passed, N failed" and adds its counts.
run_counted() {
  local name="$1" out rc=0 line
  shift
  log "$name: $*"
  out="$(mktemp)"
  "$@" 2>&1 | tee "$out" || rc=$?
  line="$(grep -E '^([A-Za-z0-9-]+: )?[0-9]+ passed, [0-9]+ failed' "$out" | tail -1 || true)"
  rm -f "$out"
  if [[ -z "$line" ]]; then
    total_fail=$((total_fail + 1))
    failed_parts+=("$name (no result line, exit $rc)")
    return 0
  fi
  local p f
  p="$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+')"
  f="$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+')"
  total_pass=$((total_pass + p))
  total_fail=$((total_fail + f))
  if ((rc != 0 && f == 0)); then
    total_fail=$((total_fail + 1))
    failed_parts+=("$name (exit $rc)")
  elif ((f != 0)); then
    failed_parts+=("$name")
  fi
}

# The kernels with the block-filter patches are the largest CPU cost of the
# kmod part. When it is to run, they are built from the start, in the
# background at the lowest priority, on the CPU that the other parts leave
# idle (serial tests, VM boots, package installs); the kmod part's own
# build-kernel calls then wait for them (build-kernel's lock) and find them
# in its cache. Their output goes to build/prebuild-kernels.log.
prebuild_pid=""
prebuild_kernels() {
  local p want=0
  for p in "${parts[@]}"; do [[ $p == kmod || $p == kmod-full ]] && want=1; done
  ((want)) || return 0
  bash deploy/setup.sh kmod
  mkdir -p build
  log "building the patched kernels in the background (build/prebuild-kernels.log)"
  # its own process group (setsid), so that an early exit stops all of it.
  # setsid also makes a new scheduler autogroup, whose CPU share nice alone
  # does not lower: the autogroup gets nice 19 too.
  setsid nice -n 19 bash -c '
    echo 19 >/proc/self/autogroup 2>/dev/null || true
    kmod/tests/build-kernel
    if [[ -d kmod/patches/linux-6.12 ]]; then kmod/tests/build-kernel --series 6.12; fi
  ' >build/prebuild-kernels.log 2>&1 &
  prebuild_pid=$!
}
# An EXIT trap under set -e: a failing last command of an && list here would
# turn a green run's exit status into 1, so nothing in it may fail.
stop_prebuild() {
  if [[ -n $prebuild_pid ]]; then
    kill -- "-$prebuild_pid" 2>/dev/null || true
  fi
  return 0
}
trap stop_prebuild EXIT
prebuild_kernels

started=$SECONDS
for part in "${parts[@]}"; do
  part_started=$SECONDS
  case "$part" in
    unit | conformance | integration) run_ctest "$part" ;;
    kmod | kmod-full)
      bash deploy/setup.sh kmod
      # Every case on the kernels most hosts run; on the others, the cases
      # that exercise what differs between kernels (interception, IBT, the
      # copy-on-write path, overflow, unload) unless kmod-full.
      core=(ibt content cbt diffstorage unload inflight hotremove grown)
      # The patched kernels have lockdep: the destroy-removal race there
      # too, and what the series' patch 6 and the detach path changed.
      patched=("${core[@]}" removerace ctlfault detachrace)
      [[ $part == kmod-full ]] && core=() patched=()
      run_counted "kmod-6.1" kmod/tests/run --kernel 6.1
      run_counted "kmod-6.12" kmod/tests/run --kernel 6.12
      run_counted "kmod-6.12-rt" kmod/tests/run --kernel 6.12-rt "${core[@]}"
      run_counted "kmod-6.12-cloud" kmod/tests/run --kernel 6.12-cloud "${core[@]}"
      # A kernel built with the block-filter patch series, then the filter
      # mechanism's own tests.
      run_counted "kmod-6.1-patched" kmod/tests/run --kernel 6.1-patched "${patched[@]}"
      run_counted "kmod-filter" kmod/tests/patch/run
      # Every case on the 6.12 kernel with the 6.12 series, and its filter
      # tests.
      run_counted "kmod-6.12-patched" kmod/tests/run --kernel 6.12-patched
      run_counted "kmod-filter-6.12" kmod/tests/patch/run --series 6.12
      # The agent's kernel backend held to the backend conformance suite on
      # real virtio disks, on both kernels.
      run_counted "conformance-vm-stock" tests/conformance/vm/run
      run_counted "conformance-vm-patched" tests/conformance/vm/run --patched
      if [[ $part == kmod-full ]]; then
        run_counted "conformance-vm-6.12" tests/conformance/vm/run --kernel 6.12
        run_counted "conformance-vm-6.12-patched" tests/conformance/vm/run --kernel 6.12-patched
      fi
      ;;
    packaging)
      run_counted "packaging" tests/packaging/run.sh
      packaged_build=1
      ;;
    e2e)
      bash deploy/setup.sh all
      # After packaging, the lab runs the binaries that went into the
      # packages (build/deb: Debian's hardening flags) instead of building
      # the default preset a second time.
      if [[ -n ${packaged_build:-} && -f build/deb/CMakeCache.txt ]]; then
        export BLKFLEET_LAB_BUILD=$root/build/deb
      fi
      run_counted "e2e" tests/e2e/run
      ;;
    bench)
      BLKFLEET_TEST_PRESET=release
      exec tests/bench/run.sh
      ;;
    *)
      echo "unknown part: $part (unit|conformance|integration|kmod|kmod-full|packaging|e2e|bench)" >&2
      exit 2
      ;;
  esac
  # Wall time per part, to keep CI (90 min at most on a fresh machine) in view.
  log "$part took $((SECONDS - part_started)) s (total $((SECONDS - started)) s)"
done

if ((${#failed_parts[@]} > 0)); then
  echo "failed parts: ${failed_parts[*]}"
fi
echo "tests: ${total_pass} passed, ${total_fail} failed"
((total_fail == 0))

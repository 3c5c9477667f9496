#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Backup benchmarks on the sim backend, agent and server as separate
# processes on loopback. Prints one line per figure: "name value unit".
# Ratios are against limits measured in the same run (openssl's single-core
# SHA-256, a raw sequential read of the same data).
#
# Env: BLKFLEET_BENCH_SIZE_MIB (image size, default 2048)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=deploy/lib/daemon.sh
source "$root/deploy/lib/daemon.sh"
size_mib="${BLKFLEET_BENCH_SIZE_MIB:-2048}"
size_bytes=$((size_mib << 20))

bash "$root/deploy/setup.sh" build >&2
cmake --preset release -S "$root" >/dev/null
cmake --build "$root/build/release" -j "$(nproc)" \
  --target blkfleet-agent blkfleet-server blkfleet blkfleet-simload blkfleet-repo-bench >&2
bin="$root/build/release"
cli="$bin/client/blkfleet"
load="$bin/tests/tools/blkfleet-simload"

work="$(mktemp -d /tmp/blkfleet-bench.XXXXXX)"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
calc() { python3 -c "print(f'{$1:.3f}')"; }
figure() { printf '%s %s %s\n' "$1" "$2" "$3"; }

mkdir -p "$work/server" "$work/agent/sim" "$work/agent/diff"
"$bin/server/blkfleet-server" --listen 127.0.0.1:0 --port-file "$work/server/port" \
  --data-dir "$work/server/data" --insecure >"$work/server/log" 2>&1 &
pids+=($!)
"$bin/agent/blkfleet-agent" --listen 127.0.0.1:0 --port-file "$work/agent/port" --backend sim \
  --sim-dir "$work/agent/sim" --sim-device "vda=${size_mib}MiB" \
  --diff-storage-dir "$work/agent/diff" --hostname bench --insecure >"$work/agent/log" 2>&1 &
agent_pid=$!
pids+=("$agent_pid")
server="$(wait_port "$work/server/port")"
agent="$(wait_port "$work/agent/port")"
export BLKFLEET_SERVER="$server"

echo "filling ${size_mib} MiB of incompressible data" >&2
"$load" --agent "$agent" --device vda --seed 42 fill --size "$size_bytes" >&2
"$cli" --insecure host add bench --agent "$agent" --device vda >&2

# Physical limits, measured now.
sha_k="$(openssl speed -seconds 3 -bytes 16384 sha256 2>/dev/null | awk '/^sha256/ {print $NF}')"
sha_mb_s="$(calc "${sha_k%k} / 1000")"
img="$(find "$work/agent/sim" -type f -size +1M | head -n1)"
t0=$(now)
dd if="$img" of=/dev/null bs=4M 2>/dev/null
t1=$(now)
raw_mb_s="$(calc "$size_bytes / 1e6 / ($t1 - $t0)")"

t0=$(now)
"$cli" --insecure backup run bench --wait >&2
t1=$(now)
full_s="$(calc "$t1 - $t0")"
full_mb_s="$(calc "$size_bytes / 1e6 / $full_s")"
rss_kib="$(awk '/^VmHWM/ {print $2}' "/proc/$agent_pid/status")"

# 1% of the chunks changed (4 MiB chunks).
chunks=$(((size_bytes + (4 << 20) - 1) / (4 << 20)))
changed=$(((chunks + 99) / 100))
"$load" --agent "$agent" --device vda --seed 7 random --count "$changed" --size 4096 >/dev/null
t0=$(now)
"$cli" --insecure backup run bench --wait >&2
t1=$(now)
incr_s="$(calc "$t1 - $t0")"

backup_id="$("$cli" --insecure --json backup list | python3 -c '
import json, sys
d = json.load(sys.stdin)
items = d if isinstance(d, list) else d.get("backups", [])
print(max(int(b["id"]) for b in items))')"
t0=$(now)
"$cli" --insecure restore "$backup_id" --to "$work/restored.img" --wait >&2
t1=$(now)
restore_s="$(calc "$t1 - $t0")"
restore_mb_s="$(calc "$size_bytes / 1e6 / $restore_s")"

figure image_size_mib "$size_mib" MiB
figure sha256_single_core_mb_s "$sha_mb_s" MB/s
figure raw_read_mb_s "$raw_mb_s" MB/s
figure full_backup_s "$full_s" s
figure full_backup_mb_s "$full_mb_s" MB/s
figure full_backup_vs_sha256 "$(calc "$full_mb_s / $sha_mb_s")" ratio
figure full_backup_vs_raw_read "$(calc "$full_mb_s / $raw_mb_s")" ratio
figure agent_peak_rss_mib "$(calc "$rss_kib / 1024")" MiB
figure incremental_1pct_chunks "$changed" chunks
figure incremental_1pct_s "$incr_s" s
figure incremental_1pct_vs_full_time "$(calc "$incr_s / $full_s")" ratio
figure restore_mb_s "$restore_mb_s" MB/s
figure restore_vs_full_backup "$(calc "$restore_mb_s / $full_mb_s")" ratio

# Repository maintenance: checksum speed and garbage collection over 100,000
# chunk files (half of them unreferenced).
"$bin/server/blkfleet-repo-bench" "$work/gc" 100000 | awk '{ print $1, $2, $3 }'

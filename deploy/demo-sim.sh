#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job on embedded defaults: one blkfleet-server (SQLite catalog,
# local repository) and two sim-backed agents on loopback. A workload writes
# while a full and then an incremental backup of every host run; every backup
# is restored and compared byte for byte with the device at the snapshot
# instant; a summary table closes the run.
#
# Usage: deploy/demo-sim.sh [--keep]   (or deploy/demo.sh --sim)    (--keep leaves the work directory)
# Env:   BLKFLEET_DEMO_DIR (work directory, default a new one under /tmp)
#        BLKFLEET_DEMO_SIZE_MIB (size of each host's vda, default 512)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=deploy/lib/daemon.sh
source "$root/deploy/lib/daemon.sh"
keep=0
[[ "${1:-}" == "--keep" ]] && keep=1
size_mib="${BLKFLEET_DEMO_SIZE_MIB:-512}"
t_start=$(date +%s.%N)

say() { printf '\n== %s\n' "$*"; }

say "set-up and build (preset default)"
bash "$root/deploy/setup.sh" build
cmake --preset default -S "$root" >/dev/null
cmake --build "$root/build/default" -j "$(nproc)" \
  --target blkfleet-agent blkfleet-server blkfleet blkfleet-simload
bin="$root/build/default"
agent_bin="$bin/agent/blkfleet-agent"
server_bin="$bin/server/blkfleet-server"
cli_bin="$bin/client/blkfleet"
load_bin="$bin/tests/tools/blkfleet-simload"

work="${BLKFLEET_DEMO_DIR:-$(mktemp -d /tmp/blkfleet-demo.XXXXXX)}"
mkdir -p "$work"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if ((keep == 0)); then rm -rf "$work"; else echo "work directory kept: $work"; fi
}
trap cleanup EXIT


say "start the server and two sim-backed agents in $work"
mkdir -p "$work/server"
"$server_bin" --listen 127.0.0.1:0 --port-file "$work/server/port" \
  --data-dir "$work/server/data" --insecure >"$work/server/log" 2>&1 &
pids+=($!)
server="$(wait_port "$work/server/port")"
export BLKFLEET_SERVER="$server"
echo "server  $server"

declare -A agent_addr
hosts=(h1 h2)
for h in "${hosts[@]}"; do
  d="$work/$h"
  mkdir -p "$d/sim" "$d/oracle" "$d/diff"
  "$agent_bin" --listen 127.0.0.1:0 --port-file "$d/port" --backend sim \
    --sim-dir "$d/sim" --sim-device "vda=${size_mib}MiB" --sim-device vdb=64MiB \
    --sim-oracle-dir "$d/oracle" --diff-storage-dir "$d/diff" --hostname "$h" \
    --insecure >"$d/log" 2>&1 &
  pids+=($!)
  agent_addr[$h]="$(wait_port "$d/port")"
  echo "agent   $h ${agent_addr[$h]}"
done

say "fill the devices with data and register the hosts"
seed=1
for h in "${hosts[@]}"; do
  "$load_bin" --agent "${agent_addr[$h]}" --device vda --seed $((seed++)) fill --size $((size_mib << 20))
  "$load_bin" --agent "${agent_addr[$h]}" --device vdb --seed $((seed++)) fill --size $((64 << 20))
  "$cli_bin" --insecure host add "$h" --agent "${agent_addr[$h]}" --device vda --device vdb
done
"$cli_bin" --insecure host list

# A workload that keeps writing while the backups run.
workload() {
  local h="$1" secs="$2" s="$3"
  "$load_bin" --agent "${agent_addr[$h]}" --device vda --seed "$s" loop --seconds "$secs" --size 65536 --rate 5 >/dev/null &
  pids+=($!)
  "$load_bin" --agent "${agent_addr[$h]}" --device vdb --seed "$((s + 1))" loop --seconds "$secs" --size 4096 --rate 5 >/dev/null &
  pids+=($!)
}

say "full backups while a workload writes"
for h in "${hosts[@]}"; do workload "$h" 6 $((seed += 10)); done
for h in "${hosts[@]}"; do "$cli_bin" --insecure backup run "$h" --wait; done
sleep 2

say "more writes, then incremental backups while a workload writes"
for h in "${hosts[@]}"; do
  "$load_bin" --agent "${agent_addr[$h]}" --device vda --seed $((seed += 10)) random --count 6 --size 65536 >/dev/null
  workload "$h" 4 $((seed += 10))
done
for h in "${hosts[@]}"; do "$cli_bin" --insecure backup run "$h" --wait; done

say "restore every backup and compare with the device at its snapshot instant"
"$cli_bin" --insecure --json backup list >"$work/backups.json"
python3 - "$work/backups.json" >"$work/backups.tsv" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
items = doc if isinstance(doc, list) else doc.get("backups", [])
def get(d, *names, default=""):
    for n in names:
        if n in d:
            return d[n]
    return default
for b in sorted(items, key=lambda b: int(get(b, "id", default="0"))):
    start, end = get(b, "start_time", "startTime"), get(b, "end_time", "endTime")
    for d in get(b, "devices", default=[]):
        print("\t".join(str(x) for x in [
            get(b, "id"), get(b, "host"), get(b, "snapshot_id", "snapshotId"),
            get(d, "device"), get(d, "kind"), get(d, "size_bytes", "sizeBytes", default=0),
            get(d, "bytes_read", "bytesRead", default=0),
            get(d, "bytes_received", "bytesReceived", default=0),
            get(d, "chunks_read", "chunksRead", default=0), get(d, "chunks_new", "chunksNew", default=0),
            start, end]))
PY
failures=0
rows=()
while IFS=$'\t' read -r id host snap dev kind _size bread brecv cread cnew start end; do
  out="$work/restore-$id-$dev.img"
  "$cli_bin" --insecure restore "$id" --device "$dev" --to "$out" --wait >/dev/null
  want="$(sha256sum "$work/$host/oracle/$snap-$dev.img" | cut -d' ' -f1)"
  got="$(sha256sum "$out" | cut -d' ' -f1)"
  if [[ "$want" == "$got" ]]; then verdict=identical; else verdict=DIFFERENT; failures=$((failures + 1)); fi
  rm -f "$out"
  rows+=("$id|$host|$dev|${kind#BACKUP_KIND_}|$bread|$brecv|$cread|$cnew|$start|$end|$verdict")
done <"$work/backups.tsv"

say "summary"
printf '%s\n' "${rows[@]}" | python3 -c '
import sys, datetime
def secs(a, b):
    try:
        f = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
        return "%.2f" % (f(b) - f(a)).total_seconds()
    except Exception:
        return "-"
def mib(x): return "%.1f" % (int(x) / 1048576)
print("%-6s %-5s %-5s %-12s %10s %10s %7s %6s %8s  %s" % ("backup", "host", "dev", "kind", "read MiB", "sent MiB", "dedup", "new", "secs", "restore"))
for line in sys.stdin:
    i, h, d, k, br, bs, cr, cn, st, en, v = line.strip().split("|")
    dedup = "%.1fx" % (int(br) / int(bs)) if int(bs) else "inf"
    print("%-6s %-5s %-5s %-12s %10s %10s %7s %6s %8s  %s" % (i, h, d, k, mib(br), mib(bs), dedup, cn + "/" + cr, secs(st, en), v))
'
t_end=$(date +%s.%N)
printf '\ndemo wall time: %.1f s\n' "$(echo "$t_end - $t_start" | bc)"
if ((failures > 0)); then
  echo "demo: $failures restore(s) differ from their snapshot" >&2
  exit 1
fi
echo "demo: every restore is byte-identical to its snapshot"

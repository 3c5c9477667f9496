#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job on embedded defaults, on the QEMU lab (deploy/lab/lab.sh):
# two guests running Debian 12's stock kernels, h1 on 6.1 and h2 on 6.12, with
# the blksnap module built for each and blkfleet-agent, blkfleet-server on this host (SQLite catalog, local
# repository), mutual TLS everywhere. It registers the hosts, takes a full
# backup of every host, writes about 1% of each disk inside the guests,
# applies a policy whose scheduler takes an incremental while a writer keeps
# going, restores the latest
# backup of each host to a file, proves it byte-identical to the snapshot
# image (SHA-256 computed inside the guest from the image device of that
# very snapshot, by the agent's --snapshot-hook), runs e2fsck -fn on it and
# prints a summary (with each host's kernel, as the guest reports it).
#
# Usage: deploy/demo.sh [--keep] [--sim]
#   --keep  leave the lab running (stop it with deploy/lab/lab.sh stop)
#   --sim   the older demo on two sim-backed agents, no QEMU (deploy/demo-sim.sh)
# Env:   BLKFLEET_LAB_DIR (default /tmp/blkfleet-lab), BLKFLEET_DEMO_SIZE_MIB (vda size, default 256),
#        BLKFLEET_DEMO_KERNELS (lab.sh start --kernel, default 6.1,6.12)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
keep=0
for a in "$@"; do
  case $a in
    --sim) exec "$root/deploy/demo-sim.sh" ;;
    --keep) keep=1 ;;
    *) echo "usage: $0 [--keep] [--sim]" >&2; exit 2 ;;
  esac
done
size_mib="${BLKFLEET_DEMO_SIZE_MIB:-256}"
export BLKFLEET_LAB_DIR="${BLKFLEET_LAB_DIR:-/tmp/blkfleet-lab}"
lab="$root/deploy/lab/lab.sh"
cli="$root/build/default/client/blkfleet"
now() { date +%s.%N; }
say() { printf '\n== %s\n' "$*"; }
t_start=$(now)

cleanup() {
  if ((keep == 0)); then "$lab" stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

say "the lab: build, boot two guests (one on 6.1, one on 6.12), start the server"
"$lab" stop >/dev/null 2>&1 || true
"$lab" start --hosts 2 --size "$size_mib" --kernel "${BLKFLEET_DEMO_KERNELS:-6.1,6.12}"
# shellcheck disable=SC1091
source "$BLKFLEET_LAB_DIR/lab.env"
read -ra hosts <<<"$BLKFLEET_LAB_HOSTS"
boot_s=$(sed -n 's/^lab_boot_seconds //p' "$BLKFLEET_LAB_DIR/timings")
build_s=$(sed -n 's/^lab_build_seconds //p' "$BLKFLEET_LAB_DIR/timings")
t_work=$(now)

agent_of() { local v="BLKFLEET_LAB_AGENT_$1"; echo "${!v}"; }

# Each guest's kernel, asked of the guest itself (and checked against the
# release the lab booted it with).
declare -A kernel_of
for h in "${hosts[@]}"; do
  kernel_of[$h]=$("$lab" exec "$h" 'uname -r' | tr -d '[:space:]')
  v="BLKFLEET_LAB_KERNEL_$h"
  [[ ${kernel_of[$h]} == "${!v}" ]] || { echo "demo: $h runs '${kernel_of[$h]}', the lab booted ${!v}" >&2; exit 1; }
  echo "$h runs Linux ${kernel_of[$h]}"
done

say "register the hosts"
for h in "${hosts[@]}"; do "$cli" host add "$h" --agent "$(agent_of "$h")" --device /dev/vda; done
"$cli" host list

# run_backups: one backup job per host, all at once; waits for every one.
run_backups() {
  local h pids=() rc=0 p
  for h in "${hosts[@]}"; do
    "$cli" backup run "$h" --wait &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return "$rc"
}

say "full backup of every host"
run_backups

say "a write workload inside the guests (about 1% of each disk, then a writer that keeps going)"
burst_kib=$((size_mib * 1024 / 100))
for h in "${hosts[@]}"; do
  "$lab" exec "$h" "dd if=/dev/urandom of=/data/burst.bin bs=1k count=$burst_kib 2>/dev/null; sync"
  "$lab" exec "$h" "rm -f /tmp/stop-writer; (i=0; while [ ! -e /tmp/stop-writer ]; do i=\$((i+1)); echo \"line \$i \$(date)\" >>/data/writer.log; dd if=/dev/urandom of=/data/w\$((i % 8)).bin bs=4k count=4 conv=fsync 2>/dev/null; sleep 0.2; done) >/dev/null 2>&1 &"
done

say "apply a policy: /dev/vda of every host, every minute; the scheduler takes the incrementals while the writers run"
cat >"$BLKFLEET_LAB_DIR/policy.yaml" <<'YAML'
version: 1
concurrency: {global: 4, per_host: 1}
host_groups:
  lab: {match: ["h*"]}
device_sets:
  system: {devices: [/dev/vda]}
policies:
  - name: lab-every-minute
    host_group: lab
    device_set: system
    schedule: {cron: "* * * * *", time_zone: UTC}
    retention: {keep_last: 10}
    retry: {max_attempts: 3, initial_backoff: 10s, max_backoff: 1m, jitter: 0.2}
YAML
"$cli" policy apply "$BLKFLEET_LAB_DIR/policy.yaml"
count_backups() { "$cli" --json backup list --host "$1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("backups", [])))'; }
for h in "${hosts[@]}"; do
  for ((i = 0; i < 180; i++)); do
    (($(count_backups "$h") >= 2)) && break
    sleep 1
  done
  (($(count_backups "$h") >= 2)) || { echo "demo: the scheduler took no incremental of $h in 180 s" >&2; "$cli" policy list >&2; exit 1; }
done
"$cli" policy list
for h in "${hosts[@]}"; do "$lab" exec "$h" 'touch /tmp/stop-writer'; done

say "restore the latest backup of each host; compare with the guest's hash of the snapshot image; e2fsck -fn"
"$cli" --json backup list >"$BLKFLEET_LAB_DIR/backups.json"
python3 - "$BLKFLEET_LAB_DIR/backups.json" >"$BLKFLEET_LAB_DIR/backups.tsv" <<'PY'
import datetime, json, sys
items = json.load(open(sys.argv[1])).get("backups", [])
def t(s): return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
for b in sorted(items, key=lambda b: int(b["id"])):
    secs = (t(b["end_time"]) - t(b["start_time"])).total_seconds()
    for d in b.get("devices", []):
        print("\t".join(str(x) for x in [
            b["id"], b["host"], b["snapshot_id"], d["device"], d["kind"].replace("BACKUP_KIND_", ""),
            d.get("bytes_read", 0), d.get("bytes_received", 0), d.get("chunks_read", 0),
            d.get("chunks_new", 0), d.get("chunk_size_bytes", 0), "%.1f" % secs]))
PY
declare -A latest
while IFS=$'\t' read -r id host _; do latest[$host]=$id; done <"$BLKFLEET_LAB_DIR/backups.tsv"
failures=0
declare -A verdict
for h in "${hosts[@]}"; do
  id=${latest[$h]}
  row=$(awk -F'\t' -v id="$id" '$1 == id' "$BLKFLEET_LAB_DIR/backups.tsv")
  snap=$(cut -f3 <<<"$row")
  out="$BLKFLEET_LAB_DIR/restore-$h.img"
  "$cli" restore "$id" --to "$out" --wait
  # A backup is visible from its commit on; the hook may still be hashing
  # the image until the job destroys the snapshot.
  want=""
  for ((i = 0; i < 300; i++)); do
    want=$("$lab" exec "$h" "cat /var/lab/hashes/$snap.vda 2>/dev/null") && break
    sleep 1
  done
  got=$(sha256sum "$out" | cut -d' ' -f1)
  fsck=ok
  e2fsck -fn "$out" >"$BLKFLEET_LAB_DIR/e2fsck-$h.log" 2>&1 || fsck="e2fsck status $?"
  if [[ $want == "$got" && $fsck == ok ]]; then
    verdict[$id]="identical, e2fsck clean"
  else
    verdict[$id]="FAILED: guest $want, restored $got, $fsck"
    failures=$((failures + 1))
  fi
  echo "$h backup $id (snapshot $snap): ${verdict[$id]}"
  rm -f "$out"
done
t_end=$(now)

say "summary"
printf '%-6s %-4s %-20s %-9s %-11s %9s %9s %7s %8s %7s  %s\n' backup host kernel device kind "read MiB" "sent MiB" dedup "new/read" seconds restore
target_fail=0
while IFS=$'\t' read -r id host _snap dev kind bread bsent cread cnew csize secs; do
  dedup=$(python3 -c "print('%.1fx' % ($bread / $bsent) if $bsent else 'all known')")
  printf '%-6s %-4s %-20s %-9s %-11s %9.1f %9.1f %7s %8s %7s  %s\n' "$id" "$host" "${kernel_of[$host]:-?}" "$dev" "$kind" \
    "$(bc -l <<<"$bread / 1048576")" "$(bc -l <<<"$bsent / 1048576")" "$dedup" "$cnew/$cread" "$secs" \
    "${verdict[$id]:--}"
  if [[ $kind == INCREMENTAL ]]; then
    # Target: bytes sent <= 1.1 x the bytes of the changed chunks + 1 MiB.
    limit=$((cread * csize * 11 / 10 + (1 << 20)))
    echo "  incremental target: sent $bsent <= 1.1 x changed chunks ($cread x $csize) + 1 MiB = $limit: $( ((bsent <= limit)) && echo met || echo MISSED)"
    ((bsent <= limit)) || target_fail=1
  fi
done <"$BLKFLEET_LAB_DIR/backups.tsv"

total=$(bc <<<"$t_end - $t_start")
work=$(bc <<<"$t_end - $t_work")
printf '\ndemo wall time %.1f s: build %.1f s, QEMU boot %.1f s (%.0f%%), backup work %.1f s (%.0f%%)\n' \
  "$total" "$build_s" "$boot_s" "$(bc -l <<<"100 * $boot_s / $total")" "$work" "$(bc -l <<<"100 * $work / $total")"
if ((failures > 0 || target_fail > 0)); then
  echo "demo: FAILED ($failures restore(s) not identical or not clean, incremental target missed: $target_fail)" >&2
  exit 1
fi
echo "demo: every restore is byte-identical to its snapshot image and passes e2fsck"

# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Helpers for scripts that start blkfleet daemons on loopback.

# wait_port FILE: waits for a daemon's --port-file and prints host:port.
wait_port() {
  local f="$1" _ a
  for _ in $(seq 1 300); do
    if [[ -s "$f" ]]; then
      a="$(head -n1 "$f")"
      [[ "$a" == *:* ]] || a="127.0.0.1:$a"
      echo "$a"
      return 0
    fi
    sleep 0.1
  done
  echo "no address in $f after 30 s" >&2
  return 1
}

#!/usr/bin/env bash
# Compares Peero builds or settings side by side in the relay scenario (50
# pairs, 1 KB offers), for quick experiments: each round runs every variant
# once, in turn, each on a fresh server pinned to core 0 with the load on
# core 1, and the summary gives each variant's median and range.
# Run bench/run.sh -smoke (or the full run) first: it builds .bin/.
#
#   bench/ab.sh WINDOW ROUNDS VARIANT...
#
# A VARIANT is a Peero binary, optionally preceded by environment settings
# for it and an @: .bin/peero  GOGC=200@.bin/peero  GOGC=400,GODEBUG=x=1@.bin/old
set -euo pipefail
cd "$(dirname "$0")"
window=$1 rounds=$2
shift 2
ulimit -n "$(ulimit -Hn)"
log=$(mktemp)
for round in $(seq "$rounds"); do
  for v in "$@"; do
    bin=${v##*@} envs=()
    [ "$bin" != "$v" ] && IFS=, read -ra envs <<<"${v%@*}"
    srvlog=$(mktemp)
    env "${envs[@]}" taskset -c 0 "$bin" -port 0 2>"$srvlog" &
    pid=$!
    for _ in $(seq 100); do
      port=$(grep -o 'listening port=[0-9]*' "$srvlog" | head -1 | cut -d= -f2) && [ -n "$port" ] && break
      sleep 0.1
    done
    line=$(taskset -c 1 .bin/bench -attach "127.0.0.1:$port" -attach-pid "$pid" -attach-window "$window" -rounds 1 2>&1 | grep 'relay window')
    kill "$pid"; wait "$pid" || true
    rm -f "$srvlog"
    echo "round $round  $v  ${line#* }" | tee -a "$log"
  done
done
echo "== medians (min–max) of $rounds rounds, $window in flight a pair"
python3 - "$log" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    v = line.split()[2]
    m = re.search(r'([\d.]+) msg/s\s+p50 ([\d.]+)\s+p99 ([\d.]+) ms\s+server CPU (\d+)%\s+([\d.]+) µs/msg', line)
    rows.setdefault(v, []).append([float(x) for x in m.groups()])
for v, rs in rows.items():
    cols = list(zip(*rs))
    f = lambda i, fmt: (fmt % statistics.median(cols[i])) + " (" + (fmt % min(cols[i])) + "–" + (fmt % max(cols[i])) + ")"
    print(f"{v}: {f(0, '%.0f')} msg/s  p50 {f(1, '%.2f')} ms  p99 {f(2, '%.2f')} ms  CPU {f(4, '%.1f')} µs/msg")
PY
rm -f "$log"

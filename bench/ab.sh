#!/usr/bin/env bash
# Compares Peero builds or settings side by side in one scenario of the
# benchmark: each round runs every variant once, in turn, each on a fresh
# server pinned to core 0 with the load on core 1, and the summary gives each
# variant's median and range of every figure.
#
#   bench/ab.sh SCENARIO ROUNDS VARIANT...
#
# SCENARIO is one of
#   relay:W      the relay (50 pairs, 1 KB offers), W messages in flight a pair; a bare W means the same
#   openloop:R   the open-loop relay, R messages/s offered over the 50 pairs (openloop alone: 15000)
#   flood        300 readers in one room, one peer broadcasts 64 KiB offers as fast as it can for 10 s,
#                a probe pings from another room (bench/RESULTS.md defines each figure)
#   stalled      290 peers of a room never read, 10 broadcast a 4 KiB offer each every 10 ms for 10 s
# A VARIANT is a Peero binary, optionally preceded by environment settings
# for it and an @: .bin/peero  GOGC=200@.bin/peero  GOGC=400,GODEBUG=x=1@.bin/old
# BENCH_FLAGS passes flags on to the load generator, e.g. BENCH_FLAGS="-flood-for 5s -flood-readers 100".
# Each server's log (its joins, leaves and drops with their reasons) is kept in a directory
# named at the end.
#
# Example: two builds of main.go, 3 rounds of the flood, interleaved:
#   (cd /tmp/old && go build -o $OLDPWD/bench/.bin/peero-old .)   # a directory with main.go, go.mod, go.sum
#   go build -o bench/.bin/peero-new .
#   bench/ab.sh flood 3 .bin/peero-old .bin/peero-new
# The server gets one core, so Go runs it with GOMAXPROCS=1; GOMAXPROCS=2@BINARY gives it
# two Ps on that core, as on a machine with more cores (the flood's drops depend on it a lot).
# Binary paths are relative to bench/. A round takes about 12 s a variant for
# flood and stalled, 7 s for relay and openloop.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"
scenario=$1 rounds=$2
shift 2
case $scenario in
[0-9]*) scenario=relay:$scenario ;;
openloop) scenario=openloop:15000 ;;
esac
case $scenario in
relay:*) args=(-attach-window "${scenario#relay:}") pattern='relay window' ;;
openloop:*) args=(-attach-scenario openloop -openloop-rate "${scenario#openloop:}") pattern='openloop:' ;;
flood | stalled) args=(-attach-scenario "$scenario") pattern="$scenario:" ;;
*) echo "ab.sh: unknown scenario $scenario; want relay:W, openloop:R, flood or stalled" >&2; exit 2 ;;
esac
read -ra extra <<<"${BENCH_FLAGS:-}"
go build -o .bin/bench . # the load generator of this checkout, whatever built .bin before
ulimit -n "$(ulimit -Hn)"
log=$(mktemp)
logs=$(mktemp -d /tmp/peero-bench-logs.XXXXXX)
for round in $(seq "$rounds"); do
  for v in "$@"; do
    bin=${v##*@} envs=()
    [ "$bin" != "$v" ] && IFS=, read -ra envs <<<"${v%@*}"
    srvlog=$logs/round$round-$(tr -c 'A-Za-z0-9=.\n-' _ <<<"$v")
    env "${envs[@]}" taskset -c 0 "$bin" -port 0 2>"$srvlog" &
    pid=$! port=
    for _ in $(seq 100); do
      port=$(grep -so 'listening port=[0-9]*' "$srvlog" | head -1 | cut -d= -f2) && [ -n "$port" ] && break
      sleep 0.1
    done
    [ -n "$port" ] || echo "ab.sh: $v did not start listening in 10 s (its log: $srvlog)" >&2
    out=$(taskset -c 1 .bin/bench -attach "127.0.0.1:$port" -attach-pid "$pid" "${args[@]}" "${extra[@]}" -rounds 1 2>&1) || true
    line=$(grep -m1 "$pattern" <<<"$out") || line="failed: $(tail -1 <<<"$out")"
    kill "$pid"; wait "$pid" || true
    echo "round $round  $v  ${line#* }" | tee -a "$log"
  done
done
echo "== $scenario: medians (min–max) of $rounds rounds"
python3 - "$log" <<'PY'
import re, statistics, sys
rows = {}  # variant -> figure -> values, in the order first seen
for line in open(sys.argv[1]):
    v = line.split()[2]
    figures = rows.setdefault(v, {})
    m = re.search(r'([\d.]+) msg/s\s+p50 ([\d.]+)\s+p99 ([\d.]+) ms\s+server CPU (\d+)%\s+([\d.]+) µs/msg', line)
    if m:  # the relay's line
        pairs = zip(["msg/s", "p50_ms", "p99_ms", "server_cpu_pct", "us_per_msg"], m.groups())
    else:  # name=value pairs
        pairs = re.findall(r'(\S+)=(-?[\d.]+)(?=\s|$)', line)
    for name, value in pairs:
        figures.setdefault(name, []).append(float(value))
for v, figures in rows.items():
    print(v)
    for name, vs in figures.items():
        if name == "of":  # the total a count is out of: the same every round
            continue
        fmt = "%.0f" if all(x == int(x) for x in vs) else "%.2f"
        print(f"  {name:24} {fmt % statistics.median(vs)} ({fmt % min(vs)}–{fmt % max(vs)})  n={len(vs)}")
PY
rm -f "$log"
echo "server logs: $logs"

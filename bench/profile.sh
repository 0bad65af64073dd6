#!/usr/bin/env bash
# Profiles a Peero build under the benchmark's loads, with the debug listener
# of peero_debug.go.txt. Run bench/run.sh -smoke (or the full run) first: it
# builds .bin/peero and .bin/bench.
#
#   bench/profile.sh [OUTDIR [PEERO_BINARY [PARTS]]]    default .profile, .bin/peero, "relay storm idle"
#
# For 1 and 16 messages in flight a pair (the relay scenario's 50 pairs of
# 1 KB offers), on a fresh server each: a 10 s CPU profile (cpu-W.pprof), a
# 2 s execution trace taken after it (trace-W.out, for go tool trace) and
# one of the load generator at the same time (trace-load-W.out), the
# server's GODEBUG=gctrace=1 lines (server-W.log) and the load's own figures
# (load-W.log). Then a 3 s trace of the room storm (trace-storm.out). Then
# heap profiles with 10,000 idle peers, of Peero and of
# the x/net floor (heap-idle-peero.pprof, heap-idle-floor.pprof), with their
# runtime memory statistics (memstats-idle-*.txt).
# It prints a summary: the top of each profile, tracestat's figures for each
# trace (wake-ups, scheduler latency, GC pauses and assists), the last
# gctrace lines.
# Extra environment for the server (GOGC=200, GOMAXPROCS=…) passes through.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"
out=$(realpath -m "${1:-.profile}")
bin=$(realpath "${2:-.bin/peero}")
parts=${3:-relay storm idle}
mkdir -p "$out"
ulimit -n "$(ulimit -Hn)"

freeport() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_peero LOG [FLAG...]: starts the server on core 0; sets pid, addr and dbg.
start_peero() {
  dbg=127.0.0.1:$(freeport)
  PEERO_DEBUG_ADDR=$dbg GODEBUG=${GODEBUG:+$GODEBUG,}gctrace=1 taskset -c 0 "$bin" -port 0 "${@:2}" 2>"$1" &
  pid=$! # taskset execs the server
  for _ in $(seq 100); do
    port=$(grep -o 'listening port=[0-9]*' "$1" | head -1 | cut -d= -f2) && [ -n "$port" ] && break
    sleep 0.1
  done
  addr=127.0.0.1:$port
}

for w in 1 16; do
  [[ $parts == *relay* ]] || break
  start_peero "$out/server-$w.log"
  taskset -c 1 .bin/bench -attach "$addr" -attach-pid "$pid" -attach-window "$w" -rounds 4 -attach-trace "$out/trace-load-$w.out" -attach-trace-at 13s 2>"$out/load-$w.log" &
  load=$!
  sleep 3 # past the dialing and the first warm-up
  curl -sS -o "$out/cpu-$w.pprof" "http://$dbg/debug/pprof/profile?seconds=10"
  curl -sS -o "$out/trace-$w.out" "http://$dbg/debug/pprof/trace?seconds=2"
  wait "$load"
  kill "$pid"; wait "$pid" || true
done

# The room storm (4000 peers try to join one room, 200 at a time, while a
# probe pings from another): a 3 s trace of the server from its start.
if [[ $parts == *storm* ]]; then
  start_peero "$out/server-storm.log"
  taskset -c 1 .bin/bench -attach "$addr" -attach-pid "$pid" -attach-room-storm 4000 -rounds 1 2>"$out/load-storm.log" &
  load=$!
  sleep 0.3 # the probe has joined
  curl -sS -o "$out/trace-storm.out" "http://$dbg/debug/pprof/trace?seconds=3"
  wait "$load"
  kill "$pid"; wait "$pid" || true
fi

# The idle heap: Peero's, then the floor's (bench/floor) for comparison.
for srv in peero floor; do
  [[ $parts == *idle* ]] || break
  if [ $srv = peero ]; then
    start_peero "$out/server-idle.log" -ping 3s # a ping round before the profile, as in run.sh's idle scenario
  else
    dbg=127.0.0.1:$(freeport)
    PEERO_DEBUG_ADDR=$dbg taskset -c 0 .bin/floor >"$out/floor-idle.log" 2>&1 &
    pid=$!
    sleep 1
    addr=$(grep -o 'listening [0-9.:]*' "$out/floor-idle.log" | cut -d' ' -f2)
  fi
  taskset -c 1 .bin/bench -attach "$addr" -attach-pid "$pid" -attach-idle 10000 -attach-hold 30s 2>"$out/load-idle-$srv.log" &
  load=$!
  sleep 20 # connected and settled
  curl -sS -o "$out/heap-idle-$srv.pprof" "http://$dbg/debug/pprof/heap?gc=1"
  curl -sS "http://$dbg/debug/pprof/heap?debug=1" | grep -E '^# (Sys|HeapAlloc|HeapInuse|Stack|MSpan|GCSys|OtherSys|NumGC) ' >"$out/memstats-idle-$srv.txt"
  curl -sS "http://$dbg/debug/pprof/goroutine?debug=1" | head -1 >>"$out/memstats-idle-$srv.txt"
  grep -E '^(VmRSS|VmHWM)' "/proc/$pid/status" >>"$out/memstats-idle-$srv.txt"
  wait "$load"
  kill "$pid"; wait "$pid" || true
done

for w in 1 16; do
  [[ $parts == *relay* ]] || break
  echo "== relay, $w in flight: load"; grep relay "$out/load-$w.log"
  echo "== CPU profile"; go tool pprof -top -nodecount=30 "$bin" "$out/cpu-$w.pprof" 2>/dev/null | head -40
  echo "== the trace's figures (tracestat)"; (cd tracestat && go run . "$out/trace-$w.out")
  echo "== the load generator's trace"; (cd tracestat && go run . "$out/trace-load-$w.out")
  echo "== scheduler latency (go tool trace -pprof=sched)"
  go tool trace -pprof=sched "$out/trace-$w.out" >"$out/sched-$w.pprof" && go tool pprof -top -nodecount=15 "$out/sched-$w.pprof" 2>/dev/null | head -22
  echo "== gctrace (last 5)"; grep '^gc ' "$out/server-$w.log" | tail -5
done
if [[ $parts == *storm* ]]; then
  echo "== room storm"; cat "$out/load-storm.log"
  echo "== its trace (tracestat)"; (cd tracestat && go run . "$out/trace-storm.out")
fi
for srv in peero floor; do
  [[ $parts == *idle* ]] || break
  b=$bin; [ $srv = floor ] && b=.bin/floor
  echo "== idle, 10,000 peers, $srv: heap in use"
  go tool pprof -sample_index=inuse_space -top -nodecount=20 "$b" "$out/heap-idle-$srv.pprof" 2>/dev/null | tail -n +5 | head -24
  cat "$out/memstats-idle-$srv.txt"
done

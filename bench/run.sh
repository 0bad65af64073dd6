#!/usr/bin/env bash
# Measures Peero side by side with PeerJS server, an x/net echo server (the relay
# ceiling) and a minimal x/net server (the idle-memory floor).
#
#   bench/run.sh            the full run: about 12 minutes; writes bench/RESULTS.md and bench/relay-latency.svg
#   bench/run.sh -smoke     a few seconds of each scenario, to check that the benchmark still works
#
# Other flags go to the load generator (bench/main.go): -rounds N, -only relay,openloop,idle,storm,
# roomstorm,fanout,churn,capacity,flood,stalled (any of them), -openloop-rate N, -out FILE, -peero BINARY.
# bench/ab.sh compares several Peero builds side by side in one scenario.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"

# PeerJS server, into bench/.peerjs (ignored by git).
if ! [ -f .peerjs/node_modules/peer/package.json ]; then
  npm install --prefix .peerjs --no-audit --no-fund --loglevel=error peer@1.0.2
fi

# Peero as in ../main.go, plus a debug listener for goroutine counts (peero_debug.go.txt).
rm -rf .build && mkdir -p .build/peero .bin
cp ../main.go ../go.mod ../go.sum .build/peero/
cp peero_debug.go.txt .build/peero/debug.go
(cd .build/peero && go build -o ../../.bin/peero .)
version=$(git -C .. log -1 --format=%h -- main.go 2>/dev/null || echo unknown)
git -C .. diff --quiet HEAD -- main.go 2>/dev/null || version="$version with uncommitted changes"
go build -o .bin/echo ./echo
go build -o .bin/floor ./floor
go build -o .bin/bench .

# Servers go on core 0 (the load generator starts them with taskset); the generator on core 1.
ulimit -n "$(ulimit -Hn)"
exec taskset -c 1 .bin/bench -server-cpu 0 -peero-version "$version" "$@"

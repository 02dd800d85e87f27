#!/usr/bin/env bash
# bench_http.sh - GET /api/gpu/status of vramd with 8 models under wrk at 32 connections: requests per second and p99 latency (target: >= 20000/s, p99 < 10 ms on 2 cores).
# usage: bench/bench_http.sh [--build DIR] [--seconds N] [--runs N] [--check]
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
build=build seconds=10 runs=3 check=0
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --check) check=1; shift ;;
    *) echo "usage: $0 [--build DIR] [--seconds N] [--runs N] [--check]" >&2; exit 2 ;;
  esac
done
case $build in /*) ;; *) build=$top/$build ;; esac
vramd=$build/vramd
[ -x "$vramd" ] || { echo "bench_http: $vramd is not built (make build)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench_http: wrk is not installed (apt-get install wrk)" >&2; exit 1; }

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
args=()
for i in 1 2 3 4 5 6 7 8; do args+=(--model "model-$i=synthetic:16M:$i"); done
# in an empty directory (no .env) with the host backend: the HTTP path is what is measured
(cd "$work" && exec env -u VRAM_TOKEN VRAM_HOST_MEMORY=256M VRAM_LOG_LEVEL=info \
  "$vramd" --backend host --port 0 "${args[@]}" 2>"$work/log") &
pid=$!
port=
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening on http:[^ ]*:\([0-9][0-9]*\) .*/\1/p' "$work/log" | head -n1)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "bench_http: vramd did not start:"; cat "$work/log"; exit 1; }
url=http://127.0.0.1:$port
# a mix of states: half the models loaded, one of them offloaded again
for i in 1 2 3 4; do curl -fsS -X POST "$url/api/v1/models/model-$i/load" >/dev/null; done
curl -fsS -X POST "$url/api/v1/models/model-4/offload" >/dev/null
bytes=$(curl -fsS "$url/api/gpu/status" | wc -c)

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
echo "machine: $(nproc) CPUs (${cpu:-unknown}), $(uname -sr); wrk and vramd on the same machine"
echo "request: GET /api/gpu/status, 8 models, $bytes bytes of JSON; wrk -t2 -c32 -d${seconds}s, $runs runs"
wrk -t2 -c32 -d1s "$url/api/gpu/status" >/dev/null # warm-up
results=()
for r in $(seq "$runs"); do
  out=$(wrk -t2 -c32 -d"${seconds}s" --latency "$url/api/gpu/status")
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errs=$(grep -E 'Non-2xx|Socket errors' <<<"$out" || true)
  echo "run $r: $rps requests/s, p99 $p99${errs:+ ($errs)}"
  results+=("$rps $p99")
done
# the median run by requests/s
median=$(printf '%s\n' "${results[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p")
rps=${median%% *}
p99=${median##* }
p99_ms=$(awk -v v="$p99" 'BEGIN { if (v ~ /us$/) print v / 1000; else if (v ~ /ms$/) print v + 0; else print v * 1000 }')
echo "median: $rps requests/s, p99 $p99 (target: >= 20000 requests/s, p99 < 10 ms)"
if [ "$check" = 1 ]; then
  awk -v r="$rps" -v p="$p99_ms" 'BEGIN { exit !(r >= 20000 && p < 10) }' || { echo "bench_http: below target"; exit 1; }
fi

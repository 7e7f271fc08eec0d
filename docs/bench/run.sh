#!/usr/bin/env bash
# Issue 2 benchmark: 4 KiB random reads against a RAM namespace over loopback, target on core 0,
# load client on core 1, plus the TCP ceiling for the same traffic shape measured in the same run.
# Usage: docs/bench/run.sh [seconds-per-run]   (writes docs/bench/<date>-nvmf-tcp.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
port=4470
target_dir=${CARGO_TARGET_DIR:-target}
cargo build --release -p ferrite-daemon -p ferrite-host -p ferrite-perf --bins >/dev/null
bin=$target_dir/release
out=docs/bench/$(date +%Y-%m-%d)-nvmf-tcp.md
nqn=nqn.2026-01.io.ferrite:default
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

run() { # name, command...
  local name=$1; shift
  echo "== $name: $*" >&2
  "$@" 2>&1 | tee "$tmp/$name.out" >&2
}
load() { "$bin/ferrite-load" --addr 127.0.0.1:$port --subnqn $nqn --cores 1 --time "$secs" "$@"; }

# The ceiling: ferrite-perf limit runs its server thread on core 0 and its client on core 1.
limit() { "$bin/ferrite-perf" limit --server-core 0 --cores 1 -t "$secs" "$@"; }
run limit-qd32 limit -q 32 --json "$tmp/limit-qd32.json"
run limit-qd1 limit -q 1 --json "$tmp/limit-qd1.json"
# The target starts after the ceiling runs so its busy-polling reactor does not share core 0 with them.
"$bin/ferrited" --cores 0 --idle poll --listen 127.0.0.1:$port 2>"$tmp/ferrited.log" &
sleep 1
run randread-qd32 load --qd 32 --size 4k --read-pct 100
run randread-qd1 load --qd 1 --size 4k --read-pct 100
run randwrite-qd32 load --qd 32 --size 4k --read-pct 0

iops() {
  if [[ -f $tmp/$1.json ]]; then grep -o '"iops": [0-9.]*' "$tmp/$1.json" | head -1 | awk '{print $2}'
  else grep -o 'IOPS [0-9.]*' "$tmp/$1.out" | awk '{print $2}'; fi
}
lat() { grep -o "$2 [0-9.]*" "$tmp/$1.out" | head -1 | awk '{print $2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

{
  echo "# NVMe/TCP target, 4 KiB, RAM namespace, loopback — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r)."
  echo "Target: \`ferrited --cores 0 --idle poll\` (1 reactor on core 0, 1 GiB malloc namespace, 4 KiB blocks)."
  echo "Client: \`ferrite-load --cores 1\` (one pinned thread, 1 controller, 1 I/O queue), ${secs} s per run."
  echo "Ceiling: \`ferrite-perf limit\` server thread on core 0 and client on core 1, same message sizes and queue depth, no storage, no NVMe."
  echo
  echo "| workload | IOPS | avg µs | p50 µs | p99 µs | TCP ceiling IOPS | fraction of ceiling |"
  echo "|---|---|---|---|---|---|---|"
  for w in randread-qd32 randread-qd1 randwrite-qd32; do
    l=limit-qd32; [[ $w == *qd1 ]] && l=limit-qd1
    echo "| $w | $(iops $w) | $(lat $w avg) | $(lat $w p50) | $(lat $w p99) | $(iops $l) | $(ratio "$(iops $w)" "$(iops $l)") |"
  done
  echo
  echo "Reference (issue 2, same kind of machine, not measured here): SPDK v25.09 nvmf_tgt on one core,"
  echo "spdk_nvme_perf on the other: 455K IOPS randread QD32, 412K randwrite QD32, 62K (16 µs) QD1."
  echo
  echo "Commands:"
  echo
  echo '```'
  echo "docs/bench/run.sh $secs"
  echo '```'
  echo
  echo "Raw output:"
  echo
  echo '```'
  for f in limit-qd32 limit-qd1 randread-qd32 randread-qd1 randwrite-qd32; do echo "## $f"; cat "$tmp/$f.out"; done
  echo '```'
} > "$out"
echo "wrote $out" >&2

#!/usr/bin/env bash
# NVMe/RDMA vs NVMe/TCP in the QEMU guest (soft-RoCE, TCG emulation): boots the guest of
# tests/tests/nvme_rdma.rs (its functional checks run first), then the same ferrite-perf load
# (randread 4k, randwrite 4k, randread 128k; queue depth 16, one queue; SECS seconds each) against
# one ferrited over its RDMA listener (port 4420) and its TCP listener (port 4421), each under
# `perf stat -p <ferrited>` (task-clock, and cycles/instructions where the guest has counters).
# Writes the raw report to OUT and prints it. Usage: docs/bench/rdma.sh [OUT] [SECS]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$(realpath -m "${1:-$root/target/rdma-bench.txt}")
secs=${2:-10}
cd "$root"
bash tests/install-deps.sh
cargo build -q -p ferrite-daemon -p ferrite-perf --bins
FERRITE_RDMA_BENCH="$out" FERRITE_RDMA_BENCH_SECS="$secs" \
  cargo nextest run -p ferrite-e2e --test nvme_rdma --no-capture
cat "$out"
# Per-I/O CPU cost = task-clock (ms) / "ops" of the matching ferrite-perf run.
awk -F, '/^== /{name=$0} /^ops /{split($0,a," "); ops=a[2]} /task-clock/{printf "%s: %.1f us of target CPU per I/O\n", name, $1*1000/ops}' "$out"

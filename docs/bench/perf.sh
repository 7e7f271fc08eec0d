#!/usr/bin/env bash
# The standard ferrite-perf matrix (issue 4): ferrited with a RAM namespace, busy-polling on 1 and
# then 2 target cores; ferrite-perf pinned to the last core; each row beside the `ferrite-perf limit`
# ceiling for the same traffic shape. Writes docs/bench/<date>-perf.md and its SVGs and JSON under
# docs/bench/<date>-perf/.
#
# Usage: docs/bench/perf.sh [seconds-per-run] [warmup-seconds]
# Run it on a quiet machine (the report records the load average before and after).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
warm=${2:-2}
port=4480
nqn=nqn.2026-01.io.ferrite:default
target_dir=${CARGO_TARGET_DIR:-target}
cargo build --release -p ferrite-daemon -p ferrite-perf --bins >/dev/null
bin=$target_dir/release
ncpu=$(nproc)
perf_core=$((ncpu - 1))
date=$(date +%Y-%m-%d)
out=docs/bench/$date-perf.md
art=docs/bench/$date-perf
rm -rf "$art"
mkdir -p "$art"
tmp=$(mktemp -d)
target_pid=
cleanup() {
  if [[ -n $target_pid ]]; then kill "$target_pid" 2>/dev/null || true; wait "$target_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# name workload io-size queue-depth
matrix=(
  "randread-4k-qd1 randread 4k 1"
  "randread-4k-qd32 randread 4k 32"
  "randread-4k-qd128 randread 4k 128"
  "randwrite-4k-qd32 randwrite 4k 32"
  "read-128k-qd16 read 128k 16"
)
commands=()
log() { echo "== $*" >&2; commands+=("$*"); }

start_target() { # cores
  "$bin/ferrited" --cores "$1" --idle poll --listen 127.0.0.1:$port 2>"$tmp/ferrited-$1.log" &
  target_pid=$!
  for _ in $(seq 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "ferrited did not start:" >&2; cat "$tmp/ferrited-$1.log" >&2; exit 1
}
stop_target() {
  kill "$target_pid"; wait "$target_pid" 2>/dev/null || true; target_pid=
}

# Ceilings first, with no target running: server thread on core 0, client on the perf core.
for qp in 1 2; do
  for row in "${matrix[@]}"; do
    read -r name w size qd <<<"$row"
    f=$art/limit-$name-qp$qp.json
    log "$bin/ferrite-perf limit --server-core 0 --cores $perf_core -w $w -o $size -q $qd --qpairs $qp -t $secs --json $f"
    "$bin/ferrite-perf" limit --server-core 0 --cores "$perf_core" -w "$w" -o "$size" -q "$qd" \
      --qpairs "$qp" -t "$secs" --json "$f" >&2
  done
done

for tc in 1 2; do
  cores=0; [[ $tc == 2 ]] && cores=0,1
  start_target "$cores"
  log "$bin/ferrited --cores $cores --idle poll --listen 127.0.0.1:$port"
  # Precondition: write the whole namespace once so reads hit real pages, not the kernel's
  # shared zero page that never-written RAM maps to (which would flatter every read row).
  tid="trtype:tcp traddr:127.0.0.1 trsvcid:$port subnqn:$nqn"
  log "$bin/ferrite-perf -r '$tid' -w write -o 128k -q 16 --cores $perf_core -t 4 (precondition)"
  "$bin/ferrite-perf" -r "$tid" -w write -o 128k -q 16 --cores "$perf_core" -t 4 --no-progress >/dev/null
  for row in "${matrix[@]}"; do
    read -r name w size qd <<<"$row"
    # One qpair per target core so every reactor has a connection.
    f=$art/$name-tc$tc
    tid="trtype:tcp traddr:127.0.0.1 trsvcid:$port subnqn:$nqn"
    log "$bin/ferrite-perf -r '$tid' -w $w -o $size -q $qd --qpairs $tc --cores $perf_core -t $secs --warmup $warm --json $f.json --svg $f"
    "$bin/ferrite-perf" -r "$tid" -w "$w" -o "$size" -q "$qd" --qpairs "$tc" --cores "$perf_core" \
      -t "$secs" --warmup "$warm" --no-progress --json "$f.json" --svg "$f" >&2
  done
  stop_target
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

py_table() {
python3 - "$art" "$tc" <<'EOF'
import json, sys, os
art, tc = sys.argv[1], sys.argv[2]
rows = ["randread-4k-qd1", "randread-4k-qd32", "randread-4k-qd128", "randwrite-4k-qd32", "read-128k-qd16"]
print("| workload | IOPS | MiB/s | avg µs | p50 µs | p90 µs | p99 µs | p99.9 µs | p99.99 µs | max µs | ceiling IOPS | of ceiling | plots |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    d = json.load(open(f"{art}/{r}-tc{tc}.json"))["total"]
    lim = json.load(open(f"{art}/limit-{r}-qp{tc}.json"))["summary"]
    l = d["latency_us"]
    frac = d["iops"] / lim["iops"] if lim["iops"] else 0
    base = os.path.basename(art)
    plots = f"[latency]({base}/{r}-tc{tc}/latency.svg), [IOPS]({base}/{r}-tc{tc}/iops.svg)"
    print(f"| {r} | {d['iops']:.0f} | {d['mib_per_sec']:.1f} | {l['avg']:.1f} | {l['p50']:.1f} | {l['p90']:.1f} | "
          f"{l['p99']:.1f} | {l['p99_9']:.1f} | {l['p99_99']:.1f} | {l['max']:.1f} | {lim['iops']:.0f} | {frac:.0%} | {plots} |")
EOF
}

{
  echo "# ferrite-perf standard matrix — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $ncpu cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r)."
  echo "Commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- appliance perf || echo ' (with local changes)')."
  echo "Load average before: $load_before; after: $load_after."
  echo
  echo "Target: \`ferrited --idle poll\` (embedded default: 1 GiB RAM namespace, written in full before the rows so reads touch real memory), reactors on core 0 (1 core) or cores 0,1 (2 cores)."
  echo "Load: \`ferrite-perf\` on core $perf_core, one qpair per target core, ${warm} s warmup, ${secs} s measured per row."
  echo "Ceiling: \`ferrite-perf limit\` (server thread on core 0, client on core $perf_core, same message sizes, queue depth and connections, no storage, no NVMe)."
  [[ $ncpu -le 2 ]] && echo "With 2 target cores on a $ncpu-core machine the target's second reactor shares core $perf_core with the load generator: those rows measure contention, not scaling."
  echo
  for tc in 1 2; do
    echo "## $tc target core(s)"
    echo
    py_table
    echo
  done
  echo "Reference (issue 4, same kind of machine, not measured here): SPDK v25.09 nvmf_tgt on one core, spdk_nvme_perf on the other:"
  echo "455K IOPS 4 KiB randread QD 32, 496K at QD 128, 412K 4 KiB randwrite QD 32, 62K (16 µs average) at QD 1."
  echo
  echo "## Commands"
  echo
  echo '```'
  echo "docs/bench/perf.sh $secs $warm"
  printf '%s\n' "${commands[@]}"
  echo '```'
} > "$out"
echo "wrote $out and $art/" >&2

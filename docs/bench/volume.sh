#!/usr/bin/env bash
# The mapping layer's cost (issue 5): one ferrited (busy-polling on core 0) exports the same
# kind of backend twice, raw and through a pool, and ferrite-perf (on the last core) compares
# them in alternating rounds; then first-write (allocating) throughput on a fresh thin volume
# against the same workload on an allocated one, and snapshot creation time while a host writes.
# Writes docs/bench/<date>-volume.md and its JSON under docs/bench/<date>-volume/.
#
# Usage: docs/bench/volume.sh [seconds-per-round] [rounds] [backend: malloc|file]
# Run it on a quiet machine (the report records the load average before and after).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-5}
rounds=${2:-5}
backend=${3:-malloc}
port=4481
nqn=nqn.2026-01.io.ferrite:bench
target_dir=${CARGO_TARGET_DIR:-target}
cargo build --release -p ferrite-daemon -p ferrite-perf --bins >/dev/null
bin=$target_dir/release
ncpu=$(nproc)
perf_core=$((ncpu - 1))
date=$(date +%Y-%m-%d)
out=docs/bench/$date-volume.md
art=docs/bench/$date-volume
rm -rf "$art"
mkdir -p "$art"
tmp=$(mktemp -d)
data=$(mktemp -d /var/tmp/ferrite-bench-XXXXXX)
target_pid=
cleanup() {
  if [[ -n $target_pid ]]; then kill "$target_pid" 2>/dev/null || true; wait "$target_pid" 2>/dev/null || true; fi
  rm -rf "$tmp" "$data"
}
trap cleanup EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
commands=()
log() { echo "== $*" >&2; commands+=("$*"); }
sock=$tmp/ferrited.sock
ctl() { "$bin/ferritectl" --socket "$sock" --timeout 120 "$@"; }

# Two backends of the same kind and size: one exported raw, one holding the pool.
if [[ $backend == file ]]; then
  bdev() { echo "[[bdev]]
name = \"$1\"
kind = \"file\"
path = \"$data/$1.img\"
size = \"$2\"
block_size = 4096"; }
else
  bdev() { echo "[[bdev]]
name = \"$1\"
kind = \"malloc\"
size = \"$2\"
block_size = 4096"; }
fi
cat >"$tmp/ferrite.toml" <<EOF
cores = "0"
idle = "poll"
listen = ["127.0.0.1:$port"]
$(bdev raw0 1GiB)
$(bdev pooldev 4GiB)
[[subsystem]]
nqn = "$nqn"
allow_any_host = true
namespaces = [{ nsid = 1, bdev = "raw0" }]
EOF
log "$bin/ferrited --config ferrite.toml --rpc-socket ferrited.sock  # raw0, pooldev: $backend; core 0, idle poll"
"$bin/ferrited" --config "$tmp/ferrite.toml" --rpc-socket "$sock" 2>"$tmp/ferrited.log" &
target_pid=$!
for _ in $(seq 100); do
  if [[ -S $sock ]] && (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then break; fi
  sleep 0.1
done
call() { log "ferritectl call $1 '$2'"; ctl call "$1" "$2" >/dev/null; }
tid="trtype:tcp traddr:127.0.0.1 trsvcid:$port subnqn:$nqn"
perf() { "$bin/ferrite-perf" --cores "$perf_core" --no-progress "$@"; }
if [[ $backend == malloc ]]; then
  # Touch every page of the pool's RAM device first (exported raw for a moment): otherwise the
  # first-write rows would measure the kernel handing out fresh (huge) pages, not the mapping.
  call nvmf_subsystem_add_ns "{\"nqn\":\"$nqn\",\"namespace\":{\"bdev_name\":\"pooldev\",\"nsid\":9}}"
  log "ferrite-perf -r '$tid ns:9' -w write -o 128k -q 16 -t 20 (touch the pool device's memory)"
  perf -r "$tid ns:9" -w write -o 128k -q 16 -t 20 >/dev/null
  call nvmf_subsystem_remove_ns "{\"nqn\":\"$nqn\",\"nsid\":9}"
fi
call pool_create '{"name":"pool0","bdevs":["pooldev"]}'
call volume_create '{"pool":"pool0","name":"thick","size":"1GiB","thin":false}'
call volume_create '{"pool":"pool0","name":"fresh","size":"1GiB","thin":true}'
call volume_create '{"pool":"pool0","name":"warm","size":"1GiB","thin":true}'
call nvmf_subsystem_add_ns "{\"nqn\":\"$nqn\",\"namespace\":{\"bdev_name\":\"pool0/thick\",\"nsid\":2}}"
call nvmf_subsystem_add_ns "{\"nqn\":\"$nqn\",\"namespace\":{\"bdev_name\":\"pool0/fresh\",\"nsid\":3}}"
call nvmf_subsystem_add_ns "{\"nqn\":\"$nqn\",\"namespace\":{\"bdev_name\":\"pool0/warm\",\"nsid\":4}}"

# Precondition: every block of raw0, the thick volume and the warm volume written once (the
# sequential writer wraps around; 10 s covers 1 GiB even at first-write speed).
for ns in 1 2 4; do
  log "ferrite-perf -r '$tid ns:$ns' -w write -o 128k -q 16 -t 10 (precondition)"
  perf -r "$tid ns:$ns" -w write -o 128k -q 16 -t 10 >/dev/null
done
warm_alloc=$(ctl --json call volume_info '{"name":"pool0/warm"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["allocated_bytes"])')
[[ $warm_alloc == 1073741824 ]] || { echo "warm volume not fully allocated: $warm_alloc bytes" >&2; exit 1; }

# Raw backend against the fully allocated volume, alternating, per workload.
for w in randread randwrite; do
  f=$art/compare-$w-4k-qd32.json
  log "ferrite-perf compare -r '$tid ns:2' -r '$tid ns:1' --rounds $rounds -w $w -o 4k -q 32 -t $secs --warmup 1 --json $f"
  "$bin/ferrite-perf" compare -r "$tid ns:2" -r "$tid ns:1" --rounds "$rounds" --json "$f" \
    -w "$w" -o 4k -q 32 -t "$secs" --warmup 1 --cores "$perf_core" --no-progress >&2
done

# First writes: 128 KiB sequential and 4 KiB random on the fresh thin volume (every cluster
# allocated on first touch) against the same on the warm one (already allocated).
for spec in "write 128k 16" "randwrite 4k 32"; do
  read -r w size qd <<<"$spec"
  for ns in 3 4; do
    f=$art/first-$w-$size-ns$ns.json
    log "ferrite-perf -r '$tid ns:$ns' -w $w -o $size -q $qd -t 2 --interval 0.05 --json $f"
    perf -r "$tid ns:$ns" -w "$w" -o "$size" -q "$qd" -t 2 --interval 0.05 --json "$f" >&2
  done
  # A fresh volume for the second workload too.
  ctl call nvmf_subsystem_remove_ns "{\"nqn\":\"$nqn\",\"nsid\":3}" >/dev/null
  ctl call volume_delete '{"name":"pool0/fresh"}' >/dev/null
  ctl call volume_create '{"pool":"pool0","name":"fresh","size":"1GiB","thin":true}' >/dev/null
  ctl call nvmf_subsystem_add_ns "{\"nqn\":\"$nqn\",\"namespace\":{\"bdev_name\":\"pool0/fresh\",\"nsid\":3}}" >/dev/null
done

# Snapshot creation while a host writes to the volume (4 KiB random, QD 32).
f=$art/snapshot-load.json
log "ferrite-perf -r '$tid ns:2' -w randwrite -o 4k -q 32 -t 12 --json $f  (with 10 snapshot_create/delete during it)"
perf -r "$tid ns:2" -w randwrite -o 4k -q 32 -t 12 --json "$f" >&2 &
perf_pid=$!
sleep 2
: >"$art/snapshot-ms.txt"
for i in $(seq 10); do
  t0=$(date +%s%N)
  ctl call snapshot_create "{\"volume\":\"pool0/thick\",\"name\":\"s$i\"}" >/dev/null
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000)) >>"$art/snapshot-ms.txt"
  sleep 0.5
  ctl call snapshot_delete "{\"name\":\"pool0/s$i\"}" >/dev/null
done
wait "$perf_pid"
log "snapshot_create x10 timed with date +%s%N around ferritectl call"
ctl call pool_check '{"name":"pool0"}' >"$art/pool-check.json"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$art" "$out" "$backend" "$load_before" "$load_after" "$perf_core" "$secs" "$rounds" "$(git rev-parse --short HEAD)" "${commands[@]}" <<'EOF'
import json, sys, statistics, os, subprocess
art, out, backend, lb, la, pc, secs, rounds, commit, *cmds = sys.argv[1:]
def j(p): return json.load(open(os.path.join(art, p)))
cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
lines = [f"# Mapping layer cost — {os.path.basename(art)}", "",
         f"Machine: {os.cpu_count()} cores ({cpu}), kernel {os.uname().release}. Commit {commit}. Load average before: {lb}; after: {la}.",
         f"Target: `ferrited --idle poll` on core 0; `ferrite-perf` on core {pc}. Backend kind: **{backend}** (raw0 1 GiB; the pool on a second {backend} device of 4 GiB, 1 MiB clusters)" + (", the pool device's memory written once before the pool was created, so first writes measure the mapping layer and not the kernel handing out fresh pages" if backend == "malloc" else "") + ".", "",
         "## Fully allocated volume against the same backend raw (4 KiB, QD 32)", "",
         f"`ferrite-perf compare`, {rounds} alternating rounds of {secs} s; ratio = volume IOPS / raw IOPS per round, and its median.", "",
         "| workload | volume IOPS (median) | raw IOPS (median) | ratio per round | median ratio |", "|---|---|---|---|---|"]
for w in ("randread", "randwrite"):
    c = j(f"compare-{w}-4k-qd32.json")
    a = statistics.median(r["a"]["iops"] for r in c["rounds"])
    b = statistics.median(r["b"]["iops"] for r in c["rounds"])
    per = ", ".join(f"{r['ratio']:.3f}" for r in c["rounds"])
    lines.append(f"| {w} | {a:.0f} | {b:.0f} | {per} | **{c['median_ratio']:.3f}** |")
lines += ["", "## First write (allocating) against an allocated volume", "",
          "Fresh 1 GiB thin volume (each 1 MiB cluster allocated, logged durably and published on its first write) against a 1 GiB thin volume already written once; 2 s each, IOPS sampled every 50 ms. "
          "The first samples are the allocating ones: the sequential writer's first 250 ms lie inside its first pass over the volume (every 8th write faults), while the random writer faults on nearly every write until most of the 1,024 clusters are mapped.", "",
          "| workload | fresh: first 50 ms IOPS | fresh: first 250 ms IOPS | allocated: first 250 ms IOPS | ratio (250 ms) | fresh 2 s IOPS / max µs | allocated 2 s IOPS / max µs |", "|---|---|---|---|---|---|---|"]
def early(t, n):
    v = t["iops_over_time"][:n]
    return sum(v) / len(v) if v else 0.0
for w, s in (("write", "128k"), ("randwrite", "4k")):
    f = j(f"first-{w}-{s}-ns3.json")["total"]; a = j(f"first-{w}-{s}-ns4.json")["total"]
    f1, f5, a5 = early(f, 1), early(f, 5), early(a, 5)
    lines.append(f"| {w} {s} | {f1:.0f} | {f5:.0f} | {a5:.0f} | {f5/a5 if a5 else 0:.3f} | {f['iops']:.0f} / {f['latency_us']['max']:.0f} | {a['iops']:.0f} / {a['latency_us']['max']:.0f} |")
ms = [int(x) / 1000 for x in open(os.path.join(art, "snapshot-ms.txt")).read().split()]
s = j("snapshot-load.json")["total"]
lines += ["", "## Snapshot creation under load", "",
          f"10 × `snapshot_create` of the 1 GiB thick volume (then `snapshot_delete`) while `ferrite-perf` writes 4 KiB random at QD 32 to it; time measured around the `ferritectl call` (includes the RPC round trip).", "",
          f"- snapshot_create: median {statistics.median(ms):.1f} ms, min {min(ms):.1f} ms, max {max(ms):.1f} ms",
          f"- the writer over the 12 s: {s['iops']:.0f} IOPS, avg {s['latency_us']['avg']:.1f} µs, p99.9 {s['latency_us']['p99_9']:.0f} µs, max {s['latency_us']['max']:.0f} µs (every snapshot turns the next write of each cluster into a copy-on-write fault)",
          f"- `pool_check` afterwards: {len(j('pool-check.json').get('errors', []))} errors", "",
          "## Commands", "", "```"] + cmds + ["```", ""]
open(out, "w").write("\n".join(lines))
EOF
echo "wrote $out and $art/" >&2

#!/usr/bin/env bash
# The tape gateway's streaming rate (issue 11): one ferrited exports a RAM namespace written by
# ferrite-perf --verify; ferrite-tape backs it up to a virtual tape library on a disk directory
# and restores it to a second RAM namespace. Each round measures, back to back on the same
# directory, the raw sequential write rate (dd, 1 MiB blocks, one fdatasync at the end: the VTL
# syncs once per job too), the backup, the restore, and the raw sequential read of the cartridge
# file (restore and raw read both start with the cartridge evicted from the page cache); the
# report gives the same-round ratios and the MT queue's drive-idle figures.
# Writes docs/bench/<date>-tape.md and its JSON under docs/bench/<date>-tape/.
#
# Usage: docs/bench/tape.sh [size-MiB] [rounds] [profile: release|debug]
set -euo pipefail
cd "$(dirname "$0")/../.."
mib=${1:-1024}
rounds=${2:-3}
profile=${3:-release}
port=4483
nqn=nqn.2026-01.io.ferrite:tapebench
target_dir=${CARGO_TARGET_DIR:-target}
if [[ $profile == release ]]; then
  cargo build --release -p ferrite-daemon -p ferrite-perf -p ferrite-tape --bins >/dev/null
else
  cargo build -p ferrite-daemon -p ferrite-perf -p ferrite-tape --bins >/dev/null
fi
bin=$target_dir/$profile
date=$(date +%Y-%m-%d)
out=docs/bench/$date-tape.md
art=docs/bench/$date-tape
rm -rf "$art"
mkdir -p "$art"
tmp=$(mktemp -d)
data=$(mktemp -d /var/tmp/ferrite-tape-bench-XXXXXX)
target_pid=
gw_pid=
cleanup() {
  for p in $gw_pid $target_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp" "$data"
}
trap cleanup EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
cat >"$tmp/ferrite.toml" <<EOF
cores = "0"
listen = ["127.0.0.1:$port"]
[[bdev]]
name = "src"
kind = "malloc"
size = "${mib}MiB"
block_size = 4096
[[bdev]]
name = "dst"
kind = "malloc"
size = "${mib}MiB"
block_size = 4096
[[subsystem]]
nqn = "$nqn"
allow_any_host = true
namespaces = [{ nsid = 1, bdev = "src" }, { nsid = 2, bdev = "dst" }]
EOF
"$bin/ferrited" --config "$tmp/ferrite.toml" --no-pin --rpc-socket "$tmp/ferrited.sock" 2>"$tmp/ferrited.log" &
target_pid=$!
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
tid="trtype:tcp traddr:127.0.0.1 trsvcid:$port subnqn:$nqn"
"$bin/ferrite-perf" -r "$tid ns:1" -w write -o 128k -q 16 -t 10 --verify --no-progress >"$art/fill.txt"

cat >"$tmp/tape.toml" <<EOF
socket = "$tmp/tape.sock"
catalog = "$data/catalog.db"
chunk_bytes = 1048576
window = 32
connections = 4
[library]
kind = "virtual"
dir = "$data/vtl"
slots = $((rounds + 1))
drives = 1
import_export = 1
cartridge_capacity = $(((mib + 64) << 20))
early_warning = 16777216
EOF
"$bin/ferrite-tape" daemon --config "$tmp/tape.toml" 2>"$tmp/tape.log" &
gw_pid=$!
for _ in $(seq 200); do [[ -S $tmp/tape.sock ]] && break; sleep 0.1; done
ft() { "$bin/ferrite-tape" --socket "$tmp/tape.sock" "$@"; }
for r in $(seq "$rounds"); do ft --json cartridge import "BENCH$r" >/dev/null; done

# Drops a file's pages from the page cache (they are clean after the VTL's sync), so reads of it
# come from the disk: both the restore and the raw read start cold.
evict() { python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$1"; }
rate() { python3 -c "import sys; print(f'{$mib/float(sys.argv[1]):.1f}')" "$1"; }
rows=()
for r in $(seq "$rounds"); do
  t0=$(date +%s.%N)
  dd if=/dev/zero of="$data/raw" bs=1M count="$mib" conv=fdatasync status=none
  raw_w=$(python3 -c "print($(date +%s.%N) - $t0)")
  rm -f "$data/raw"
  ft --json job start --address 127.0.0.1:$port --subnqn $nqn --nsid 1 --wait >"$art/backup-$r.json"
  job=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["job"])' "$art/backup-$r.json")
  cart=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cartridges"][0])' "$art/backup-$r.json")
  evict "$data/vtl/cartridges/$cart.vtape"
  ft --json restore --job "$job" --address 127.0.0.1:$port --subnqn $nqn --nsid 2 --wait >"$art/restore-$r.json"
  evict "$data/vtl/cartridges/$cart.vtape"
  t0=$(date +%s.%N)
  cat "$data/vtl/cartridges/$cart.vtape" >/dev/null
  raw_r=$(python3 -c "print($(date +%s.%N) - $t0)")
  rows+=("$(python3 - "$art/backup-$r.json" "$art/restore-$r.json" "$raw_w" "$raw_r" "$mib" "$r" <<'PY'
import json, sys
b = json.load(open(sys.argv[1])); s = json.load(open(sys.argv[2]))
raw_w, raw_r, mib, r = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
bw = mib / b["seconds"]; rw = mib / raw_w; rs = mib / s["seconds"]; rr = mib / raw_r
q = b["queue"]
print(f"| {r} | {rw:.0f} | {bw:.0f} | {100*bw/rw:.0f}% | {rr:.0f} | {rs:.0f} | {100*rs/rr:.0f}% | "
      f"{q['queue']['out_of_order']} | {q['idle_with_next_ns']/1e6:.2f} | {q['idle_with_next_max_ns']/1e6:.2f} | "
      f"{q['wait_gap_ns']/1e6:.0f} | {q['wait_empty_ns']/1e6:.0f} | {q['busy_ns']/1e6:.0f} |")
PY
)")
done
# Byte-exact check of the last restore: ferrite-perf --verify reads what it stamped, on the copy.
"$bin/ferrite-perf" -r "$tid ns:2" -w read -o 128k -q 16 -t 3 --verify --no-progress >"$art/verify-restored.txt" 2>&1 \
  && verified="ferrite-perf --verify read of the restored namespace: passed" \
  || verified="ferrite-perf --verify read of the restored namespace: FAILED (see verify-restored.txt)"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "# ferrite-tape streaming: backup and restore against the raw disk ($date)"
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -r);"
  echo "load average before $load_before, after $load_after. Profile: $profile. Directory: /var/tmp"
  echo "($(df -T /var/tmp | awk 'NR==2{print $2}'))."
  echo
  echo "Command: \`docs/bench/tape.sh $mib $rounds $profile\`. Source: a ${mib} MiB RAM namespace of"
  echo "ferrited written by \`ferrite-perf -w write --verify\`; ferrite-tape with 4 NVMe/TCP connections,"
  echo "1 MiB tape blocks, window 32, on a virtual library in the same directory as the raw dd."
  echo "Rates in MiB/s; each row is one round, its ratios are same-round. Idle/wait/busy in ms."
  echo
  echo "| round | raw write | backup | backup/raw | raw read | restore | restore/raw | out of order | drive idle with next block queued (sum) | (max) | wait behind gap | wait empty | drive busy |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "$verified."
} >"$out"
cat "$out"

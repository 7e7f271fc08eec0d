#!/usr/bin/env bash
# Same-run paired comparison of ferrited and SPDK's nvmf_tgt (issue 9).
#
# Both targets run for the whole script, each with one reactor on core 0 and a 1 GiB RAM
# namespace of 4 KiB blocks written in full first. Every row of the matrix runs as many short
# pairs: one run against ferrited and one against nvmf_tgt, back to back, in alternating order
# (ABBA), with the same client on core 1; the target not being measured is stopped with SIGSTOP so
# its busy-polling reactor does not share core 0 (it keeps its listener, namespace and memory).
# Each pair gives one ratio ferrited/SPDK; the report gives the median ratio and its spread. On a
# shared machine only these paired ratios mean something: absolute figures swing with the load.
#
# Usage: docs/bench/perf.sh [pairs] [seconds-per-run]
#   ROWS=REGEX limits the matrix to matching rows, CLIENTS="ferrite-perf" to one client.
# Needs the SPDK v25.09 baseline ($FERRITE_SPDK_BASELINE or ../shared/baseline/spdk-v25.09 beside
# the checkout, run its install.sh once) and root (hugepages for SPDK).
# Writes docs/bench/<date>-spdk.md and the raw runs in docs/bench/<date>-spdk/runs.tsv.
set -euo pipefail
cd "$(dirname "$0")/../.."
pairs=${1:-8}
secs=${2:-3}
spdk=${FERRITE_SPDK_BASELINE:-$(cd .. && pwd)/shared/baseline/spdk-v25.09}
[[ -x $spdk/nvmf_tgt ]] || spdk=/work/shared/baseline/spdk-v25.09
[[ -x $spdk/nvmf_tgt ]] || { echo "SPDK baseline not found (set FERRITE_SPDK_BASELINE)" >&2; exit 1; }
target_dir=${CARGO_TARGET_DIR:-target}
cargo build --release -p ferrite-daemon -p ferrite-perf --bins >/dev/null
bin=$target_dir/release
fport=4480
sport=4430
fnqn=nqn.2026-01.io.ferrite:default
snqn=nqn.2016-06.io.spdk:cnode1
date=$(date +%Y-%m-%d)
out=docs/bench/$date-spdk.md
art=docs/bench/$date-spdk
mkdir -p "$art"
runs=$art/runs.tsv
tmp=$(mktemp -d)
fpid=
spid=
cleanup() {
  for p in $fpid $spid; do kill -CONT "$p" 2>/dev/null || true; done
  [[ -n $fpid ]] && { kill "$fpid" 2>/dev/null || true; wait "$fpid" 2>/dev/null || true; }
  [[ -n $spid ]] && { kill -INT "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; }
  rm -rf "$tmp"
}
trap cleanup EXIT
commands=()
log() { commands+=("$*"); }
wait_port() { # port log
  for _ in $(seq 200); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "no listener on port $1:" >&2; cat "$2" >&2; exit 1
}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

"$bin/ferrited" --cores 0 --idle poll --no-rpc --listen 127.0.0.1:$fport 2>"$tmp/ferrited.log" &
fpid=$!
log "$bin/ferrited --cores 0 --idle poll --no-rpc --listen 127.0.0.1:$fport"
wait_port $fport "$tmp/ferrited.log"

rpc() { "$spdk/spdk_rpc" -s "$tmp/spdk.sock" "$@" >/dev/null; }
"$spdk/nvmf_tgt" -m 0x1 -u -r "$tmp/spdk.sock" >"$tmp/nvmf_tgt.log" 2>&1 &
spid=$!
log "$spdk/nvmf_tgt -m 0x1 -u -r SOCK"
for _ in $(seq 200); do [[ -S $tmp/spdk.sock ]] && break; sleep 0.1; done
rpc nvmf_create_transport -t TCP
rpc bdev_malloc_create -b M0 1024 4096
rpc nvmf_create_subsystem $snqn -a -s S1
rpc nvmf_subsystem_add_ns $snqn M0
rpc nvmf_subsystem_add_listener $snqn -t tcp -a 127.0.0.1 -s $sport
log "spdk_rpc: nvmf_create_transport -t TCP; bdev_malloc_create -b M0 1024 4096; nvmf_create_subsystem $snqn -a -s S1; nvmf_subsystem_add_ns $snqn M0; nvmf_subsystem_add_listener $snqn -t tcp -a 127.0.0.1 -s $sport"
wait_port $sport "$tmp/nvmf_tgt.log"

tid_f="trtype:tcp traddr:127.0.0.1 trsvcid:$fport subnqn:$fnqn"
tid_s="trtype:tcp traddr:127.0.0.1 trsvcid:$sport subnqn:$snqn"
stid_f="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$fport subnqn:$fnqn"
stid_s="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$sport subnqn:$snqn"

only() { # ferrited|spdk: let that target run, freeze the other
  if [[ $1 == ferrited ]]; then kill -STOP "$spid"; kill -CONT "$fpid"; else kill -STOP "$fpid"; kill -CONT "$spid"; fi
}

# Precondition: write each namespace in full (1 GiB sequentially at 128 KiB, wrapping) so reads
# touch real pages and writes do not pay first-touch page faults (ferrited's RAM namespace maps its
# memory lazily, with transparent huge pages; SPDK's malloc bdev sits in preallocated hugepages).
# On a loaded machine 4 s may cover a quarter of it, so the time follows a measured rate.
for t in ferrited spdk; do
  only $t
  tid=$tid_f; [[ $t == spdk ]] && tid=$tid_s
  "$bin/ferrite-perf" -r "$tid" -w write -o 128k -q 16 --cores 1 -t 2 --no-progress --json "$tmp/pre.json" >/dev/null
  pre=$(python3 -c 'import json,sys,math; d=json.load(open(sys.argv[1]))["total"]; print(min(300, math.ceil(1.5 * 1024 / max(d["mib_per_sec"], 1))))' "$tmp/pre.json")
  "$bin/ferrite-perf" -r "$tid" -w write -o 128k -q 16 --cores 1 -t "$pre" --no-progress >/dev/null
  log "$bin/ferrite-perf -r TID -w write -o 128k -q 16 --cores 1 -t $pre   (precondition of $t: 1.5 GiB at the rate of a 2 s probe)"
done

# One run: prints "IOPS avg-latency-µs".
run_client() { # client target workload size qd
  local client=$1 t=$2 w=$3 size=$4 qd=$5
  if [[ $client == ferrite-perf ]]; then
    local tid=$tid_f; [[ $t == spdk ]] && tid=$tid_s
    "$bin/ferrite-perf" -r "$tid" -w "$w" -o "$size" -q "$qd" --cores 1 -t "$secs" --warmup 1 \
      --no-progress --json "$tmp/r.json" >/dev/null 2>&1 || { echo "0 0"; return; }
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["total"]; print(d["iops"], d["latency_us"]["avg"])' "$tmp/r.json"
  else
    local tid=$stid_f; [[ $t == spdk ]] && tid=$stid_s
    local bytes=$((${size%k} * 1024))
    timeout 60 "$spdk/spdk_nvme_perf" -c 0x2 -q "$qd" -o "$bytes" -w "$w" -t "$secs" -r "$tid" \
      >"$tmp/r.txt" 2>&1 || true
    awk '/^Total/ { split($0, a, ":"); split(a[2], v, " "); print v[1], v[3]; found=1 } END { if (!found) print "0 0" }' "$tmp/r.txt"
  fi
}

# name workload size queue-depth
matrix=(
  "4k-randread-qd1 randread 4k 1"
  "4k-randread-qd32 randread 4k 32"
  "4k-randwrite-qd32 randwrite 4k 32"
  "128k-read-qd16 read 128k 16"
)
printf 'row\tclient\tpair\ttarget\tiops\tavg_us\n' >"$runs"
for row in "${matrix[@]}"; do
  read -r name w size qd <<<"$row"
  [[ $name =~ ${ROWS:-.} ]] || continue
  for client in ${CLIENTS:-ferrite-perf spdk_nvme_perf}; do
    for p in $(seq 1 "$pairs"); do
      order="ferrited spdk"; ((p % 2 == 0)) && order="spdk ferrited"
      for t in $order; do
        only "$t"
        read -r iops lat < <(run_client "$client" "$t" "$w" "$size" "$qd")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$client" "$p" "$t" "$iops" "$lat" >>"$runs"
        echo "$name $client pair $p $t: $iops IOPS, $lat us" >&2
      done
    done
  done
done
kill -CONT "$fpid" "$spid"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
log "$bin/ferrite-perf -r TID -w W -o SIZE -q QD --cores 1 -t $secs --warmup 1 --json F"
log "$spdk/spdk_nvme_perf -c 0x2 -q QD -o BYTES -w W -t $secs -r 'trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:PORT subnqn:NQN'"

{
  echo "# ferrited vs SPDK nvmf_tgt, same run, paired — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r); shared with other work (load average before: $load_before; after: $load_after)."
  echo "Commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- appliance perf || echo ' (with local changes)'). SPDK: v25.09 baseline binaries."
  echo
  echo "Targets: \`ferrited --cores 0 --idle poll\` (embedded default: 1 GiB RAM namespace, 4 KiB blocks) and \`nvmf_tgt -m 0x1\` (malloc bdev 1 GiB, 4 KiB blocks), both on core 0, both alive for the whole run; the one not measured is frozen with SIGSTOP. Both namespaces written in full first."
  echo "Clients on core 1: \`ferrite-perf\` (${secs} s measured after 1 s warmup) and \`spdk_nvme_perf\` (${secs} s). $pairs pairs per row and client, order alternating (ABBA)."
  echo "Ratio = ferrited / SPDK per pair (IOPS; for latency, average latency). Median over the pairs, spread as min–max and interquartile range."
  echo
  python3 - "$runs" <<'EOF'
import csv, sys, statistics as st
rows = {}
for r in csv.DictReader(open(sys.argv[1]), delimiter="\t"):
    rows.setdefault((r["row"], r["client"]), {}).setdefault(r["pair"], {})[r["target"]] = (float(r["iops"]), float(r["avg_us"]))
def q(v, f):
    v = sorted(v); i = (len(v) - 1) * f; lo = int(i); hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (i - lo)
print("| workload | client | pairs | ferrited IOPS (median) | SPDK IOPS (median) | IOPS ratio median | min–max | IQR | avg latency ratio median (min–max) |")
print("|---|---|---|---|---|---|---|---|---|")
for (row, client), pairs in rows.items():
    ok = [p for p in pairs.values() if "ferrited" in p and "spdk" in p and p["ferrited"][0] > 0 and p["spdk"][0] > 0]
    if not ok:
        print(f"| {row} | {client} | 0 | – | – | – | – | – | – |"); continue
    r = [p["ferrited"][0] / p["spdk"][0] for p in ok]
    l = [p["ferrited"][1] / p["spdk"][1] for p in ok if p["spdk"][1] > 0]
    fi = st.median(p["ferrited"][0] for p in ok); si = st.median(p["spdk"][0] for p in ok)
    print(f"| {row} | {client} | {len(ok)} | {fi/1000:.1f}K | {si/1000:.1f}K | **{st.median(r):.2f}** | {min(r):.2f}–{max(r):.2f} | {q(r,.25):.2f}–{q(r,.75):.2f} | {st.median(l):.2f} ({min(l):.2f}–{max(l):.2f}) |")
EOF
  echo
  echo "Raw runs: [runs.tsv]($date-spdk/runs.tsv)."
  echo
  echo "## Commands"
  echo
  echo '```'
  echo "docs/bench/perf.sh $pairs $secs"
  printf '%s\n' "${commands[@]}"
  echo '```'
} >"$out"
echo "wrote $out and $runs" >&2

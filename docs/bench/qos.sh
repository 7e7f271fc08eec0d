#!/usr/bin/env bash
# Cost of QoS accounting (limits set, never reached) and of the Prometheus endpoint (scraped
# every second) on 4 KiB randread QD 32 (issue 13). Same-run paired comparison, as perf.sh:
#
# Three ferrited processes, each one reactor on core 0 with a 1 GiB RAM namespace:
#   base     no limit, no metrics endpoint;
#   qos      bdev_set_qos_limit ram0 with rw_ios_per_sec and rw_mbytes_per_sec far above what
#            one core serves (every I/O passes the token bucket, none waits);
#   metrics  --metrics, with curl scraping /metrics every second while it is measured.
# Every pair runs base and the variant back to back in alternating order (ABBA) with ferrite-perf
# on core 1; the targets not measured are stopped with SIGSTOP. The report gives the median of
# the per-pair ratios variant/base and their interquartile range.
#
# Usage: docs/bench/qos.sh [pairs] [seconds-per-run]
# Writes docs/bench/<date>-qos-metrics.md and the raw runs in docs/bench/<date>-qos-metrics/runs.tsv.
set -euo pipefail
cd "$(dirname "$0")/../.."
pairs=${1:-10}
secs=${2:-3}
profile=${PROFILE:-release}
target_dir=${CARGO_TARGET_DIR:-target}
if [[ $profile == release ]]; then
  cargo build --release -p ferrite-daemon -p ferrite-perf --bins >/dev/null
else
  cargo build -p ferrite-daemon -p ferrite-perf --bins >/dev/null
fi
bin=$target_dir/$profile
nqn=nqn.2026-01.io.ferrite:default
date=$(date +%Y-%m-%d)
out=docs/bench/$date-qos-metrics.md
art=docs/bench/$date-qos-metrics
mkdir -p "$art"
runs=$art/runs.tsv
tmp=$(mktemp -d)
declare -A pid port
port=([base]=4491 [qos]=4492 [metrics]=4493)
mport=19193
scraper=
cleanup() {
  [[ -n $scraper ]] && kill "$scraper" 2>/dev/null || true
  for t in "${!pid[@]}"; do kill -CONT "${pid[$t]}" 2>/dev/null || true; kill "${pid[$t]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
wait_port() {
  for _ in $(seq 200); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "no listener on port $1" >&2; exit 1
}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for t in base qos metrics; do
  extra=()
  [[ $t == metrics ]] && extra=(--metrics 127.0.0.1:$mport)
  "$bin/ferrited" --cores 0 --idle poll --rpc-socket "$tmp/$t.sock" --listen 127.0.0.1:${port[$t]} \
    "${extra[@]}" 2>"$tmp/$t.log" &
  pid[$t]=$!
  wait_port ${port[$t]}
done
"$bin/ferritectl" --socket "$tmp/qos.sock" qos bdev ram0 --rw-ios-per-sec 100000000 \
  --rw-mbytes-per-sec 1000000 >/dev/null

only() { local t; for t in "${!pid[@]}"; do if [[ $t == "$1" ]]; then kill -CONT "${pid[$t]}"; else kill -STOP "${pid[$t]}"; fi; done; }

tid() { echo "trtype:tcp traddr:127.0.0.1 trsvcid:${port[$1]} subnqn:$nqn"; }
# Precondition: write every namespace once so reads touch real pages.
for t in base qos metrics; do
  only "$t"
  "$bin/ferrite-perf" -r "$(tid "$t")" -w write -o 128k -q 16 --cores 1 -t 6 --no-progress >/dev/null
done

run() { # target -> "IOPS avg-latency-us"
  local t=$1
  if [[ $t == metrics ]]; then
    (while true; do curl -s -o /dev/null "http://127.0.0.1:$mport/metrics"; sleep 1; done) &
    scraper=$!
  fi
  "$bin/ferrite-perf" -r "$(tid "$t")" -w randread -o 4k -q 32 --cores 1 -t "$secs" --warmup 1 \
    --no-progress --json "$tmp/r.json" >/dev/null 2>&1 || echo '{"total":{"iops":0,"latency_us":{"avg":0}}}' >"$tmp/r.json"
  if [[ -n $scraper ]]; then kill "$scraper" 2>/dev/null || true; wait "$scraper" 2>/dev/null || true; scraper=; fi
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["total"]; print(d["iops"], d["latency_us"]["avg"])' "$tmp/r.json"
}

printf 'row\tpair\ttarget\tiops\tavg_us\n' >"$runs"
for variant in qos metrics; do
  for p in $(seq 1 "$pairs"); do
    order="base $variant"; ((p % 2 == 0)) && order="$variant base"
    for t in $order; do
      only "$t"
      read -r iops lat < <(run "$t")
      printf '%s\t%s\t%s\t%s\t%s\n' "$variant" "$p" "$t" "$iops" "$lat" >>"$runs"
      echo "$variant pair $p $t: $iops IOPS, $lat us" >&2
    done
  done
done
for t in "${!pid[@]}"; do kill -CONT "${pid[$t]}"; done
delayed=$("$bin/ferritectl" --socket "$tmp/qos.sock" --json qos list | python3 -c 'import json,sys; print(json.load(sys.stdin)["bdevs"][0]["delayed_ios"])')
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$runs" "$out" "$pairs" "$secs" "$load_before" "$load_after" "$delayed" "$profile" <<'PY'
import csv, statistics, sys, platform, os, subprocess
runs, out, pairs, secs, lb, la, delayed, profile = sys.argv[1:]
rows = list(csv.DictReader(open(runs), delimiter="\t"))
def quart(v):
    v = sorted(v)
    q = statistics.quantiles(v, n=4) if len(v) >= 2 else [v[0]] * 3
    return q[0], statistics.median(v), q[2]
lines = []
for variant in ("qos", "metrics"):
    by = {}
    for r in rows:
        if r["row"] == variant:
            by.setdefault(r["pair"], {})[r["target"]] = float(r["iops"])
    ratios = [p[variant] / p["base"] for p in by.values() if p.get("base", 0) > 0 and variant in p]
    base = [p["base"] for p in by.values() if "base" in p]
    var = [p[variant] for p in by.values() if variant in p]
    q1, med, q3 = quart(ratios)
    lines.append(f"| {variant} | {len(ratios)} | {statistics.median(base):,.0f} | {statistics.median(var):,.0f} | {med:.3f} | {q1:.3f}–{q3:.3f} | {(1 - med) * 100:+.1f}% |")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
with open(out, "w") as f:
    f.write(f"""# Cost of QoS accounting and of the metrics endpoint (issue 13)

4 KiB randread at QD 32, one target reactor on core 0 (`--idle poll`), `ferrite-perf` on core 1,
{pairs} ABBA pairs of {secs} s runs (1 s warm-up each) per variant, {profile} build at {rev}.
Machine: {os.cpu_count()} CPUs ({cpu}), **shared with other jobs** (load average {lb} before,
{la} after): absolute IOPS swing with that load; only the paired ratios mean something.

- **qos**: `bdev_set_qos_limit ram0 rw_ios_per_sec=100000000 rw_mbytes_per_sec=1000000`: every
  Read passes the reactor's token bucket (refill each millisecond, charge per I/O) and none waits
  (`qos_get_limits` counted {delayed} delayed I/Os over all runs).
- **metrics**: `ferrited --metrics`, scraped with curl every second during the run (a tighter
  interval than Prometheus' usual 15 s).

| variant | pairs | base IOPS (median) | variant IOPS (median) | median ratio variant/base | IQR of ratios | cost |
|---|---|---|---|---|---|---|
""" + "\n".join(lines) + f"""

Aim: ≤ 2% (ratio ≥ 0.98). Raw runs: `{os.path.relpath(runs, os.path.dirname(out))}`. Reproduce with
`docs/bench/qos.sh {pairs} {secs}`.
""")
print(open(out).read())
PY

#!/usr/bin/env bash
# Primary write cost of remote copy (issue 10): 4 KiB random writes to an unreplicated volume and
# to a volume of a replicated consistency group, on the same primary ferrited, alternating in
# the same run (ferrite-perf compare), first with the pair in async mode, then in sync mode.
# Processes: primary ferrited, secondary ferrited, the two ferrite-replicators (sealed link),
# all on loopback, RAM volumes (malloc pool members), journal 256 MiB of 128 KiB slots.
#
# Usage: docs/bench/replication.sh [rounds] [seconds] [profile]   (profile: debug | release)
# Writes the ferrite-perf reports under docs/bench/<date>-replication[-$BENCH_TAG]/.
# Env: FERRITE_REPLICATOR_BIN runs another ferrite-replicator build (e.g. the one before a
# change, for a before/after pair of runs); BENCH_SETTINGS picks settings among
# "async-qd32 async-qd1 sync-qd1 sync-qd32" (default: all four).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
secs=${2:-5}
profile=${3:-debug}
target_dir=${CARGO_TARGET_DIR:-target}
if [[ $profile == release ]]; then
  cargo build --release -p ferrite-daemon -p ferrite-perf -p ferrite-replicator --bins >/dev/null
else
  cargo build -p ferrite-daemon -p ferrite-perf -p ferrite-replicator --bins >/dev/null
fi
bin=$target_dir/$profile
repl_bin=${FERRITE_REPLICATOR_BIN:-$bin/ferrite-replicator}
settings=${BENCH_SETTINGS:-async-qd32 async-qd1 sync-qd1 sync-qd32}
art=docs/bench/$(date +%Y-%m-%d)-replication${BENCH_TAG:+-$BENCH_TAG}
mkdir -p "$art"
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
pport=4481
sport=4482
rport=4483
pnqn=nqn.2026-01.io.ferrite:bench-primary
snqn=nqn.2026-01.io.ferrite:bench-secondary

daemon() { # name port bdev nqn
  cat >"$tmp/$1.toml" <<EOC
cores = "0"
listen = ["127.0.0.1:$2"]
[[bdev]]
name = "$3"
kind = "malloc"
size = "1GiB"
block_size = 4096
[[subsystem]]
nqn = "$4"
allow_any_host = true
EOC
  "$bin/ferrited" --config "$tmp/$1.toml" --rpc-socket "$tmp/$1.sock" --no-pin 2>"$tmp/$1.log" &
  pids+=($!)
  for _ in $(seq 100); do [[ -S $tmp/$1.sock ]] && break; sleep 0.1; done
}
pctl() { "$bin/ferritectl" --socket "$tmp/primary.sock" "$@"; }
sctl() { "$bin/ferritectl" --socket "$tmp/secondary.sock" "$@"; }

daemon primary $pport m0 $pnqn
daemon secondary $sport n0 $snqn
pctl pool create p m0 --cluster-size 1MiB >/dev/null
sctl pool create q n0 --cluster-size 1MiB >/dev/null
for v in plain repl; do pctl volume create p $v 256MiB >/dev/null; done
sctl volume create q repl 256MiB >/dev/null
pctl journal create 1 p 256MiB >/dev/null
pctl journal attach 1 p/repl 1 >/dev/null
pctl ns add $pnqn p/plain --nsid 1 >/dev/null
pctl ns add $pnqn p/repl@journal --nsid 2 >/dev/null
sctl ns add $snqn q/repl --nsid 1 >/dev/null
pctl replication create 1 --mode async --replicator-status "$tmp/pri.status" >/dev/null
od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$tmp/link.key"
cat >"$tmp/sec.toml" <<EOC
role = "secondary"
group = 1
listen = "127.0.0.1:$rport"
target = "127.0.0.1:$sport"
nqn = "$snqn"
state_file = "$tmp/sec.state"
status_socket = "$tmp/sec.status"
psk_file = "$tmp/link.key"
window = 1024
EOC
cat >"$tmp/pri.toml" <<EOC
role = "primary"
group = 1
journal_socket = "$tmp/primary.sock.journal"
secondary = "127.0.0.1:$rport"
connections = 2
window = 1024
idle_pull_us = 200
status_socket = "$tmp/pri.status"
psk_file = "$tmp/link.key"
EOC
"$repl_bin" run --config "$tmp/sec.toml" 2>"$tmp/sec.log" &
pids+=($!)
sleep 0.5
"$repl_bin" run --config "$tmp/pri.toml" 2>"$tmp/pri.log" &
pids+=($!)
sleep 1

t() { echo "trtype:tcp traddr:127.0.0.1 trsvcid:$pport subnqn:$pnqn ns:$1"; }
run() { # label mode qd
  pctl replication set-mode 1 --mode "$2" --link-policy fail --sync-timeout-ms 20000 >/dev/null
  echo "== $1: unreplicated (A) vs $2-replicated (B), QD $3" | tee -a "$art/summary.txt"
  "$bin/ferrite-perf" compare --rounds "$rounds" -r "$(t 1)" -r "$(t 2)" -w randwrite -o 4k \
    -q "$3" -t "$secs" --warmup 1 --span 256m --no-progress --json "$art/$1.json" \
    | tee -a "$art/summary.txt"
  pctl --json replication status 1 | tee "$art/$1-status.json" | grep -E '"(lag_|sync_state|throughput)' | tee -a "$art/summary.txt"
}
: >"$art/summary.txt"
{ echo "machine: $(nproc) cores, $(uname -r), load before: $(cut -d' ' -f1-3 /proc/loadavg)"; echo "profile: $profile, replicator: $repl_bin"; } | tee -a "$art/summary.txt"
for s in $settings; do
  case $s in
    async-qd32) run async-qd32 async 32 ;;
    async-qd1) run async-qd1 async 1 ;;
    sync-qd1) run sync-qd1 sync 1 ;;
    sync-qd32) run sync-qd32 sync 32 ;;
    *) echo "unknown setting $s" >&2; exit 2 ;;
  esac
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$art/summary.txt"
echo "secondary replicator: $("$repl_bin" status --socket "$tmp/sec.status" | tr -d '\n ')" | tee -a "$art/summary.txt"

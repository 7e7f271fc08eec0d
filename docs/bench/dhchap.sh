#!/usr/bin/env bash
# Connect-time cost of DH-HMAC-CHAP: a ferrited with one RAM namespace, one host without
# secrets and one with a host and a controller key; each case connects COUNT times with the Rust
# host library (admin queue + IO_QUEUES I/O queues, enable, identify; every queue authenticates)
# and prints the median and p90. Cases: no authentication, then the null group and each FFDHE
# group (SHA-512, bidirectional). Usage: docs/bench/dhchap.sh [COUNT] [IO_QUEUES] [PROFILE]
set -euo pipefail
count=${1:-20}
ioq=${2:-1}
profile=${3:-release}
root=$(cd "$(dirname "$0")/../.." && pwd)
flag=$([[ $profile == release ]] && echo --release || echo "--profile $profile")
cargo build -q $flag -p ferrite-daemon --bins
cargo build -q $flag -p ferrite-host --example dhchap_connect
bin=$root/target/$([[ $profile == dev ]] && echo debug || echo "$profile")
dir=$(mktemp -d)
trap 'kill $(cat "$dir/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$dir"' EXIT
port=$((20000 + RANDOM % 20000))
nqn=nqn.2026-01.io.ferrite:bench-auth
hostnqn() { printf 'nqn.2014-08.org.nvmexpress:uuid:42424242-4242-4242-4242-4242424242%02x' "$1"; }
for k in host ctrl; do
  "$bin/ferritectl" dhchap gen-key --hmac 3 >"$dir/$k.key"
  chmod 600 "$dir/$k.key"
done
cat >"$dir/ferrite.toml" <<TOML
cores = "0"
listen = ["127.0.0.1:$port"]
[[key]]
name = "host"
path = "$dir/host.key"
[[key]]
name = "ctrl"
path = "$dir/ctrl.key"
[[bdev]]
name = "ram0"
kind = "malloc"
size = "16MiB"
block_size = 512
[[subsystem]]
nqn = "$nqn"
hosts = ["$(hostnqn 1)", "$(hostnqn 2)"]
host_keys = [{ host = "$(hostnqn 2)", dhchap_key = "host", dhchap_ctrlr_key = "ctrl" }]
namespaces = [{ nsid = 1, bdev = "ram0" }]
TOML
"$bin/ferrited" --config "$dir/ferrite.toml" --rpc-socket "$dir/rpc.sock" --no-pin 2>"$dir/log" &
echo $! >"$dir/pid"
for _ in $(seq 100); do [[ -S $dir/rpc.sock ]] && break; sleep 0.1; done
ctl() { "$bin/ferritectl" --socket "$dir/rpc.sock" "$@" >/dev/null; }
run() { local u=$1; shift; "$bin/examples/dhchap_connect" "127.0.0.1:$port" "$nqn" "$u" "$count" "$ioq" "$@"; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), profile $profile"
echo "no authentication:      $(run 1)"
for g in null ffdhe2048 ffdhe3072 ffdhe4096 ffdhe6144 ffdhe8192; do
  ctl dhchap config --digests sha512 --dhgroups "$g"
  printf '%-23s %s\n' "sha512 $g:" "$(run 2 "$dir/host.key" "$dir/ctrl.key")"
done

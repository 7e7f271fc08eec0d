#!/usr/bin/env bash
# Runs every cargo-fuzz target of the repository for a bounded time and prints the executions
# per target. Each fuzz crate (*/fuzz/Cargo.toml, its own workspace with a committed Cargo.lock)
# starts from its committed seeds (fuzz/seeds/<target>, read only); what a run discovers goes to
# fuzz/corpus/<target> (git-ignored). A crash fails the script; its input is left under
# fuzz/artifacts/<target>/.
#
#   FERRITE_FUZZ_SECS   seconds per target (default 25)
#   FERRITE_FUZZ_ONLY   run only targets whose name contains this
#
# `bash .ci/fuzz.sh --update-seeds` also merges what each run found into the committed seeds
# (libFuzzer -merge=1 keeps only inputs that add coverage), to be reviewed and committed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${FERRITE_FUZZ_SECS:-25}
only=${FERRITE_FUZZ_ONLY:-}
update_seeds=false
if [[ ${1:-} == --update-seeds ]]; then
  update_seeds=true
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# libFuzzer needs nightly flags; these machines have stable Rust only.
export RUSTC_BOOTSTRAP=1
# One target directory for every fuzz crate: the crates they share are built once.
export CARGO_TARGET_DIR="$root/target/fuzz"

summary=()
for manifest in $(git ls-files '*/fuzz/Cargo.toml'); do
  dir=$(dirname "$manifest")
  targets=$(cd "$dir" && cargo fuzz list)
  for t in $targets; do
    if [[ -n $only && $t != *"$only"* ]]; then
      continue
    fi
    echo "== fuzz $dir $t (${secs} s)"
    mkdir -p "$dir/corpus/$t" "$dir/seeds/$t"
    log=$(mktemp)
    if ! (cd "$dir" && cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10) >"$log" 2>&1; then
      tail -n 60 "$log"
      echo "fuzz: $t FAILED (input under $dir/artifacts/$t/)"
      exit 1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    rm -f "$log"
    if [[ -z $execs || $execs -eq 0 ]]; then
      echo "fuzz: $t executed nothing"
      exit 1
    fi
    line=$(printf '%-16s %12s executions %9s exec/s  cov %s' "$t" "$execs" "$rate" "${cov:-?}")
    echo "$line"
    summary+=("$line")
    if $update_seeds; then
      (cd "$dir" && cargo fuzz run "$t" "seeds/$t" "corpus/$t" -- -set_cover_merge=1) >/dev/null 2>&1
      echo "seeds/$t: $(ls "$dir/seeds/$t" | wc -l) files, $(cat "$dir/seeds/$t"/* | wc -c) bytes"
    fi
  done
done
echo "== fuzz summary (${secs} s per target)"
printf '%s\n' "${summary[@]}"

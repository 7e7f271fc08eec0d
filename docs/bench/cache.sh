#!/bin/bash
# docs/bench/cache.md: cached volume vs its backing store, same daemon, same run.
P=/work/wt/h14b/target/debug/ferrite-perf
CTL="/work/wt/h14b/target/debug/ferritectl --socket /tmp/h14b/sock"
T="trtype:tcp traddr:127.0.0.1 trsvcid:47211 subnqn:nqn.2026-01.io.ferrite:bench"
SPAN=71m   # the cache holds 16256 lines of 4 KiB = 63.5 MiB: about 89% of the span
for q in 1 8; do
 for i in 1 2; do
  # Warm: a sequential pass over the span leaves its last 63.5 MiB cached.
  $P -r "$T ns:1" -w read -o 128k -q 4 --span $SPAN -t 30 --no-progress > /dev/null
  h0=$($CTL --json cache list cached0 | grep -E '"read_(hits|misses)"' | tr -d ' ,\n')
  echo "== QD $q round $i: cached volume (ns 1)"
  $P -r "$T ns:1" -w randread -q $q --span $SPAN -t 10 --no-progress | grep -A1 IOPS | tail -1
  h1=$($CTL --json cache list cached0 | grep -E '"read_(hits|misses)"' | tr -d ' ,\n')
  echo "hits/misses before $h0 after $h1"
  echo "== QD $q round $i: backing store directly (ns 2)"
  $P -r "$T ns:2" -w randread -q $q --span $SPAN -t 10 --no-progress | grep -A1 IOPS | tail -1
 done
done

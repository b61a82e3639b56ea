# shellcheck shell=bash
# Sourced by compare.sh. Needs hyperfine and python3.
# Copied verbatim (psi, bench, table) from the steering repo's bench/lib.sh, the script library
# behind the ostree baseline numbers (research/baseline.md), so that our timings are taken
# exactly the same way; keep the two in sync.
#
# bench NAME PREPARE CMD: run CMD $RUNS times (after $WARMUP warm-up runs) with hyperfine,
# running PREPARE (may be "") and sync before every run; results go to $RES/NAME.json. Also notes
# the CPU pressure (share of time other tasks waited for a CPU) during the whole bench.
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}

psi() { awk '/^some/{sub("total=", "", $5); print $5}' /proc/pressure/cpu 2>/dev/null || echo 0; }

bench() {
  local name=$1 prep=$2 cmd=$3 p0 t0
  local args=(--runs "$RUNS" --warmup "$WARMUP" --style basic --export-json "$RES/$name.json"
              --prepare "${prep:+$prep && }sync")   # no writeback of the last run during this one
  echo ">> $name: $cmd" >&2
  p0=$(psi) t0=$(date +%s%N)
  hyperfine "${args[@]}" "$cmd" >>"$RES/hyperfine.log" 2>&1 \
    || { tail -20 "$RES/hyperfine.log" >&2; return 1; }
  echo "$(( ($(psi) - p0) * 100000 / ($(date +%s%N) - t0) ))" >"$RES/$name.psi"
  echo "$name" >>"$RES/order"
}

# table: "operation median min max stddev" (wall seconds), cpu_s (mean user+system seconds)
# and cpu_psi (% of the bench's time in which some task waited for a CPU: contention).
table() {
  python3 - "$RES" <<'EOF'
import json, os, sys
res = sys.argv[1]
print(f"{'operation':36} {'median_s':>9} {'min_s':>9} {'max_s':>9} {'stddev':>7} {'cpu_s':>8} {'cpu_psi':>7} runs")
for name in open(f"{res}/order").read().split():
    r = json.load(open(f"{res}/{name}.json"))["results"][0]
    psi = open(f"{res}/{name}.psi").read().strip() + "%" if os.path.exists(f"{res}/{name}.psi") else "-"
    print(f"{name:36} {r['median']:9.3f} {r['min']:9.3f} {r['max']:9.3f} {r['stddev'] or 0:7.3f} "
          f"{r['user'] + r['system']:8.3f} {psi:>7} {len(r['times'])}")
EOF
}

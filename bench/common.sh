# shellcheck shell=bash
# Sourced after lib.sh (which mirrors the steering repo's and stays verbatim) by deploy.sh,
# config.sh and extensions.sh: the helpers they share. Needs $RES, hyperfine, python3 and
# /usr/bin/time.

# prep DIR: the --prepare of a cold run on a fresh copy of DIR.v1 (the old copy moved to trash/,
# then sync and dropped caches).
prep() { echo "{ [ ! -e $1 ] || mv $1 trash/\$(date +%s%N); } && cp -a $1.v1 $1 && sync && echo 3 >/proc/sys/vm/drop_caches"; }

# rss NAME PREPARE CMD: peak RSS (KiB) of one run of CMD after PREPARE, in $RES/NAME.rss.
rss() { bash -c "$2" >/dev/null; /usr/bin/time -f %M -o "$RES/$1.rss" bash -c "$3" >/dev/null 2>>"$RES/rss.log" || true; }

# bench_n NAME CMD [PREPARE]: lib.sh's bench without a shell (-N), FAST_RUNS (30) runs and 3
# warm-ups: for commands of a few milliseconds, where the shell's start-up would dominate the
# time. PREPARE, if given, runs before each run, also without a shell (`bash -c '...'`).
bench_n() {
  local name=$1 cmd=$2 p0 t0 prep=()
  [ -z "${3:-}" ] || prep=(--prepare "$3")
  echo ">> $name: $cmd" >&2
  p0=$(psi) t0=$(date +%s%N)
  hyperfine -N --runs "${FAST_RUNS:-30}" --warmup 3 --style basic --export-json "$RES/$name.json" \
    "${prep[@]}" "$cmd" \
    >>"$RES/hyperfine.log" 2>&1 || { tail -20 "$RES/hyperfine.log" >&2; return 1; }
  echo "$(( ($(psi) - p0) * 100000 / ($(date +%s%N) - t0) ))" >"$RES/$name.psi"
  echo "$name" >>"$RES/order"
}

# ratios WIDTH ROWS: the side-by-side table, one line per row "NAME|REF|OURS|TARGET|MIN" (MIN:
# the smallest ratio REF/OURS that meets TARGET, a Python expression); rows whose benches did not
# run are skipped. Ratio = reference median / arbor median.
ratios() {
  python3 - "$RES" "$1" "$2" <<'PY'
import json, os, sys
res, width, rows = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(n):
    r = json.load(open(f"{res}/{n}.json"))["results"][0]
    p = f"{res}/{n}.rss"
    rss = int(open(p).read().split()[-1]) / 1024 if os.path.exists(p) else float("nan")
    psi = open(f"{res}/{n}.psi").read().strip()
    return r, rss, psi
t = lambda r: f"{r['median']:8.3f} {'(%.3f-%.3f)' % (r['min'], r['max']):>15}"
print(f"{'comparison':{width}} {'reference_s':>11} {'(min-max)':>15} {'arbor_s':>8} {'(min-max)':>15} {'ratio':>6} {'ref_MiB':>7} {'arbor_MiB':>9} {'psi%':>7}  target")
for line in rows.strip().splitlines():
    name, ref, ours, target, least = line.strip().split("|")
    if not os.path.exists(f"{res}/{ref}.json") or not os.path.exists(f"{res}/{ours}.json"):
        continue
    (o, orss, opsi), (a, arss, apsi) = load(ref), load(ours)
    ratio = o["median"] / a["median"]
    ok = ratio >= eval(least, {})
    print(f"{name:{width}} {t(o)} {t(a)} {ratio:6.2f} {orss:7.1f} {arss:9.1f} {opsi + '/' + apsi:>7}  {target} {'ok' if ok else 'MISS'}")
PY
}

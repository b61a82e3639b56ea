#!/usr/bin/env bash
# Times arbor against the reference ostree CLI in one session on the same corpus (CORPUS/v1 and
# CORPUS/v2 from the corpus scripts, see README.md): each operation is timed with hyperfine for
# ostree and then at once for arbor, then each tool's command runs once more, untimed, under
# /usr/bin/time for its peak RSS. Each tool has its own repos (WORKDIR/o/*, WORKDIR/r/*).
# Prints per operation: medians, min-max, ratio ostree/arbor (>1: arbor faster), peak RSS, and
# whether the targets are met; then whether both tools give the same v1 commit checksum.
# Env: RUNS=3 WARMUP=1 ARBOR=<repo>/target/release/arbor ONLY=ostree|arbor (default: both).
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || {
  echo "usage: $0 CORPUS [WORKDIR]  (env: RUNS=3 WARMUP=1 ARBOR=... ONLY=ostree|arbor)" >&2; exit 2; }
RUNS=${RUNS:-3} WARMUP=${WARMUP:-1} ONLY=${ONLY:-}
HERE=$(dirname "$(realpath "$0")")
ARBOR=$(realpath -m "${ARBOR:-$HERE/../target/release/arbor}")
C=$(realpath "$1")
W=$(realpath -m "${2:-$(mktemp -d)}")
. "$HERE/lib.sh"
case $ONLY in ""|ostree|arbor) ;; *) echo "ONLY must be ostree or arbor" >&2; exit 2 ;; esac
for t in ostree hyperfine python3 /usr/bin/time; do
  command -v $t >/dev/null || { echo "missing $t (apt-get install ostree hyperfine time)" >&2; exit 1; }
done
if [ "$ONLY" != ostree ] && [ ! -x "$ARBOR" ]; then
  echo "arbor binary not found at $ARBOR: run 'cargo build --release', set ARBOR=, or use ONLY=ostree" >&2
  exit 1
fi
[ -d "$C/v1" ] && [ -d "$C/v2" ] || { echo "$C has no v1/ and v2/" >&2; exit 1; }
mkdir -p "$W" && cd "$W"
python3 -c 'import os; open("x", "w"); os.setxattr("x", "user.t", b"1")' 2>/dev/null \
  || { echo "$W lacks user xattrs (needed by bare-user repos)" >&2; exit 1; }
RES=$W/results
rm -rf x o r trash "$RES" && mkdir -p o r trash "$RES"
trap 'rm -rf "$W/trash"' EXIT
# Before a run, the previous run's output is moved aside, not deleted: ext4 scans past
# recently deleted inodes (ext4 recently_deleted(), 30 s window) on every allocation, which
# after an `rm -rf` of thousands of files made either tool's next run up to 5x slower at
# random. The trash is deleted when the script ends.
aside() { echo "{ [ ! -e $1 ] || mv $1 trash/\$(date +%s%N); }"; }
B=os/bench
A="'$ARBOR'"
oinit() { echo "$(aside o/$1) && ostree init --repo=o/$1 --mode=$2"; }
ainit() { echo "$(aside r/$1) && $A init --repo r/$1 --mode $2"; }

# run TOOL OP PREPARE CMD: hyperfine timings, then PREPARE and one untimed run for the peak RSS
run() {
  [ -z "$ONLY" ] || [ "$ONLY" = "$1" ] || return 0
  bench "$1.$2" "$3" "$4"
  [ -z "$3" ] || bash -c "$3" >/dev/null
  sync
  /usr/bin/time -f %M -o "$RES/$1.$2.rss" bash -c "$4" >/dev/null 2>>"$RES/rss.log" \
    || { echo "$1 $2: untimed run failed" >&2; exit 1; }
}
# pair OP OSTREE_PREPARE OSTREE_CMD ARBOR_PREPARE ARBOR_CMD
pair() { run ostree "$1" "$2" "$3"; run arbor "$1" "$4" "$5"; echo "$1" >>"$RES/ops"; }

pair commit-v1-archive "$(oinit a archive)" "ostree commit --repo=o/a -b $B -s v1 --tree=dir='$C/v1'" \
  "$(ainit a archive)" "$A commit --repo r/a -b $B -s v1 '$C/v1'"
for d in o r; do [ ! -d $d/a ] || { rm -rf $d/a1 && cp -a $d/a $d/a1; }; done
pair commit-v2-archive "$(aside o/a) && cp -a o/a1 o/a" "ostree commit --repo=o/a -b $B -s v2 --tree=dir='$C/v2'" \
  "$(aside r/a) && cp -a r/a1 r/a" "$A commit --repo r/a -b $B -s v2 '$C/v2'"
pair commit-v1-bare-user "$(oinit bu bare-user)" "ostree commit --repo=o/bu -b $B -s v1 --tree=dir='$C/v1'" \
  "$(ainit bu bare-user)" "$A commit --repo r/bu -b $B -s v1 '$C/v1'"
pair checkout-v1-bare-user-hardlink "$(aside o/co)" "ostree checkout --repo=o/bu -U -H $B o/co" \
  "$(aside r/co)" "$A checkout --repo r/bu -U -H $B r/co"
# --disable-cache: otherwise ostree fills an uncompressed-objects cache in the archive repo on
# the first run and later runs only hardlink from it (as in the shared ostree-baseline.sh).
pair checkout-v1-archive-copy "$(aside o/co)" "ostree checkout --repo=o/a -U --disable-cache $B^ o/co" \
  "$(aside r/co)" "$A checkout --repo r/a -U $B^ r/co"
rm -rf o/co r/co
pair fsck-archive "" "ostree fsck --repo=o/a" "" "$A fsck --repo r/a"
pair diff-v1-v2 "" "ostree diff --repo=o/a $B^ $B" "" "$A diff --repo r/a $B^ $B"
pair prune-depth0 "$(aside o/p) && cp -a o/a o/p" "ostree prune --repo=o/p --refs-only --depth=0" \
  "$(aside r/p) && cp -a r/a r/p" "$A prune --repo r/p --refs-only --depth 0"

# Same inputs, same commit? Fixed timestamp and owners, fresh archive repos.
SAME="--timestamp=@1700000000 --owner-uid=0 --owner-gid=0 -s v1"
sanity=""
if [ "$ONLY" != arbor ]; then
  ostree init --repo=o/s --mode=archive
  os=$(ostree commit --repo=o/s -b $B $SAME --tree=dir="$C/v1")
  sanity="ostree $os"
fi
if [ "$ONLY" != ostree ]; then
  "$ARBOR" init --repo r/s --mode archive
  as=$("$ARBOR" commit --repo r/s -b $B $SAME "$C/v1" | tail -1)
  sanity="${sanity:+$sanity  }arbor $as"
fi
if [ -z "$ONLY" ]; then
  if [ "$os" = "$as" ]; then sanity="MATCH $sanity"; else sanity="MISMATCH $sanity"; fi
fi

{
  echo "# $(ostree --version | awk '/Version/{print "ostree", $2}' | tr -d "'")" \
    "arbor=$(git -C "$HERE" describe --always --dirty 2>/dev/null || echo no-commit) corpus=$(basename "$C")" \
    "runs=$RUNS warmup=$WARMUP cpus=$(nproc) $(date -u +%FT%TZ)"
  python3 - "$RES" <<'EOF'
import json, os, sys
res = sys.argv[1]
# minimum speedup (ostree time / arbor time) per operation; peak RSS must not exceed ostree's
# ("~": above it, but by less than 5%, which is the run-to-run noise of /usr/bin/time %M).
# cpu_psi%: ostree/arbor share of the bench's time in which some task waited for a CPU (load).
target = {"commit-v1-archive": 3, "commit-v2-archive": 3, "commit-v1-bare-user": 2,
          "checkout-v1-bare-user-hardlink": 2, "checkout-v1-archive-copy": 2, "fsck-archive": 3}
def load(tool, op):
    p = f"{res}/{tool}.{op}"
    if not os.path.exists(p + ".json"):
        return None, None
    r = json.load(open(p + ".json"))["results"][0]
    return r, int(open(p + ".rss").read().split()[-1]) / 1024
print(f"{'operation':31} {'ostree_s':>8} {'(min-max)':>15} {'arbor_s':>8} {'(min-max)':>15} {'ratio':>6}"
      f" {'ostree_MiB':>10} {'arbor_MiB':>9} {'cpu_psi%':>9}  target")
for op in open(f"{res}/ops").read().split():
    (o, orss), (a, arss) = load("ostree", op), load("arbor", op)
    t = lambda r: f"{r['median']:8.3f} {'(%.3f-%.3f)' % (r['min'], r['max']):>15}" if r else f"{'-':>8} {'':15}"
    m = lambda x: f"{x:.1f}" if x is not None else "-"
    psi = "/".join(open(f"{res}/{t}.{op}.psi").read().strip() if os.path.exists(f"{res}/{t}.{op}.psi")
                   else "-" for t in ("ostree", "arbor"))
    ratio = o["median"] / a["median"] if o and a else None
    goal = []
    if op in target:
        goal.append(f">={target[op]}x " + ("-" if ratio is None else "ok" if ratio >= target[op] else "MISS"))
    if orss is not None and arss is not None:
        goal.append("rss " + ("ok" if arss <= orss else "~" if arss <= orss * 1.05 else "MISS"))
    print(f"{op:31} {t(o)} {t(a)} {m(ratio):>6} {m(orss):>10} {m(arss):>9} {psi:>9}  {', '.join(goal)}")
EOF
  echo "same-input v1 commit (archive): $sanity"
} | tee "$RES/compare.txt"

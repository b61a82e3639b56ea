#!/usr/bin/env bash
# Times `arbor deploy` against `ostree admin deploy` side by side: the corpus's v2 deployed onto
# a sysroot holding v1 (same commits, same sysroot layout, one run). Both commits get the same
# fake kernel (usr/lib/modules/6.1.0-bench/{vmlinuz,initramfs.img}, 16 MiB of random bytes);
# the corpus's /etc is committed as /usr/etc. Each timed run starts
# from a copy of a sysroot where v1 is deployed, after `sync` and dropped caches (as root).
# Both tools seal deployments with chattr +i; copies (cp -a) do not carry the flag, and the
# workdir cleanup clears it. Needs root (bare repos).
# Env: RUNS=5 WARMUP=1 ARBOR=<repo>/target/release/arbor LOOPFS=1
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 CORPUS [WORKDIR]  (env: RUNS WARMUP ARBOR)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "$0: needs root (sysroot repositories are bare)" >&2; exit 1; }
RUNS=${RUNS:-5} WARMUP=${WARMUP:-1}
HERE=$(dirname "$(realpath "$0")")
ARBOR=$(realpath -m "${ARBOR:-$HERE/../target/release/arbor}")
C=$(realpath "$1")
W=$(realpath -m "${2:-$(mktemp -d)}")
. "$HERE/lib.sh"
. "$HERE/common.sh"
for t in ostree hyperfine python3 /usr/bin/time; do
  command -v $t >/dev/null || { echo "missing $t (apt-get install ostree hyperfine time)" >&2; exit 1; }
done
[ -x "$ARBOR" ] || { echo "arbor binary not found at $ARBOR: run 'cargo build --release'" >&2; exit 1; }
[ -d "$C/v1" ] && [ -d "$C/v2" ] || { echo "$C has no v1/ and v2/" >&2; exit 1; }
mkdir -p "$W"
RES=$W/results
# A fresh journaled ext4 (see pull.sh): the root ext4 here has no journal.
if [ "${LOOPFS:-1}" = 1 ]; then
  mountpoint -q "$W/fs" && umount "$W/fs"
  rm -f "$W/fs.img" && truncate -s 16G "$W/fs.img" && mkfs.ext4 -q -F "$W/fs.img"
  mkdir -p "$W/fs" && mount -o loop "$W/fs.img" "$W/fs"
  trap 'cd "$W"; ! mountpoint -q "$W/fs" || umount "$W/fs"' EXIT
  cd "$W/fs"
else
  cd "$W"
  find . -xdev -type d -path '*/ostree/deploy/*/deploy/*' -prune -exec chattr -i {} + 2>/dev/null || true
  rm -rf src o r o.v1 r.v1 trash tree-v1 tree-v2 kernel
fi
rm -rf "$RES" && mkdir -p "$RES" trash
B=testos/bench A="'$ARBOR'"

# The source repository: v1 and v2 with the same kernel.
K=kernel/usr/lib/modules/6.1.0-bench
mkdir -p $K && head -c 12M /dev/urandom >$K/vmlinuz && head -c 4M /dev/urandom >$K/initramfs.img
ostree init --repo=src --mode=bare
# Defaults in /usr/etc, as image-based systems ship them (ostree deploys /etc only from a commit's
# /usr/etc: it fails on a tree with /etc alone).
for v in v1 v2; do rm -rf tree-$v && cp -a "$C/$v" tree-$v && mv tree-$v/etc tree-$v/usr/etc; done
V1=$(ostree commit --repo=src -b $B -s v1 --add-metadata-string=version=1 --timestamp=@1700000000 \
  --tree=dir=tree-v1 --tree=dir=kernel)
V2=$(ostree commit --repo=src -b $B -s v2 --add-metadata-string=version=2 --timestamp=@1700000100 \
  --tree=dir=tree-v2 --tree=dir=kernel)

# A sysroot per tool with both commits pulled and v1 deployed: the template of every run.
mk() { # TOOL DIR
  # Refs keep both commits from the prune that ends each deploy.
  if [ $1 = ostree ]; then
    mkdir -p $2 && ostree admin init-fs $2 >/dev/null
    ostree admin os-init testos --sysroot=$2 >/dev/null
    ostree --repo=$2/ostree/repo pull-local src $V1 $V2 >/dev/null
    ostree --repo=$2/ostree/repo refs --create=bench/v1 $V1 && ostree --repo=$2/ostree/repo refs --create=bench/v2 $V2
    ostree admin deploy --sysroot=$2 --os=testos --karg=root=LABEL=rootfs $V1 >/dev/null
  else
    "$ARBOR" admin init-fs $2 && "$ARBOR" admin os-init --sysroot $2 testos >/dev/null
    "$ARBOR" pull-local --repo $2/ostree/repo src $V1 $V2 >/dev/null
    ostree --repo=$2/ostree/repo refs --create=bench/v1 $V1 && ostree --repo=$2/ostree/repo refs --create=bench/v2 $V2
    "$ARBOR" deploy --sysroot $2 --os testos --karg=root=LABEL=rootfs $V1 >/dev/null
  fi
}
mk ostree o.v1 && mk arbor r.v1
run() { # TOOL PREPARE CMD
  bench "$1.deploy-v2" "$2" "$3"
  bash -c "$2" >/dev/null
  /usr/bin/time -f %M -o "$RES/$1.rss" bash -c "$3" >/dev/null 2>>"$RES/rss.log"
}
run ostree "$(prep o)" "ostree admin deploy --sysroot=o --os=testos $V2"
run arbor "$(prep r)" "$A deploy --sysroot r --os testos $V2"
# Same result: both deployed v2 first, with identical trees and boot entries.
for d in o r; do
  [ -d $d/ostree/deploy/testos/deploy/$V2.0 ] || { echo "$d: v2 not deployed" >&2; exit 1; }
done
diff <(cd o/boot/loader/entries && tail -n +1 *) <(cd r/boot/loader/entries && tail -n +1 *) \
  || { echo "boot entries differ" >&2; exit 1; }
diff -r --no-dereference o/ostree/deploy/testos/deploy/$V2.0 r/ostree/deploy/testos/deploy/$V2.0 >/dev/null \
  || { echo "deployment trees differ" >&2; exit 1; }
"$ARBOR" fsck --repo r/ostree/repo >/dev/null

{
  echo "# $(ostree --version | awk '/Version/{print "ostree", $2}' | tr -d "'")" \
    "arbor=$(git -C "$HERE" describe --always --dirty 2>/dev/null || echo no-commit) corpus=$(basename "$C")" \
    "runs=$RUNS warmup=$WARMUP cpus=$(nproc) $(date -u +%FT%TZ)"
  python3 - "$RES" <<'PY'
import json, sys
res = sys.argv[1]
def load(tool):
    r = json.load(open(f"{res}/{tool}.deploy-v2.json"))["results"][0]
    return r, int(open(f"{res}/{tool}.rss").read().split()[-1]) / 1024
(o, orss), (a, arss) = load("ostree"), load("arbor")
t = lambda r: f"{r['median']:8.3f} {'(%.3f-%.3f)' % (r['min'], r['max']):>15}"
ratio = o["median"] / a["median"]
print(f"{'operation':16} {'ostree_s':>8} {'(min-max)':>15} {'arbor_s':>8} {'(min-max)':>15} {'ratio':>6} {'ostree_MiB':>10} {'arbor_MiB':>9}  target")
print(f"{'deploy-v1-v2':16} {t(o)} {t(a)} {ratio:6.1f} {orss:10.1f} {arss:9.1f}  >=2x {'ok' if ratio >= 2 else 'MISS'}")
PY
} | tee "$RES/deploy.txt"

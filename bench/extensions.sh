#!/usr/bin/env bash
# Extensions, side by side in one run, on the Debian corpus's v1 committed as in deploy.sh (its
# /etc as /usr/etc, plus the same 16 MiB fake kernel), and a 200-file extension (a tool, its unit,
# an extension-release file matching Debian 12, and 197 data files under /usr/share), both
# committed by ostree into one bare repository:
#  (a) composing the extension onto the base, warm cache, in that repository:
#      `arbor extension compose --repo R BASE benchext=EXT` vs
#      (i)  `ostree checkout` of the base, `ostree checkout --union` of the extension on it, then
#           `ostree commit` of the result (the checkout-and-recommit route, as the issue words it:
#           no --link-checkout-speedup; the script checks its root equals the composed one), and
#      (ii) `ostree commit --tree=ref=BASE --tree=ref=EXT` with the composed commit's metadata
#           (which must give arbor's checksum: the script checks it);
#      each composition twice: "first" (before each run, --prepare deletes the composed commit
#      object and its refs, arbor/composed/HEX and arbor/bases/HEX, so both tools write the
#      commit) and repeated (the composition is already there: arbor finds it complete and
#      writes nothing, ostree rewrites nothing but still builds the tree and runs a transaction);
#  (b) end to end: `arbor extension add` (compose + deploy) vs `ostree admin deploy` of the
#      equivalent precomposed commit (the same checksum), each on a fresh copy of its tool's
#      sysroot with v1 deployed, after `sync` and dropped caches.
# Targets: (a)(i) >= 20x faster, (a)(ii) >= 3x faster, (b) >= 2x faster. Needs root (bare repos).
# Env: RUNS=5 WARMUP=1 FAST_RUNS=30 ARBOR=<repo>/target/release/arbor LOOPFS=1 PARTS="compose add"
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
[ -d "$C/v1" ] || { echo "$C has no v1/" >&2; exit 1; }
mkdir -p "$W"
RES=$W/results
if [ "${LOOPFS:-1}" = 1 ]; then   # a fresh journaled ext4, as deploy.sh
  mountpoint -q "$W/fs" && umount "$W/fs"
  rm -f "$W/fs.img" && truncate -s 8G "$W/fs.img" && mkfs.ext4 -q -F "$W/fs.img"
  mkdir -p "$W/fs" && mount -o loop "$W/fs.img" "$W/fs"
  trap 'cd "$W"; ! mountpoint -q "$W/fs" || umount "$W/fs"' EXIT
  cd "$W/fs"
else
  cd "$W"
  find . -xdev -type d -path '*/ostree/deploy/*/deploy/*' -prune -exec chattr -i {} + 2>/dev/null || true
  rm -rf src o r o.v1 r.v1 trash tree-v1 kernel ext co
fi
rm -rf "$RES" && mkdir -p "$RES" trash
B=testos/bench A="'$ARBOR'" TS=1700000000

K=kernel/usr/lib/modules/6.1.0-bench
mkdir -p $K && head -c 12M /dev/urandom >$K/vmlinuz && head -c 4M /dev/urandom >$K/initramfs.img
ostree init --repo=src --mode=bare
rm -rf tree-v1 && cp -a "$C/v1" tree-v1 && mv tree-v1/etc tree-v1/usr/etc
V1=$(ostree commit --repo=src -b $B -s v1 --add-metadata-string=version=1 --timestamp=@$TS \
  --tree=dir=tree-v1 --tree=dir=kernel)

# The extension: 200 files, some in directories the base has (usr/bin, the systemd units), most
# in new ones; its extension-release file matches the base's os-release (ID=debian VERSION_ID=12).
rm -rf ext && mkdir -p ext/usr/bin ext/usr/lib/systemd/system ext/usr/lib/extension-release.d
printf '#!/bin/sh\necho benchext\n' >ext/usr/bin/benchext && chmod 755 ext/usr/bin/benchext
printf '[Unit]\nDescription=benchext\n[Service]\nExecStart=/usr/bin/benchext\n' \
  >ext/usr/lib/systemd/system/benchext.service
printf 'ID=debian\nVERSION_ID=12\n' >ext/usr/lib/extension-release.d/extension-release.benchext
for d in $(seq -w 0 14); do
  mkdir -p ext/usr/share/benchext/d$d
  for f in $(seq -w 0 13); do
    [ $((10#$d * 14 + 10#$f)) -lt 197 ] || break
    head -c $((1024 + 10#$f * 97)) /dev/urandom >ext/usr/share/benchext/d$d/f$f
  done
done
nfiles=$(find ext -type f | wc -l)
[ "$nfiles" = 200 ] || { echo "the extension has $nfiles files, not 200" >&2; exit 1; }
EXT=$(ostree commit --repo=src -b bench/benchext -s benchext --owner-uid=0 --owner-gid=0 \
  --timestamp=@$TS --tree=dir=ext)

# The composed commit as ostree makes it (the plan's flags; arbor must give the same checksum).
tree_ref() {
  echo "ostree commit --repo=src --orphan --no-bindings --parent=$V1 --timestamp=@$TS" \
    "-s 'Extensions: benchext' --add-metadata-string=version=1" \
    "--add-metadata-string=arbor.base-commit=$V1" \
    "--add-metadata=\"arbor.extensions=['benchext:$EXT']\" --tree=ref=$V1 --tree=ref=$EXT"
}
COMPOSED=$(eval "$(tree_ref)")
OURS=$("$ARBOR" extension compose --repo src $V1 benchext=$EXT)
[ "$OURS" = "$COMPOSED" ] || { echo "arbor composed $OURS, ostree $COMPOSED" >&2; exit 1; }

mk() { # TOOL DIR: v1 deployed; the extension (arbor) or the composed commit (ostree) pulled
  if [ $1 = ostree ]; then
    mkdir -p $2 && ostree admin init-fs $2 >/dev/null && ostree admin os-init testos --sysroot=$2 >/dev/null
    ostree --repo=$2/ostree/repo pull-local src $V1 $COMPOSED >/dev/null
    ostree --repo=$2/ostree/repo refs --create=bench/v1 $V1
    ostree --repo=$2/ostree/repo refs --create=bench/composed $COMPOSED
    ostree admin deploy --sysroot=$2 --os=testos --karg=root=LABEL=rootfs $V1 >/dev/null
  else
    "$ARBOR" admin init-fs $2 && "$ARBOR" admin os-init --sysroot $2 testos >/dev/null
    "$ARBOR" pull-local --repo $2/ostree/repo src $V1 $EXT >/dev/null
    ostree --repo=$2/ostree/repo refs --create=bench/v1 $V1
    ostree --repo=$2/ostree/repo refs --create=bench/benchext $EXT
    "$ARBOR" deploy --sysroot $2 --os testos --karg=root=LABEL=rootfs $V1 >/dev/null
  fi
}
part() { [[ " ${PARTS:-compose add} " == *" $1 "* ]]; }

# (a) composition, warm cache, in the same repository (the two that take milliseconds without a
# shell: hyperfine -N, FAST_RUNS runs).
if part compose; then
bench ostree.checkout-union-commit "rm -rf co" \
  "ostree checkout --repo=src $V1 co && ostree checkout --repo=src --union $EXT co && ostree commit --repo=src --orphan --timestamp=@$TS -s recommit --tree=dir=co"
rss ostree.checkout-union-commit "rm -rf co" \
  "ostree checkout --repo=src $V1 co && ostree checkout --repo=src --union $EXT co && ostree commit --repo=src --orphan --timestamp=@$TS -s recommit --tree=dir=co"
# The checkout route's result has the composed commit's root (dirtree and dirmeta).
rm -rf co
ROUTE=$(bash -c "ostree checkout --repo=src $V1 co && ostree checkout --repo=src --union $EXT co && ostree commit --repo=src --orphan --timestamp=@$TS -s recommit --tree=dir=co")
root() { ostree ls --repo=src -d -C "$1" / | awk '{print $5, $6}'; }
[ "$(root "$ROUTE")" = "$(root "$COMPOSED")" ] \
  || { echo "the checkout route's root $(root "$ROUTE") is not the composed $(root "$COMPOSED")" >&2; exit 1; }
rm -rf co
# First composition: the composed commit object and its refs are removed before each run.
obj=src/objects/${COMPOSED:0:2}/${COMPOSED:2}.commit
unwrite="bash -c 'rm -f $obj src/refs/heads/arbor/composed/$COMPOSED src/refs/heads/arbor/bases/$V1'"
bench_n ostree.tree-ref-first "$(tree_ref)" "$unwrite"
rss ostree.tree-ref-first "$unwrite" "$(tree_ref)"
bench_n arbor.compose-first "$A extension compose --repo src $V1 benchext=$EXT" "$unwrite"
rss arbor.compose-first "$unwrite" "$A extension compose --repo src $V1 benchext=$EXT"
[ -e "$obj" ] && [ -e src/refs/heads/arbor/composed/$COMPOSED ] && [ -e src/refs/heads/arbor/bases/$V1 ] \
  || { echo "arbor extension compose did not write the commit and its refs" >&2; exit 1; }
# Repeated: the composition is already in the repository.
bench_n ostree.tree-ref "$(tree_ref)"
rss ostree.tree-ref "" "$(tree_ref)"
bench_n arbor.compose "$A extension compose --repo src $V1 benchext=$EXT"
rss arbor.compose "" "$A extension compose --repo src $V1 benchext=$EXT"
fi

# (b) extension add (compose + deploy) vs deploying the precomposed commit.
if part add; then
mk ostree o.v1 && mk arbor r.v1
bench ostree.deploy-composed "$(prep o)" "ostree admin deploy --sysroot=o --os=testos $COMPOSED"
rss ostree.deploy-composed "$(prep o)" "ostree admin deploy --sysroot=o --os=testos $COMPOSED"
bench arbor.extension-add "$(prep r)" "$A extension add --sysroot r bench/benchext"
rss arbor.extension-add "$(prep r)" "$A extension add --sysroot r bench/benchext"
got=$("$ARBOR" status --json --sysroot r | python3 -c 'import json,sys; print(json.load(sys.stdin)["deployments"][0]["checksum"])')
[ "$got" = "$COMPOSED" ] || { echo "extension add deployed $got, not $COMPOSED" >&2; exit 1; }
[ -x r/ostree/deploy/testos/deploy/$COMPOSED.0/usr/bin/benchext ] \
  || { echo "extension add did not deploy the tool" >&2; exit 1; }
fi

{
  echo "# $(ostree --version | awk '/Version/{print "ostree", $2}' | tr -d "'")" \
    "arbor=$(git -C "$HERE" describe --always --dirty 2>/dev/null || echo no-commit) corpus=$(basename "$C")" \
    "runs=$RUNS warmup=$WARMUP cpus=$(nproc) extension_files=$nfiles composed=$COMPOSED $(date -u +%FT%TZ)"
  ratios 38 "
    first compose vs checkout+union+commit|ostree.checkout-union-commit|arbor.compose-first|>=20x faster|20
    first compose vs first --tree=ref|ostree.tree-ref-first|arbor.compose-first|>=3x faster|3
    compose vs checkout+union+commit|ostree.checkout-union-commit|arbor.compose|>=20x faster|20
    repeated compose vs --tree=ref|ostree.tree-ref|arbor.compose|>=3x faster|3
    extension add vs admin deploy|ostree.deploy-composed|arbor.extension-add|>=2x faster|2"
} | tee "$RES/extensions.txt"

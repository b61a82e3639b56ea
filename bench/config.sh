#!/usr/bin/env bash
# Declared configuration, side by side in one run, on the Debian corpus's v1 deployed as in
# deploy.sh (its /etc as /usr/etc, plus the same 16 MiB fake kernel), one sysroot per tool:
#  (a) `arbor config apply` of a 50-file Ignition config vs `ostree admin deploy` of the same
#      commit, each from a fresh copy of its sysroot after `sync` and dropped caches;
#  (b) `arbor drift` of the whole deployment (/etc plus all of /usr re-hashed) vs sha256 of the
#      deployment's bytes (usr/ and etc/) on 2 cores (find | xargs -P2 sha256sum, and the same with
#      openssl dgst, which uses the CPU's SHA extensions as arbor does), warm cache;
#  (c) `arbor drift --etc-only` vs `ostree admin config-diff`, on the same sysroot, warm cache.
# Targets: (a) >= 2x faster, (b) within 1.5x, (c) >= 3x faster. Needs root (bare repos).
# Env: RUNS=5 WARMUP=1 FAST_RUNS=30 ARBOR=<repo>/target/release/arbor LOOPFS=1 PARTS="apply drift"
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
for t in ostree hyperfine python3 openssl /usr/bin/time; do
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
  rm -rf src o r o.v1 r.v1 trash tree-v1 kernel
fi
rm -rf "$RES" && mkdir -p "$RES" trash
B=testos/bench A="'$ARBOR'"

K=kernel/usr/lib/modules/6.1.0-bench
mkdir -p $K && head -c 12M /dev/urandom >$K/vmlinuz && head -c 4M /dev/urandom >$K/initramfs.img
ostree init --repo=src --mode=bare
rm -rf tree-v1 && cp -a "$C/v1" tree-v1 && mv tree-v1/etc tree-v1/usr/etc
V1=$(ostree commit --repo=src -b $B -s v1 --add-metadata-string=version=1 --timestamp=@1700000000 \
  --tree=dir=tree-v1 --tree=dir=kernel)

# 50 files under /etc, inline (base64 data URLs), as an admin's config would declare them.
python3 - >config.ign <<'PY'
import base64, json
files = [{"path": f"/etc/bench/conf-{i:02d}.conf", "mode": 0o644, "overwrite": True,
          "contents": {"source": "data:;base64," + base64.b64encode(
              (f"# bench file {i}\n" + f"key{i} = value{i}\n" * 20).encode()).decode()}}
         for i in range(50)]
print(json.dumps({"ignition": {"version": "3.4.0"}, "storage": {"files": files}}))
PY

mk() { # TOOL DIR: v1 pulled and deployed
  if [ $1 = ostree ]; then
    mkdir -p $2 && ostree admin init-fs $2 >/dev/null && ostree admin os-init testos --sysroot=$2 >/dev/null
    ostree --repo=$2/ostree/repo pull-local src $V1 >/dev/null
    ostree --repo=$2/ostree/repo refs --create=bench/v1 $V1
    ostree admin deploy --sysroot=$2 --os=testos --karg=root=LABEL=rootfs $V1 >/dev/null
  else
    "$ARBOR" admin init-fs $2 && "$ARBOR" admin os-init --sysroot $2 testos >/dev/null
    "$ARBOR" pull-local --repo $2/ostree/repo src $V1 >/dev/null
    ostree --repo=$2/ostree/repo refs --create=bench/v1 $V1
    "$ARBOR" deploy --sysroot $2 --os testos --karg=root=LABEL=rootfs $V1 >/dev/null
  fi
}
mk ostree o.v1 && mk arbor r.v1
part() { [[ " ${PARTS:-apply drift} " == *" $1 "* ]]; }
# (a) a deploy plus 50 files vs a deploy.
if part apply; then
bench ostree.deploy "$(prep o)" "ostree admin deploy --sysroot=o --os=testos $V1"
rss ostree.deploy "$(prep o)" "ostree admin deploy --sysroot=o --os=testos $V1"
bench arbor.apply "$(prep r)" "$A config apply --sysroot r config.ign"
rss arbor.apply "$(prep r)" "$A config apply --sysroot r config.ign"
[ "$(cat r/ostree/deploy/testos/deploy/$V1.1/etc/bench/conf-49.conf | head -1)" = "# bench file 49" ] \
  || { echo "config apply did not write the files" >&2; exit 1; }
fi

# (b) and (c): on a fresh copy of the arbor sysroot, which must be clean (drift exits 0).
D=d/ostree/deploy/testos/deploy/$V1.0 bytes=-
if part drift; then
rm -rf d && cp -a r.v1 d
"$ARBOR" drift --sysroot d >/dev/null || { echo "arbor drift: the fresh deployment is not clean" >&2; exit 1; }
bench sha256.2cores "" "cd $D && find usr etc -type f -print0 | xargs -0 -P2 -n64 sha256sum >/dev/null"
# coreutils' sha256sum does not use the CPU's SHA extensions; openssl (like arbor's ring) does.
bench openssl.2cores "" "cd $D && find usr etc -type f -print0 | xargs -0 -P2 -n64 openssl dgst -sha256 >/dev/null"
bench arbor.drift "" "$A drift --sysroot d"
rss arbor.drift "" "$A drift --sysroot d"
bench_n ostree.config-diff "ostree admin config-diff --sysroot=d --os=testos"
rss ostree.config-diff "" "ostree admin config-diff --sysroot=d --os=testos"
bench_n arbor.drift-etc "$A drift --sysroot d --etc-only"
rss arbor.drift-etc "" "$A drift --sysroot d --etc-only"
bytes=$(cd $D && find usr etc -type f -print0 | du -cb --files0-from=- | tail -1 | cut -f1)
fi

{
  echo "# $(ostree --version | awk '/Version/{print "ostree", $2}' | tr -d "'")" \
    "arbor=$(git -C "$HERE" describe --always --dirty 2>/dev/null || echo no-commit) corpus=$(basename "$C")" \
    "runs=$RUNS warmup=$WARMUP cpus=$(nproc) deployment_bytes=$bytes $(date -u +%FT%TZ)"
  ratios 32 "
    apply-50-files vs deploy|ostree.deploy|arbor.apply|>=2x faster|2
    drift vs sha256sum 2 cores|sha256.2cores|arbor.drift|within 1.5x|1 / 1.5
    drift vs openssl 2 cores|openssl.2cores|arbor.drift|within 1.5x|1 / 1.5
    drift --etc-only vs config-diff|ostree.config-diff|arbor.drift-etc|>=3x faster|3"
} | tee "$RES/config.txt"

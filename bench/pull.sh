#!/usr/bin/env bash
# Times `arbor pull` against `ostree pull` over a real nginx on 127.0.0.1, in one session on the
# same corpus (CORPUS/v1 and CORPUS/v2, see README.md). The served repository is an archive repo
# holding v1 and v2 of os/bench (built by ostree, with `ostree summary -u`, as a typical ostree
# server). Operations: v1 from empty and v1->v2, into archive and bare-user repos. Each is timed
# with hyperfine for ostree and then at once for arbor; then each tool runs once more, untimed,
# under /usr/bin/time for its peak RSS, and nginx's access log of that run gives the requests
# and body bytes each tool needed. Prints medians, min-max, ratio ostree/arbor (>1: arbor
# faster), RSS, requests, bytes and whether the targets are met.
# TLS=1 serves https (nginx offers HTTP/2) with a CA made here, which both tools trust
# through the remote's tls-ca-path.
# Env: RUNS=3 WARMUP=1 ARBOR=<repo>/target/release/arbor MODES="archive bare-user" LOOPFS=1 COLD=1 TLS=0
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 CORPUS [WORKDIR]  (env: RUNS WARMUP ARBOR)" >&2; exit 2; }
RUNS=${RUNS:-3} WARMUP=${WARMUP:-1} ONLY=
HERE=$(dirname "$(realpath "$0")")
ARBOR=$(realpath -m "${ARBOR:-$HERE/../target/release/arbor}")
C=$(realpath "$1")
W=$(realpath -m "${2:-$(mktemp -d)}")
. "$HERE/lib.sh"
for t in ostree nginx hyperfine python3 /usr/bin/time; do
  command -v $t >/dev/null || { echo "missing $t (apt-get install ostree nginx-light hyperfine time)" >&2; exit 1; }
done
[ -x "$ARBOR" ] || { echo "arbor binary not found at $ARBOR: run 'cargo build --release'" >&2; exit 1; }
[ -d "$C/v1" ] && [ -d "$C/v2" ] || { echo "$C has no v1/ and v2/" >&2; exit 1; }
mkdir -p "$W"
RES=$W/results
mkdir -p "$RES"
# The repositories live on a fresh journaled ext4 (a loop-mounted image, as root; LOOPFS=0 to
# disable): this VM's root ext4 has no journal, so its inode allocator scans recently freed
# inodes (recently_deleted()) and every deletion slows the next runs of both tools at random.
if [ "${LOOPFS:-1}" = 1 ] && [ "$(id -u)" = 0 ]; then
  mountpoint -q "$W/fs" && umount "$W/fs"
  rm -f "$W/fs.img" && truncate -s 16G "$W/fs.img" && mkfs.ext4 -q -F "$W/fs.img"
  mkdir -p "$W/fs" && mount -o loop "$W/fs.img" "$W/fs"
  cd "$W/fs"
else
  cd "$W"
fi
# Deleting thousands of files makes ext4 scan the recently freed inodes on every allocation for
# the next ~30 s (recently_deleted()), slowing either tool's next run up to 5x: after deleting a
# previous run's repos, wait that out. Within the run, outputs are moved aside, not deleted.
if [ -e o ] || [ -e r ] || [ -e trash ]; then rm -rf o r trash && sleep 31; fi
rm -rf "$RES" && mkdir -p o r trash "$RES"
aside() { echo "{ [ ! -e $1 ] || mv $1 trash/\$(date +%s%N); }"; }
B=os/bench
A="'$ARBOR'"

# The served repository (built once per workdir).
if [ ! -e srv/.done ]; then
  rm -rf srv && ostree init --repo=srv --mode=archive
  ostree commit --repo=srv -b $B -s v1 --timestamp=@1700000000 --tree=dir="$C/v1" >srv/v1
  ostree commit --repo=srv -b $B -s v2 --timestamp=@1700000100 --tree=dir="$C/v2" >srv/v2
  touch srv/.done
fi
V1=$(cat srv/v1) V2=$(cat srv/v2)
# serve_at COMMIT: the ref (and the summary) name COMMIT.
serve_at() { echo "$1" >srv/refs/heads/$B && ostree summary --repo=srv -u; }

# nginx on a free port, its own prefix; stopped at exit.
NG=$W/nginx && rm -rf "$NG" && mkdir -p "$NG/tmp"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
USER_LINE=""; [ "$(id -u)" = 0 ] && USER_LINE="user root;"
SCHEME=http LISTEN="listen 127.0.0.1:$PORT;" TLS_OPT= CURL_OPT=
if [ "${TLS:-0}" = 1 ]; then
  ossl() { openssl "$@" -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes 2>/dev/null; }
  ossl req -x509 -days 2 -subj "/CN=bench CA" -keyout "$NG/ca.key" -out "$NG/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
  ossl req -subj /CN=127.0.0.1 -keyout "$NG/srv.key" -out "$NG/srv.csr"
  printf 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n' >"$NG/srv.ext"
  openssl x509 -req -in "$NG/srv.csr" -CA "$NG/ca.pem" -CAkey "$NG/ca.key" -set_serial 2 -days 2 \
    -extfile "$NG/srv.ext" -out "$NG/srv.pem" 2>/dev/null
  SCHEME=https TLS_OPT="--set=tls-ca-path=$NG/ca.pem" CURL_OPT="--cacert $NG/ca.pem"
  LISTEN="listen 127.0.0.1:$PORT ssl http2; ssl_certificate $NG/srv.pem; ssl_certificate_key $NG/srv.key;"
fi
cat >"$NG/nginx.conf" <<EOF
$USER_LINE
worker_processes 2;
pid $NG/nginx.pid;
error_log $NG/error.log;
events { worker_connections 1024; }
http {
  log_format bench '\$request_method \$uri \$status \$body_bytes_sent';
  access_log $NG/access.log bench;
  client_body_temp_path $NG/tmp; proxy_temp_path $NG/tmp; fastcgi_temp_path $NG/tmp;
  uwsgi_temp_path $NG/tmp; scgi_temp_path $NG/tmp;
  sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_requests 100000;
  types { } default_type application/octet-stream;
  server { $LISTEN root $PWD/srv; autoindex off; location / { try_files \$uri =404; } }
}
EOF
nginx -p "$NG" -c "$NG/nginx.conf"
trap 'kill $(cat "$NG/nginx.pid") 2>/dev/null; rm -rf trash; cd "$W"; ! mountpoint -q "$W/fs" || umount "$W/fs"' EXIT
URL=$SCHEME://127.0.0.1:$PORT/
for _ in $(seq 50); do curl $CURL_OPT -s -o /dev/null "$URL" && break; sleep 0.1; done

# Before every run of either tool, as root (COLD=0 to disable): write back and drop the page,
# dentry and inode caches, then read the served repository and both tools back in. Each run then
# starts from the same state; without it, caches grown by the previous runs (tens of thousands of
# inodes) slowed each later run, so results depended on the order of the operations.
COLDPREP=
if [ "${COLD:-1}" = 1 ] && [ "$(id -u)" = 0 ]; then
  COLDPREP="sync && echo 3 >/proc/sys/vm/drop_caches && find srv -type f -exec cat {} + >/dev/null \
    && ostree --version >/dev/null && $A --version >/dev/null && "
fi
oprep() { # DIR MODE [SEED]: fresh repo with remote origin, optionally a copy of SEED
  local s="$COLDPREP$(aside o/$1) && "
  if [ -n "${3:-}" ]; then s+="cp -a o/$3 o/$1"; else s+="ostree init --repo=o/$1 --mode=$2"; fi
  echo "$s && ostree remote add --repo=o/$1 --if-not-exists --no-gpg-verify $TLS_OPT origin $URL"
}
aprep() {
  local s="$COLDPREP$(aside r/$1) && "
  if [ -n "${3:-}" ]; then s+="cp -a r/$3 r/$1"; else s+="$A init --repo r/$1 --mode $2"; fi
  echo "$s && { $A remote add --repo r/$1 --if-not-exists --no-gpg-verify $TLS_OPT origin $URL; }"
}
# run TOOL OP PREPARE CMD: timings, then one untimed run for RSS, requests and bytes
run() {
  bench "$1.$2" "$3" "$4"
  bash -c "$3" >/dev/null
  sync
  local before; before=$(wc -l <"$NG/access.log")
  /usr/bin/time -f %M -o "$RES/$1.$2.rss" bash -c "$4" >/dev/null 2>>"$RES/rss.log" \
    || { echo "$1 $2: untimed run failed" >&2; exit 1; }
  tail -n +$((before + 1)) "$NG/access.log" >"$RES/$1.$2.log"
}
pair() { run ostree "$1" "$2" "$3"; run arbor "$1" "$4" "$5"; echo "$1" >>"$RES/ops"; }

for mode in ${MODES:-archive bare-user}; do
  m=${mode%-user}; m=${m/bare/bu}
  serve_at "$V1"
  pair pull-v1-$mode "$(oprep $m $mode)" "ostree pull --repo=o/$m origin $B" \
    "$(aprep $m $mode)" "$A pull --repo r/$m origin $B"
  # The repo holding v1 stays as the seed of the incremental pull.
  for d in o r; do rm -rf $d/$m.v1 && cp -a $d/$m $d/$m.v1; done
  serve_at "$V2"
  pair pull-v1-v2-$mode "$(oprep $m $mode $m.v1)" "ostree pull --repo=o/$m origin $B" \
    "$(aprep $m $mode $m.v1)" "$A pull --repo r/$m origin $B"
  for d in o r; do
    [ "$(ostree rev-parse --repo=$d/$m origin:$B)" = "$V2" ] || { echo "$d/$m: wrong commit" >&2; exit 1; }
  done
  ostree fsck --repo=r/$m >/dev/null && "$ARBOR" fsck --repo r/$m >/dev/null
done

{
  echo "# $(ostree --version | awk '/Version/{print "ostree", $2}' | tr -d "'")" \
    "arbor=$(git -C "$HERE" describe --always --dirty 2>/dev/null || echo no-commit) corpus=$(basename "$C")" \
    "runs=$RUNS warmup=$WARMUP cpus=$(nproc) $(date -u +%FT%TZ) nginx $URL"
  python3 - "$RES" <<'EOF'
import json, os, sys
res = sys.argv[1]
target = {"pull-v1-archive": 3, "pull-v1-bare-user": 3, "pull-v1-v2-archive": 2, "pull-v1-v2-bare-user": 2}
def load(tool, op):
    p = f"{res}/{tool}.{op}"
    r = json.load(open(p + ".json"))["results"][0]
    rss = int(open(p + ".rss").read().split()[-1]) / 1024
    lines = [l.split() for l in open(p + ".log") if l.strip()]
    return r, rss, len(lines), sum(int(l[3]) for l in lines)
print(f"{'operation':22} {'ostree_s':>8} {'(min-max)':>15} {'arbor_s':>8} {'(min-max)':>15} {'ratio':>6}"
      f" {'ostree_MiB':>10} {'arbor_MiB':>9} {'req o/a':>13} {'MB o/a':>15}  target")
for op in open(f"{res}/ops").read().split():
    (o, orss, oreq, ob), (a, arss, areq, ab) = load("ostree", op), load("arbor", op)
    t = lambda r: f"{r['median']:8.3f} {'(%.3f-%.3f)' % (r['min'], r['max']):>15}"
    ratio = o["median"] / a["median"]
    goal = [f">={target[op]}x " + ("ok" if ratio >= target[op] else "MISS"),
            "rss " + ("ok" if arss <= orss else "~" if arss <= orss * 1.05 else "MISS"),
            "req " + ("ok" if areq <= oreq else "MISS"), "bytes " + ("ok" if ab <= ob else "MISS")]
    print(f"{op:22} {t(o)} {t(a)} {ratio:6.1f} {orss:10.1f} {arss:9.1f} {f'{oreq}/{areq}':>13}"
          f" {f'{ob/1e6:.1f}/{ab/1e6:.1f}':>15}  {', '.join(goal)}")
EOF
} | tee "$RES/pull.txt"

#!/usr/bin/env bash
# One command for the whole benchmark: builds arbor (release) and both corpora with the shared
# corpus scripts (../shared/bench: make-corpus.sh for the Debian tree, needs root and a Debian
# mirror; make-synthetic.sh for the 30k-file tree), then runs compare.sh on each.
# Usage: bench/run.sh [CORPORA_DIR] [WORKDIR]   (env: RUNS WARMUP as compare.sh; SHARED_BENCH;
#        CORPORA="debian syn30k" to choose which)
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
SHARED=${SHARED_BENCH:-$HERE/../../shared/bench}
CD=$(realpath -m "${1:-/var/tmp/arbor-corpora}")
W=$(realpath -m "${2:-/var/tmp/arbor-bench}")
[ -x "$SHARED/make-corpus.sh" ] || { echo "shared bench scripts not found at $SHARED (set SHARED_BENCH)" >&2; exit 1; }
(cd "$HERE/.." && cargo build --release --bin arbor)
for c in ${CORPORA:-debian syn30k}; do
  case $c in
    debian) [ -e "$CD/debian/v2.done" ] || "$SHARED/make-corpus.sh" "$CD/debian" ;;
    syn30k) "$SHARED/make-synthetic.sh" "$CD/syn30k" 30000 1 >/dev/null ;;
    *) echo "unknown corpus $c" >&2; exit 2 ;;
  esac
  "$HERE/compare.sh" "$CD/$c" "$W/$c"
done

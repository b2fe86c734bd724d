#!/usr/bin/env bash
# Pull + unpack benchmark: picolet vs `skopeo copy` + `umoci unpack` of the same image.
#
# Builds (once, cached in $BENCH_DIR/layout) a ~50 MiB image with several layers on the
# busybox test image: large random files, many small random files, and some compressible
# text. Pushes it to the local registry, then measures, $RUNS times each, alternating:
#   picolet: `picolet images pull` into a fresh root (download, verify, unpack)
#   pair:    `skopeo copy docker://... oci:...` then `umoci unpack` (the same work)
# Wall time and peak RSS come from /usr/bin/time -v (the pair: wall summed, RSS the max).
# Prints one JSON line per figure (the format of scripts/bench/run.sh, with pass/fail on the
# budgets) and a small table on stderr.
# Env: PICOLET (default target/release/picolet; built if missing), REGISTRY (127.0.0.1:5000),
#      RUNS (3), BENCH_DIR (/var/tmp/picolet-bench),
#      COMPRESSION (gzip | zstd; zstd measures picolet only: umoci 0.4.7 cannot unpack zstd).
set -euo pipefail
cd "$(dirname "$0")/../.."
REG=${REGISTRY:-127.0.0.1:5000}
RUNS=${RUNS:-3}
B=${BENCH_DIR:-/var/tmp/picolet-bench}
PICOLET=${PICOLET:-target/release/picolet}
BASE=${PICOLET_IMAGE_LAYOUT:-/var/tmp/picolet-images/oci}
COMPRESSION=${COMPRESSION:-gzip}
case $COMPRESSION in gzip) REF=$REG/picolet-img/bench:v1 ;; zstd) REF=$REG/picolet-img/bench:v1-zstd ;;
  *) echo "pull.sh: COMPRESSION must be gzip or zstd" >&2; exit 1 ;; esac

die() { echo "pull.sh: $*" >&2; exit 1; }
for t in skopeo umoci jq curl; do command -v "$t" >/dev/null || die "$t not found: run scripts/test-env.sh"; done
[ -x /usr/bin/time ] || die "/usr/bin/time not found: apt-get install time (scripts/runtime/install-packages.sh)"
[ "$(id -u)" = 0 ] || die "must run as root (unpacking keeps ownership)"
curl -fsS -o /dev/null "http://$REG/v2/" || die "registry $REG not answering: run scripts/test-env.sh"
[ -f "$BASE/index.json" ] || die "test images missing in $BASE: run scripts/test-env.sh"
if [ ! -x "$PICOLET" ]; then
  echo "building $PICOLET (release)..." >&2
  cargo build --release >&2
fi
[ -x "$PICOLET" ] || die "$PICOLET not built"

mkdir -p "$B"
L=$B/layout
if ! jq -e '.manifests[]|select(.annotations["org.opencontainers.image.ref.name"]=="bench")' "$L/index.json" >/dev/null 2>&1; then
  echo "building the benchmark image in $L ..." >&2
  rm -rf "$L" "$B/bundle"
  skopeo copy -q "oci:$BASE:busybox" "oci:$L:bench"
  umoci unpack --image "$L:bench" "$B/bundle" >/dev/null
  R=$B/bundle/rootfs
  mkdir -p "$R/data"
  head -c $((16 << 20)) /dev/urandom > "$R/data/blob1.bin"                  # layer 2: one big random file
  umoci repack --refresh-bundle --image "$L:bench" "$B/bundle"
  mkdir -p "$R/data/small"                                                  # layer 3: 3000 small files
  for i in $(seq 1 3000); do head -c 4096 /dev/urandom > "$R/data/small/f$i"; done
  umoci repack --refresh-bundle --image "$L:bench" "$B/bundle"
  head -c $((10 << 20)) /dev/urandom > "$R/data/blob2.bin"                  # layer 4: random + text
  head -c $((6 << 20)) /dev/urandom | base64 > "$R/data/text.b64"
  umoci repack --refresh-bundle --image "$L:bench" "$B/bundle"
  head -c $((8 << 20)) /dev/urandom > "$R/data/blob3.bin"                   # layer 5: random
  umoci repack --image "$L:bench" "$B/bundle"
  rm -rf "$B/bundle"
fi
if [ "$COMPRESSION" = zstd ]; then   # a dir: copy really recompresses, then push as is
  rm -rf "$B/zstd-dir"
  skopeo copy -q --dest-compress --dest-compress-format zstd "oci:$L:bench" "dir:$B/zstd-dir"
  skopeo copy -q --dest-tls-verify=false --dest-compress-format zstd "dir:$B/zstd-dir" "docker://$REF"
  rm -rf "$B/zstd-dir"
else
  skopeo copy -q --dest-tls-verify=false "oci:$L:bench" "docker://$REF"
fi

# /usr/bin/time -v output -> "wall_seconds peak_rss_kib"
measure() {
  local out=$1; shift
  /usr/bin/time -v -o "$out.time" "$@" >"$out.log" 2>&1 || { cat "$out.log" >&2; die "failed: $*"; }
  awk -F': ' '
    /Elapsed \(wall clock\)/ { n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; w=s }
    /Maximum resident set size/ { r=$2 }
    END { printf "%.3f %d\n", w, r }' "$out.time"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: > "$B/picolet.runs"; : > "$B/pair.runs"
for i in $(seq 1 "$RUNS"); do
  rm -rf "$B/root-picolet"
  read -r w r < <(measure "$B/picolet" "$PICOLET" images --root-dir "$B/root-picolet" pull "$REF")
  echo "$w $r" >> "$B/picolet.runs"
  [ "$COMPRESSION" = zstd ] && continue
  rm -rf "$B/oci-pair" "$B/bundle-pair"
  read -r w1 r1 < <(measure "$B/skopeo" skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$B/oci-pair:bench")
  read -r w2 r2 < <(measure "$B/umoci" umoci unpack --image "$B/oci-pair:bench" "$B/bundle-pair")
  echo "$(awk -v a="$w1" -v b="$w2" 'BEGIN{printf "%.3f", a+b}') $(( r1 > r2 ? r1 : r2 )) $w1 $w2" >> "$B/pair.runs"
done

size=$(du -sb "$B/root-picolet/images/blobs" | cut -f1)
files=$(find "$B/root-picolet/images/snapshots" -mindepth 2 | wc -l)
pw=$(cut -d' ' -f1 "$B/picolet.runs" | median); pr=$(cut -d' ' -f2 "$B/picolet.runs" | sort -n | tail -1)
# Result lines in scripts/bench/run.sh's format (one figure each, pass/fail on the budgets);
# the table goes to stderr.
line() { # metric value unit tool [extra json]
  local x="${5:-}"
  printf '{"bench":"pull","metric":"%s","value":%s,"unit":"%s","tool":"%s","runs":%s%s}\n' "$1" "$2" "$3" "$4" "$RUNS" "$x"
}
rss_ok=false; [ "$pr" -lt 16384 ] && rss_ok=true
line wall "$pw" s picolet ",\"compression\":\"$COMPRESSION\",\"compressed_bytes\":$size,\"entries\":$files"
line peak_rss "$pr" KiB picolet ",\"compression\":\"$COMPRESSION\",\"budget\":16384,\"pass\":$rss_ok"
if [ "$COMPRESSION" = zstd ]; then
  printf '\n%-14s %10s %14s\n%-14s %10s %14s\n' tool "wall (s)" "peak RSS (KiB)" "picolet(zstd)" "$pw" "$pr" >&2
  exit 0
fi
qw=$(cut -d' ' -f1 "$B/pair.runs" | median);    qr=$(cut -d' ' -f2 "$B/pair.runs" | sort -n | tail -1)
sw=$(cut -d' ' -f3 "$B/pair.runs" | median);    uw=$(cut -d' ' -f4 "$B/pair.runs" | median)
fast=false; awk -v a="$pw" -v b="$qw" 'BEGIN{exit !(a <= b)}' && fast=true
line wall "$qw" s skopeo+umoci ",\"skopeo_wall_s\":$sw,\"umoci_wall_s\":$uw"
line peak_rss "$qr" KiB skopeo+umoci
line wall_vs_pair "$(awk -v a="$pw" -v b="$qw" 'BEGIN{printf "%.2f", a / b}')" ratio picolet ",\"budget\":1,\"pass\":$fast"
{
  printf '\n%-14s %10s %14s\n' tool "wall (s)" "peak RSS (KiB)"
  printf '%-14s %10s %14s\n' picolet "$pw" "$pr" skopeo+umoci "$qw" "$qr"
  printf '(medians of %s runs; RSS: max over runs; image %s MiB compressed, %s entries)\n' \
    "$RUNS" "$(( size >> 20 ))" "$files"
} >&2
rm -rf "$B/oci-pair" "$B/bundle-pair"

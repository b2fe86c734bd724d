#!/usr/bin/env bash
# Run the benchmarks and collect their figures.
#   usage: scripts/bench/run.sh [NAME...]     (default: every scripts/bench/*.sh but lib, lib-* and run)
# Each bench's JSON lines go to target/bench/results.jsonl (rewritten each run); a table of all
# figures follows. Exits non-zero if any bench failed (its reason is in its stderr above) or
# any figure carries "pass": false (a budget missed).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
command -v jq >/dev/null || { echo "bench/run: missing tool 'jq'" >&2; exit 1; }

if (($#)); then
  names=("$@")
else
  names=()
  for f in "$HERE"/*.sh; do
    n="$(basename "$f" .sh)"
    case "$n" in lib|lib-*|run) ;; *) names+=("$n") ;; esac
  done
fi

out="$ROOT/target/bench"; mkdir -p "$out"
results="$out/results.jsonl"; : > "$results"
failed=()
for n in "${names[@]}"; do
  f="$HERE/$n.sh"
  [ -f "$f" ] || { echo "bench/run: no bench $f" >&2; failed+=("$n(missing)"); continue; }
  echo "bench/run: == $n" >&2
  start=$SECONDS rc=0
  bash "$f" > "$out/$n.out" || rc=$?
  # keep only well-formed result lines; anything else on stdout is a bench bug
  while IFS= read -r line; do
    if jq -e 'type == "object" and has("bench") and has("value")' <<<"$line" >/dev/null 2>&1; then
      echo "$line" >> "$results"
    else
      echo "bench/run: $n printed a non-result line on stdout: $line" >&2; [ "$rc" != 0 ] || rc=1
    fi
  done < "$out/$n.out"
  echo "bench/run: == $n: $([ "$rc" = 0 ] && echo ok || echo "FAILED (exit $rc)") in $((SECONDS - start)) s" >&2
  [ "$rc" = 0 ] || failed+=("$n")
done

echo
if [ -s "$results" ]; then
  jq -r '[.bench, .metric, (.value|tostring), .unit, .tool, .target,
          (if has("pass") then (if .pass then "pass" else "FAIL" end) else "" end)] | @tsv' "$results" \
    | (printf 'bench\tmetric\tvalue\tunit\ttool\ttarget\tbudget\n'; cat) \
    | if command -v column >/dev/null; then column -t -s $'\t'; else cat; fi
fi
echo "results: $results"
missed="$(jq -r 'select(has("pass") and .pass == false) | "\(.bench)/\(.metric) (\(.tool), \(.target))"' "$results")"
[ -z "$missed" ] || { echo "bench/run: budget missed: $missed" >&2; failed+=("budget"); }
if ((${#failed[@]})); then
  echo "bench/run: FAILED: ${failed[*]}" >&2
  exit 1
fi

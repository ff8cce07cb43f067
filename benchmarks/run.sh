#!/usr/bin/env bash
# Runs cachestack's benchmarks against its peers and writes BENCHMARKS.md and benchmarks/chart.svg.
#
# Usage (from anywhere in the repository):
#   bash benchmarks/run.sh            full run: criterion's default times, callgrind counts (~15 min)
#   bash benchmarks/run.sh --quick    short warm-up and measurement (under 5 minutes once built)
# Options:
#   --servers       start (or find) Redis, PostgreSQL and Memcached with tests/servers.sh and run
#                   the network backends' benchmarks against them
#   --no-callgrind  skip the instruction counts (they need valgrind; counted in every mode:
#                   callgrind is deterministic and 100 000 hits take seconds)
#   --report-only   measure nothing: write BENCHMARKS.md again from the last run's results (after a
#                   change to the report generator)
#
# Without --servers, a network benchmark runs only when its server's URL is in the environment
# (CACHESTACK_TEST_REDIS_URL, CACHESTACK_TEST_POSTGRES_URL, CACHESTACK_TEST_MEMCACHED_URL, as
# tests/servers.sh exports them, or the CACHESTACK_BENCH_* equivalents); otherwise the report says it
# was skipped and shows that group's latest earlier figures with their date.
#
# Everything in BENCHMARKS.md comes from this run's criterion output (<target>/criterion), the
# stampede tallies (<target>/cachestack-bench/stampede.json; <target> is CARGO_TARGET_DIR or target/) and callgrind; nothing is typed in.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
servers=0
callgrind=1
report_only=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --report-only) report_only=1 ;;
    --servers) servers=1 ;;
    --no-callgrind) callgrind=0 ;;
    -h | --help)
      sed -n '2,20p' "$0"
      exit 0
      ;;
    *)
      echo "unknown option: $arg (see --help)" >&2
      exit 2
      ;;
  esac
done

log() { printf '\n==> %s\n' "$*"; }

# Cargo's target directory (CARGO_TARGET_DIR when set), where the builds, criterion's results and
# this script's tallies go.
target="${CARGO_TARGET_DIR:-target}"

# What the report needs to know about a run, kept for --report-only.
run_env="$target/cachestack-bench/run.env"

write_report() {
  log "BENCHMARKS.md and benchmarks/chart.svg"
  local note_args=() n
  for n in "${notes[@]:-}"; do
    [ -n "$n" ] && note_args+=(--note "$n")
  done
  cargo run -q --release -p cachestack-benchmarks --bin report -- \
    --since "$start" --mode "$mode" --load-start "$load_start" --load-end "$load_end" \
    --command "$command_text" --out BENCHMARKS.md --svg benchmarks/chart.svg --svg-link benchmarks/chart.svg \
    "${note_args[@]}"
}

if [ "$report_only" = 1 ]; then
  if [ ! -f "$run_env" ]; then
    echo "no previous run recorded in $run_env: run the benchmarks first" >&2
    exit 1
  fi
  # shellcheck disable=SC1090
  source "$run_env"
  write_report
  exit 0
fi

start=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
notes=()
commands=()

if [ "$quick" = 1 ]; then
  mode="quick (warm-up 0.3 s, measurement 1 s per benchmark)"
  criterion_args=(--warm-up-time 0.3 --measurement-time 1 --noplot)
else
  mode="full (warm-up 2 s, measurement 4 s per benchmark; stampedes 10 samples)"
  criterion_args=(--warm-up-time 2 --measurement-time 4 --noplot)
fi

CLEANUP=()
cleanup() {
  for cmd in "${CLEANUP[@]:-}"; do
    [ -n "$cmd" ] && eval "$cmd" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

if [ "$servers" = 1 ]; then
  log "servers (tests/servers.sh)"
  # shellcheck source=tests/servers.sh
  source tests/servers.sh
  ensure_servers
fi

run() {
  commands+=("$*")
  log "$*"
  "$@"
}

# 1. cachestack against cached, quick_cache, moka and Mutex<HashMap> (benchmarks/benches/*.rs).
run cargo bench -p cachestack-benchmarks -- "${criterion_args[@]}"

# 2. The runtime crate's own benchmarks: the tiered stack always, network backends when their
#    server is known.
have() {
  local var
  for var in "$@"; do
    [ -n "${!var:-}" ] && return 0
  done
  return 1
}
features=()
benches=(--bench tiered)
if have CACHESTACK_TEST_REDIS_URL CACHESTACK_BENCH_REDIS_URL; then
  features+=(redis)
  benches+=(--bench redis)
else
  notes+=("Redis benchmark skipped: no CACHESTACK_TEST_REDIS_URL (run with --servers, or source tests/servers.sh).")
fi
if have CACHESTACK_TEST_POSTGRES_URL CACHESTACK_BENCH_POSTGRES_URL; then
  features+=(postgres)
  benches+=(--bench postgres)
else
  notes+=("PostgreSQL benchmark skipped: no CACHESTACK_TEST_POSTGRES_URL (run with --servers).")
fi
if have CACHESTACK_TEST_MEMCACHED_URL CACHESTACK_BENCH_MEMCACHED_URL; then
  features+=(memcached)
  benches+=(--bench memcached)
else
  notes+=("Memcached benchmark skipped: no CACHESTACK_TEST_MEMCACHED_URL (run with --servers).")
fi
feature_args=()
if [ "${#features[@]}" -gt 0 ]; then
  feature_args=(--features "${features[*]}")
fi
if ! run cargo bench -p cachestack "${feature_args[@]}" "${benches[@]}" -- "${criterion_args[@]}"; then
  notes+=("The runtime crate's benchmarks (${benches[*]}) failed in this run; see the script's output.")
fi

# 3. Instruction counts per hit (repeatable on a loaded machine), when valgrind is there.
hits=100000
counts="$target/cachestack-bench/callgrind.tsv"
if [ "$callgrind" = 1 ] && command -v valgrind >/dev/null 2>&1; then
  run cargo build --release -p cachestack-benchmarks --example profile_hit
  mkdir -p "$target/cachestack-bench"
  : >"$counts.tmp"
  for lib in cachestack_u64 cachestack_stack_u64 cachestack_u64_moka cached_u64 quick_cache_u64 moka_u64 cachestack_string \
    cachestack_string_moka cachestack_str cached_string quick_cache_string; do
    out="$target/cachestack-bench/callgrind.$lib.out"
    log "callgrind: $lib"
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured*' --callgrind-out-file="$out" \
      "$target/release/examples/profile_hit" "$lib" "$hits" >/dev/null 2>&1
    total=$(grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}')
    printf '%s\t%s\n' "$lib" "$(awk "BEGIN{print $total / $hits}")" >>"$counts.tmp"
  done
  mv "$counts.tmp" "$counts"
  commands+=("valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured*' $target/release/examples/profile_hit <library> $hits")
elif [ "$callgrind" = 1 ]; then
  notes+=("Instruction counts skipped: valgrind is not installed.")
fi

# 4. Memory per cached entry (a few seconds; every mode).
run cargo build --release -p cachestack-benchmarks --example memory_per_entry
mkdir -p "$target/cachestack-bench"
: >"$target/cachestack-bench/memory.tsv.tmp"
for lib in cachestack cachestack_ttl cached quick_cache; do
  log "memory per entry: $lib"
  "$target/release/examples/memory_per_entry" "$lib" 1000000 | cut -f1,3 >>"$target/cachestack-bench/memory.tsv.tmp"
done
mv "$target/cachestack-bench/memory.tsv.tmp" "$target/cachestack-bench/memory.tsv"
commands+=("$target/release/examples/memory_per_entry <library> 1000000")

# 5. The report.
load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
command_text="bash benchmarks/run.sh $*"$'\n'"# which ran:"
for c in "${commands[@]}"; do
  command_text+=$'\n'"$c"
done
mkdir -p "$(dirname "$run_env")"
{
  declare -p start mode load_start load_end command_text
  if [ "${#notes[@]}" -gt 0 ]; then declare -p notes; else echo "notes=()"; fi
} >"$run_env"
write_report
log "done in $(($(date +%s) - start)) s"

#!/usr/bin/env bash
# Mutation check of the core: plants the bugs of scripts/mutants.tsv one at a time in a copy of
# this tree and runs, for each, the tests its row names. A mutant is *killed* when one of them
# fails (or times out), *survived* when they all pass, *invalid* when it does not build.
#   1. the tree (tracked and untracked, not ignored, files) is copied to SCRATCH/tree; a second
#      run copies only what changed, so its build folder SCRATCH/tree/build stays warm (inside the
#      copy as build/ is here, so that ccache, with a base_dir above both, hits on the same files)
#   2. everything is built once and the tests of the selected mutants run unmutated (baseline):
#      a test that fails without a mutant would make every mutant look killed
#   3. per mutant: plant it, build the test programs its tests live in (ccache makes the
#      restored files cheap to rebuild), run its tests with ctest --stop-on-failure, restore
# One line per mutant as it goes; logs, results.tsv, results.md and results.json go to OUT.
# The tree this script is run from is only read.
# Usage: scripts/mutation_check.sh [--ids a,b] [--list] [--scratch DIR] [--out DIR]
#                                  [--jobs N] [--timeout S] [--no-baseline]
#   --ids a,b       only these mutants (see --list)
#   --scratch DIR   the copy and its build folder (default ${TMPDIR:-/tmp}/gum_mutation/NAME,
#                   NAME the folder name of this tree); under ccache's base_dir (ccache -p), the
#                   first build reuses this tree's cached objects
#   --out DIR       results and logs (default SCRATCH/results)
#   --jobs N        build and ctest parallelism (default: nproc)
#   --timeout S     per-test timeout in seconds (default 300); a test that times out kills
#   --no-baseline   skip step 2 (when the same tests just passed on this tree)
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mutants="$root/scripts/mutants.tsv"
tool=(/usr/bin/python3 "$root/scripts/mutants.py")
ids="" scratch="" out="" jobs="$(nproc)" timeout=300 baseline=1 list=0
die() { echo "mutation_check: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --ids) ids="${2:?--ids needs a list}"; shift 2 ;;
    --list) list=1; shift ;;
    --scratch) scratch="${2:?--scratch needs a folder}"; shift 2 ;;
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    --jobs) jobs="${2:?--jobs needs a number}"; shift 2 ;;
    --timeout) timeout="${2:?--timeout needs seconds}"; shift 2 ;;
    --no-baseline) baseline=0; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ "$list" = 1 ] && exec "${tool[@]}" list "$mutants" --ids "$ids"
scratch="${scratch:-${TMPDIR:-/tmp}/gum_mutation/$(basename "$root")}"
mkdir -p "$scratch"
scratch="$(cd "$scratch" && pwd)"
case "$scratch/" in "$root/"*) die "--scratch $scratch is inside the tree it would copy" ;; esac
out="${out:-$scratch/results}"
mkdir -p "$out/logs"
out="$(cd "$out" && pwd)"
case "$out/" in "$root/"*) die "--out $out is inside the tree (this script never writes there)" ;; esac
tree="$scratch/tree" build="$scratch/tree/build"
exec 9> "$scratch/.lock"
flock -n 9 || die "another mutation check is running in $scratch"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # tests that start mpirun themselves

"${tool[@]}" rows "$mutants" --ids "$ids" > /dev/null || exit 2
started=$SECONDS

# ---- 1. copy: only files whose content differs are rewritten (and so re-dated for make) ----
mkdir -p "$tree"
files="$scratch/files.txt"
git -C "$root" ls-files -co --exclude-standard | sort -u > "$files"
while IFS= read -r f; do
  [ -e "$root/$f" ] || continue  # deleted in the work tree, still in the index
  cmp -s "$root/$f" "$tree/$f" && continue
  mkdir -p "$(dirname "$tree/$f")" || die "cannot create the folder of $f in $tree"
  cp "$root/$f" "$tree/$f" || die "cannot copy $f to $tree"
done < "$files"
# Files deleted here since the last copy go there too (CMake globs the test sources).
(cd "$tree" && find . -path ./build -prune -o -type f -printf '%P\n' | sort | comm -23 - "$files" |
  xargs -r -d '\n' rm -f)
# From here on the copy's mutants file and tool: this tree may be edited while the check runs.
mutants="$tree/scripts/mutants.tsv"
tool=(/usr/bin/python3 "$tree/scripts/mutants.py")
rows="$("${tool[@]}" rows "$mutants" --ids "$ids")" || exit 2
total="$(wc -l <<< "$rows")"
"${tool[@]}" check "$mutants" "$tree" --ids "$ids" || exit 2

# ---- 2. build everything once, then the unmutated baseline ----
launcher=()
command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
echo "mutation_check: $total mutant(s); tree $tree, build $build, results $out"
cmake -S "$tree" -B "$build" -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" > "$out/logs/configure.log" 2>&1 ||
  die "configure failed: $out/logs/configure.log"
cmake --build "$build" -j "$jobs" > "$out/logs/build.log" 2>&1 || die "build of the unmutated tree failed: $out/logs/build.log"

# The test programs (targets) that hold a mutant's tests: a test "MODULE:name" lives in
# gum_test_MODULE, "dist: ..." tests run gum_dist_collectives_check; train, dist and model tests
# start the gum_train executable.
targets_for() {
  (cd "$build" && ctest -N -R "$1") | sed -n 's/^ *Test *#[0-9]*: \([a-z_]*\):\(.\).*/\1 \2/p' | sort -u |
    while read -r module next; do
      if [ -z "$next" ]; then echo gum_dist_collectives_check; else echo "gum_test_$module"; fi
    done | sort -u
  echo gum_train_app
}
# The baseline runs the union of the rows' tests by number (ctest -I): CMake's regular
# expressions allow only 9 groups, too few to join the rows' expressions into one.
numbers=""
while IFS=$'\t' read -r -u 3 id _ tests; do
  found="$(cd "$build" && ctest -N -R "$tests" | sed -n 's/^ *Test *#\([0-9]*\):.*/\1/p')"
  [ -n "$found" ] || die "mutant '$id': no test matches its regex '$tests'"
  numbers="$numbers $found"
done 3<<< "$rows"
numbers="$(tr ' ' '\n' <<< "$numbers" | grep . | sort -nu | paste -sd,)"
if [ "$baseline" = 1 ]; then
  echo "mutation_check: baseline: the selected mutants' $(tr ',' '\n' <<< "$numbers" | wc -l) tests on the unmutated tree"
  if ! (cd "$build" && ctest -I "0,0,0,$numbers" -j "$jobs" --timeout "$timeout" --output-on-failure) \
         < /dev/null > "$out/logs/baseline.log" 2>&1 || ! grep -q '100% tests passed' "$out/logs/baseline.log"; then
    grep -A50 'The following tests FAILED' "$out/logs/baseline.log" >&2
    die "tests fail without any mutant (see $out/logs/baseline.log): fix them first"
  fi
fi

# ---- 3. one mutant at a time ----
results="$out/results.tsv"
: > "$results"
current=""
restore() {
  [ -n "$current" ] || return 0
  cp "$scratch/original" "$tree/$current"  # a fresh mtime: make rebuilds what the mutant built
  current=""
}
trap 'restore' EXIT
trap 'restore; exit 130' INT TERM
index=0
# The rows come on descriptor 3: mpirun, under the tests, forwards its stdin to rank 0.
while IFS=$'\t' read -r -u 3 id file tests; do
  index=$((index + 1))
  cp "$tree/$file" "$scratch/original"
  current="$file"
  "${tool[@]}" apply "$mutants" "$tree" "$id" || die "cannot plant '$id'"
  t0=$SECONDS
  mapfile -t targets < <(targets_for "$tests")
  status="" killed_by=""
  if ! cmake --build "$build" -j "$jobs" --target "${targets[@]}" > "$out/logs/$id.build.log" 2>&1; then
    status=invalid
  fi
  build_s=$((SECONDS - t0))
  t1=$SECONDS
  if [ -z "$status" ]; then
    (cd "$build" && ctest -R "$tests" -j "$jobs" --timeout "$timeout" --stop-on-failure --output-on-failure) \
      < /dev/null > "$out/logs/$id.test.log" 2>&1
    code=$?
    grep -q 'tests passed' "$out/logs/$id.test.log" || die "ctest ran no test for '$id': $out/logs/$id.test.log"
    # "  82 - optim:adamw matches the reference (Failed)" under "The following tests FAILED:"
    killed_by="$(sed -n '/The following tests FAILED:/,$s/^[[:space:]]*[0-9]* - \(.*\) (\([^()]*\))$/\1 (\2)/p' \
      "$out/logs/$id.test.log" | sed 's/ (Failed)$//' | paste -sd ';')"
    if [ "$code" -eq 0 ]; then status=survived
    elif [ -n "$killed_by" ]; then status=killed
    else die "ctest failed for '$id' without naming a failed test: $out/logs/$id.test.log"; fi
  fi
  test_s=$((SECONDS - t1))
  restore
  printf '%s\t%s\t%s\t%s\t%s\n' "$id" "$status" "$killed_by" "$build_s" "$test_s" >> "$results"
  printf '[%2d/%d] %-34s %-8s %s (build %ds, tests %ds)\n' "$index" "$total" "$id" "$status" \
    "${killed_by%%;*}" "$build_s" "$test_s"
done 3<<< "$rows"
# The copy's build folder ends up holding the unmutated programs again.
cmake --build "$build" -j "$jobs" > "$out/logs/build_restored.log" 2>&1 || echo "mutation_check: rebuild after restore failed" >&2
"${tool[@]}" report "$mutants" "$results" "$out" || exit 2
echo "mutation_check: $((SECONDS - started)) s; table $out/results.md, details $out/results.json, logs $out/logs"

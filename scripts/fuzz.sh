#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz for longer than CI's smoke run: builds them with
# clang (ASan + UBSan, coverage in every library) into build-fuzz/ (or $GUM_FUZZ_BUILD_DIR),
# then fuzzes each for GUM_FUZZ_SECONDS (default 300) from the committed corpus. New corpus
# inputs land in BUILD/tests/fuzz/found/NAME, crashes as BUILD/tests/fuzz/found/NAME-crash-*:
# fix the bug, then commit the crash input to tests/fuzz/corpus/NAME as a regression case.
# Usage: scripts/fuzz.sh [TARGET ...]   (targets: safetensors shard config sft manifest)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${GUM_FUZZ_BUILD_DIR:-$root/build-fuzz}"
seconds="${GUM_FUZZ_SECONDS:-300}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors shard config sft manifest)

mkdir -p "$build"
CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGUM_CUDA=OFF -DGUM_MPI=OFF \
  -DGUM_FUZZ=ON -DGUM_SANITIZE=address,undefined > "$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" --target "${targets[@]/#/gum_fuzz_}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
for name in "${targets[@]}"; do
  found="$build/tests/fuzz/found/$name"
  mkdir -p "$found"
  echo "== fuzz $name for ${seconds}s"
  "$build/tests/fuzz/gum_fuzz_$name" -max_total_time="$seconds" -max_len=4096 -artifact_prefix="$found-" \
    "$found" "$root/tests/fuzz/corpus/$name"
done

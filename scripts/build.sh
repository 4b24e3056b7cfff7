#!/usr/bin/env bash
# Configures and builds gum_train into build/ (or $GUM_BUILD_DIR). Extra arguments go to cmake.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${GUM_BUILD_DIR:-$root/build}"
mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "$@" > "$build/configure.log" 2>&1 || {
  cat "$build/configure.log"; exit 1; }
grep -E "gum_train:" "$build/configure.log" || true
cmake --build "$build" -j "$(nproc)"

#!/usr/bin/env bash
# Installs dependencies, builds everything (CUDA targets too when nvcc is present) and runs
# the whole test suite with CTest. GPU tests are reported as skipped where no GPU is usable.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install_deps.sh"
"$root/scripts/build.sh" "$@"
build="${GUM_BUILD_DIR:-$root/build}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd "$build"
ctest --output-on-failure -j "$(nproc)" --timeout 900

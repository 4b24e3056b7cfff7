#!/usr/bin/env bash
# Installs dependencies, builds everything (CUDA targets too when nvcc is present) and runs
# the whole test suite with CTest. Without a usable GPU the CUDA backend runs on the CPU emulator
# (tools/cuda_emu, docs/cuda_verification.md); its tests then run twice more: in a random
# schedule, and the CUDA op, model and emulator tests once under AddressSanitizer + UBSan in a build
# of their own.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install_deps.sh"
"$root/scripts/build.sh" "$@"
build="${GUM_BUILD_DIR:-$root/build}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd "$build"
ctest --output-on-failure -j "$(nproc)" --timeout 900

grep -q 'emulated on the CPU: ON' configure.log || exit 0
emulated='^(cuda|cuda_emu):|^ops:cpu vs cuda|nccl|backend cuda'
# A fresh seed per run explores more orders over time; the seed is printed to replay a failure.
seed="${GUM_CUDA_EMU_SEED:-$(date +%s)}"
echo "test: CUDA-emulated tests in schedule random:$seed"
GUM_CUDA_EMU_SCHEDULE="random:$seed" ctest --output-on-failure -j "$(nproc)" --timeout 900 -R "$emulated"

sanitize="$build-sanitize"
mkdir -p "$sanitize"
echo "test: CUDA and emulator tests under AddressSanitizer + UBSan ($sanitize)"
cmake -S "$root" -B "$sanitize" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGUM_CUDA_EMULATION=ON \
  -DGUM_SANITIZE=address,undefined "$@" > "$sanitize/configure.log" 2>&1 || { cat "$sanitize/configure.log"; exit 1; }
cmake --build "$sanitize" -j "$(nproc)" --target gum_test_cuda gum_test_cuda_emu gum_test_cuda_emu_libs gum_test_ops
cd "$sanitize"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --output-on-failure -j "$(nproc)" --timeout 900 -R '^(cuda|cuda_emu):|^ops:cpu vs cuda' -E 'mpirun'

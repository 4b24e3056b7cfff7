#!/bin/bash
# Times the CPU backend's ops and training step, then PyTorch's on the same shapes, and prints
# the side-by-side table (bench/cpu/README.md).
#   bench/cpu/compare.sh [MODEL] [THREADS] [BATCH] [SEQ_LEN]    defaults: llama_tiny 2 8 256
# BUILD_DIR (default build) holds gum_bench_cpu_ops; OUT_DIR (default bench/cpu/results) gets the JSON.
# Both sides get THREADS OpenMP threads and THREADS OpenBLAS threads.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-llama_tiny}
threads=${2:-2}
batch=${3:-8}
seq_len=${4:-256}
build_dir=${BUILD_DIR:-build}
out_dir=${OUT_DIR:-bench/cpu/results}
binary="$build_dir/bench/gum_bench_cpu_ops"
if [[ ! -x "$binary" ]]; then
  echo "no $binary: cmake --build $build_dir --target gum_bench_cpu_ops" >&2
  exit 1
fi
mkdir -p "$out_dir"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
tag="${model}_b${batch}_t${seq_len}_threads${threads}_${commit}"
export OPENBLAS_NUM_THREADS=$threads
"$binary" --model "$model" --batch "$batch" --seq-len "$seq_len" --threads "$threads" --json "$out_dir/ours_$tag.json"
/usr/bin/python3 bench/cpu/torch_ops.py --ours "$out_dir/ours_$tag.json" --json "$out_dir/compare_$tag.json"

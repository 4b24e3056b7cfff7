#!/usr/bin/env bash
# GPU acceptance check for an H100/H200 machine (also runs on A100: sm_80 is built too).
#   1. configure + build with CUDA for sm_80 and sm_90a (-gencode arch=compute_90a,code=sm_90a)
#   2. the CUDA-vs-CPU tests (ctest -R '^cuda:')
#   3. compute-sanitizer memcheck over the CUDA test binary
#   4. a short training run: configs/llama_20m.json on the cuda backend, bf16 (then fp32)
#   5. the benchmark (scripts/bench_gpu.sh)
# Each step's log and a results JSON go to OUT_DIR; a summary table is printed last. A step
# that fails is recorded and the script goes on, so one run shows everything; the exit code
# is non-zero when any step failed.
# Usage: scripts/gpu_check.sh [OUT_DIR]     (default: gpu_check_<date>)
#   GUM_GPU_BUILD_DIR  build folder (default: build-gpu)
#   GUM_GPU_SKIP_BENCH=1  skip step 5;  GUM_TRAIN_STEPS (default 50)
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/gpu_check_$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
build="${GUM_GPU_BUILD_DIR:-$root/build-gpu}"
steps="${GUM_TRAIN_STEPS:-50}"
jobs="$(nproc)"

declare -a names=() states=() notes=()
record() {  # record NAME STATE NOTE
  names+=("$1"); states+=("$2"); notes+=("$3")
  echo "== $1: $2 ${3:+($3)}"
}

device="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
[ -n "$device" ] || device="unknown (nvidia-smi failed)"
commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "gpu_check: device ${device}; commit ${commit}; output ${out}"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true

# ---- 1. build ----
if cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGUM_CUDA=ON \
     -DCMAKE_CUDA_ARCHITECTURES="80-real;90a-real" > "$out/configure.log" 2>&1 &&
   cmake --build "$build" -j "$jobs" > "$out/build.log" 2>&1; then
  record build ok "sm_80 + sm_90a"
else
  record build FAILED "see configure.log / build.log"
fi

# ---- 2. CUDA tests ----
test_bin="$build/tests/gum_test_cuda"
if [ -x "$test_bin" ]; then
  (cd "$build" && ctest -R '^cuda:' --output-on-failure --timeout 900 --output-junit "$out/ctest_cuda.xml") \
    > "$out/ctest_cuda.log" 2>&1
  rc=$?
  summary="$(grep -E 'tests passed|tests failed' "$out/ctest_cuda.log" | tail -1)"
  skipped="$(grep -c 'Skipped' "$out/ctest_cuda.log" || true)"
  if [ $rc -eq 0 ] && [ "$skipped" -eq 0 ]; then record cuda_tests ok "$summary"
  elif [ $rc -eq 0 ]; then record cuda_tests SKIPPED "$skipped skipped: is the GPU visible? $summary"
  else record cuda_tests FAILED "$summary"; fi
else
  record cuda_tests FAILED "no $test_bin"
fi

# ---- 3. compute-sanitizer ----
sanitizer="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
if [ -x "$sanitizer" ] && [ -x "$test_bin" ]; then
  # The whole-model test is slow under memcheck; every op test still runs each kernel.
  "$sanitizer" --tool memcheck --error-exitcode 3 --leak-check full "$test_bin" '~LlamaModel*' \
    > "$out/memcheck.log" 2>&1
  rc=$?
  errors="$(grep -E 'ERROR SUMMARY' "$out/memcheck.log" | tail -1)"
  if [ $rc -eq 0 ]; then record memcheck ok "$errors"; else record memcheck FAILED "rc $rc; $errors"; fi
else
  record memcheck SKIPPED "compute-sanitizer or test binary missing"
fi

# ---- 4. short training run ----
train_bin="$build/bin/gum_train"
[ -x "$train_bin" ] || train_bin="$(find "$build" -maxdepth 3 -type f -name gum_train -perm -u+x | head -1)"
config="$root/configs/llama_20m.json"
if [ -z "$train_bin" ] || [ ! -x "$train_bin" ]; then
  record train SKIPPED "gum_train binary missing in $build"
elif [ ! -f "$config" ]; then
  record train SKIPPED "configs/llama_20m.json missing"
else
  for precision in bf16 fp32; do
    run_dir="$out/train_$precision"
    if (cd "$root" && "$train_bin" "$config" --set training.backend=cuda --set training.precision=$precision \
          --set training.max_steps=$steps --set logging.run_dir="$run_dir" --set logging.every_steps=10 \
          --resume never) > "$out/train_$precision.log" 2>&1; then
      last="$(grep -E '^.*step .*loss' "$out/train_$precision.log" | tail -1 | sed -E 's/^.*(step .*)$/\1/')"
      record "train_$precision" ok "${last:0:110}"
    else
      record "train_$precision" FAILED "$(tail -1 "$out/train_$precision.log" | cut -c1-110)"
    fi
  done
fi

# ---- 5. benchmark ----
if [ "${GUM_GPU_SKIP_BENCH:-0}" = 1 ]; then
  record bench SKIPPED "GUM_GPU_SKIP_BENCH=1"
elif GUM_BENCH_BUILD_DIR="$build" "$root/scripts/bench_gpu.sh" "$out/bench" > "$out/bench.log" 2>&1; then
  record bench ok "$(ls "$out"/bench/*.json 2>/dev/null | head -1)"
else
  record bench FAILED "see bench.log"
fi

# ---- results JSON and summary (printed last) ----
{
  printf '{\n  "device": "%s",\n  "commit": "%s",\n  "date": "%s",\n  "steps": [\n' \
    "${device//\"/\'}" "$commit" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for i in "${!names[@]}"; do
    note="${notes[$i]//\\/\\\\}"
    note="${note//\"/\\\"}"
    printf '    {"name": "%s", "state": "%s", "note": "%s"}%s\n' "${names[$i]}" "${states[$i]}" "$note" \
      "$([ "$i" -lt $((${#names[@]} - 1)) ] && echo ,)"
  done
  printf '  ]\n}\n'
} > "$out/gpu_check.json"

failed=0
echo
echo "gpu_check summary (${device}; commit ${commit})"
printf '%-12s %-8s %s\n' step state note
printf '%-12s %-8s %s\n' ------------ -------- ----
for i in "${!names[@]}"; do
  printf '%-12s %-8s %s\n' "${names[$i]}" "${states[$i]}" "${notes[$i]}"
  [ "${states[$i]}" = FAILED ] && failed=1
done
if [ -f "$out/bench/summary.txt" ]; then echo; cat "$out/bench/summary.txt"; fi
echo "results: $out/gpu_check.json"
exit $failed

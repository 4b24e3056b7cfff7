#!/usr/bin/env bash
# GPU acceptance check, for any machine with an NVIDIA Ampere or Hopper GPU (A100, H100, H200):
#   1. configure + build with CUDA for sm_80 and sm_90a (-gencode arch=compute_90a,code=sm_90a)
#   2. the CUDA tests and the op table's CPU-vs-CUDA column (ctest -R '^(cuda|ops):')
#   3. compute-sanitizer memcheck over the CUDA test binary
#   4. llama_20m on the embedded corpus: cuda fp32 and bf16 runs whose loss curves must track the
#      CPU fp32 run of the first steps; 20 steps through NCCL with world size 1 (mpirun -np 1):
#      the overlapped per-layer all-reduce, the reduce-to-owner of sharded state, and the fused
#      update pipelined by one layer (which must equal the unfused run)
#   5. the benchmark (scripts/bench_gpu.sh)
# Each step's log goes to OUT_DIR, and gpu_check.json is rewritten after every step, so a call cut
# short still returns what finished; a summary table is printed last. A step that fails is
# recorded and the script goes on, so one run shows everything; the exit code is non-zero when
# any step failed, timed out or found no time left to run.
# Time: each step runs under `timeout` with what is left of GUM_GPU_BUDGET_S (default 450 s, so
# one call stays under the 8 minutes a lent machine allows per command, with room for the
# summary); run the check as several calls (see bench/README.md), each with its GUM_GPU_STEPS.
# Needs: the CUDA toolkit (nvcc, cuBLAS, cuSOLVER, compute-sanitizer), NCCL, our Debian packages
# (scripts/install_deps.sh), mpirun for the NCCL steps and PyTorch for the benchmark's comparison.
# Usage: scripts/gpu_check.sh [OUT_DIR]     (default: gpu_check_<date>)
#   GUM_GPU_BUILD_DIR  build folder (default: build-gpu)
#   GUM_GPU_SKIP_BENCH=1  skip step 5;  GUM_TRAIN_STEPS (default 200)
#   GUM_GPU_BUDGET_S  this call's time in seconds (default 450); a step killed by it is TIMEOUT
#   GUM_GPU_STEPS   the steps to run, comma-separated (default all): build, tests, memcheck, train,
#                   nccl, bench. Later steps use the build folder of an earlier run, so a check can
#                   be split over several runs (each into its own OUT_DIR).
# On an offline machine prepared with scripts/device_kit.sh (see bench/README.md), .device-kit/
# exists: scripts/device_setup.sh is sourced first and the kit's corpus replaces make_corpus.sh.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -d "$root/.device-kit" ]; then
  # shellcheck source=device_setup.sh
  source "$root/scripts/device_setup.sh" || { echo "gpu_check: device_setup.sh failed" >&2; exit 1; }
fi
out="${1:-$root/gpu_check_$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
build="${GUM_GPU_BUILD_DIR:-$root/build-gpu}"
steps="${GUM_TRAIN_STEPS:-200}"
selected="${GUM_GPU_STEPS:-build,tests,memcheck,train,nccl,bench}"
[ "${GUM_GPU_SKIP_BENCH:-0}" = 1 ] && selected="${selected//bench/}"
want() { [[ ",$selected," == *",$1,"* ]]; }
jobs="$(nproc)"
# The JSON steps below need only the standard library: any python3 on PATH will do (a GPU image
# may have its own python3 and no /usr/bin/python3).
python="$(command -v python3 || echo /usr/bin/python3)"

budget="${GUM_GPU_BUDGET_S:-450}"
deadline=$(( $(date +%s) + budget ))
margin=10  # seconds kept for the JSON and the summary
# left: the seconds this call may still spend on a step (0 when spent).
left() { local n=$(( deadline - margin - $(date +%s) )); echo $(( n > 0 ? n : 0 )); }
# timed CMD...: CMD under the rest of the budget; exit 124 when it was killed for time.
timed() {
  local t; t="$(left)"
  [ "$t" -gt 0 ] || return 124
  timeout --kill-after=5 "$t" "$@"
}
# begin NAME: false (and the step recorded as FAILED) when no time is left to start it.
begin() {
  if [ "$(left)" -le 0 ]; then record "$1" FAILED "not run: GUM_GPU_BUDGET_S=${budget} s spent"; return 1; fi
}

declare -a names=() states=() notes=()
record() {  # record NAME STATE NOTE; rewrites gpu_check.json
  names+=("$1"); states+=("$2"); notes+=("$3")
  echo "== $1: $2 ${3:+($3)}"
  write_json
}
write_json() {
  {
    printf '{\n  "device": "%s",\n  "commit": "%s",\n  "date": "%s",\n  "budget_s": %s,\n  "steps": [\n' \
      "${device//\"/\'}" "$commit" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$budget"
    local i note
    for i in "${!names[@]}"; do
      note="${notes[$i]//\\/\\\\}"
      note="${note//\"/\\\"}"
      printf '    {"name": "%s", "state": "%s", "note": "%s"}%s\n' "${names[$i]}" "${states[$i]}" "$note" \
        "$([ "$i" -lt $((${#names[@]} - 1)) ] && echo ,)"
    done
    printf '  ]\n}\n'
  } > "$out/gpu_check.json.tmp" && mv "$out/gpu_check.json.tmp" "$out/gpu_check.json"
}
# record_ctest NAME LOG EXIT_CODE: ok only when every test ran and passed; a skipped test (exit
# 77: no usable GPU) makes the step SKIPPED, not ok.
record_ctest() {
  local summary skipped
  summary="$(grep -E 'tests passed|tests failed' "$2" | tail -1)"
  skipped="$(grep -c '(Skipped)' "$2" || true)"
  if [ "$3" -eq 124 ]; then record "$1" TIMEOUT "killed after the budget; $summary"
  elif [ "$3" -ne 0 ]; then record "$1" FAILED "$summary"
  elif [ "$skipped" -ne 0 ]; then record "$1" SKIPPED "$skipped skipped: is the GPU visible? $summary"
  else record "$1" ok "$summary"; fi
}

device="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
[ -n "$device" ] || device="unknown (nvidia-smi failed)"
commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "gpu_check: device ${device}; commit ${commit}; output ${out}"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
write_json

# ---- 0. driver against toolkit ----
# A CUDA 12.x runtime needs a driver for CUDA 12.0 or newer (minor-version compatibility runs our
# sm_80/sm_90a code on an older 12.y driver, not on an 11.y one); otherwise every CUDA call fails
# with cudaErrorInsufficientDriver, which is said here once instead of in every step.
driver_cuda="$(sed -n 's/.*CUDA Version: *\([0-9][0-9.]*\).*/\1/p' "$out/nvidia-smi.txt" | head -1)"
toolkit_cuda="$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9.]*\).*/\1/p' | head -1)"
if [ -n "$driver_cuda" ] && [ -n "$toolkit_cuda" ]; then
  if [ "${driver_cuda%%.*}" -lt "${toolkit_cuda%%.*}" ]; then
    record driver FAILED "the driver supports CUDA $driver_cuda, older than the toolkit's CUDA $toolkit_cuda: update the driver or use a CUDA ${driver_cuda%%.*}.x toolkit"
  else
    record driver ok "driver CUDA $driver_cuda, toolkit CUDA $toolkit_cuda"
  fi
fi

# ---- 1. build ----
if want build && begin build; then
  if timed cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGUM_CUDA=ON -DGUM_CUDA_EMULATION=OFF \
       -DCMAKE_CUDA_ARCHITECTURES="80-real;90a-real" > "$out/configure.log" 2>&1 &&
     timed cmake --build "$build" -j "$jobs" > "$out/build.log" 2>&1; then
    record build ok "sm_80 + sm_90a; $(grep -o 'NCCL [A-Z]*' "$out/configure.log" | tail -1)"
  elif [ $? -eq 124 ]; then
    record build TIMEOUT "killed after the budget: rerun to continue the build"
  else
    record build FAILED "see configure.log / build.log"
  fi
fi

# ---- 2. CUDA tests ----
test_bin="$build/tests/gum_test_cuda"
if want tests && begin cuda_tests; then
  if [ -x "$test_bin" ]; then
    (cd "$build" && timed ctest -R '^(cuda|ops):' --output-on-failure --timeout 900 --output-junit "$out/ctest_cuda.xml") \
      > "$out/ctest_cuda.log" 2>&1
    record_ctest cuda_tests "$out/ctest_cuda.log" $?
  else
    record cuda_tests FAILED "no $test_bin"
  fi
fi

# ---- 3. compute-sanitizer ----
if want memcheck && begin memcheck; then
  sanitizer="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
  if [ -x "$sanitizer" ] && [ -x "$test_bin" ]; then
    # The whole-model test is slow under memcheck; the op table's CUDA column runs every kernel.
    timed "$sanitizer" --tool memcheck --error-exitcode 3 --leak-check full "$test_bin" '~LlamaModel*' \
      > "$out/memcheck.log" 2>&1
    rc=$?
    timed "$sanitizer" --tool memcheck --error-exitcode 3 --leak-check full "$build/tests/gum_test_ops" 'cpu vs cuda*' \
      >> "$out/memcheck.log" 2>&1
    ops_rc=$?
    [ $rc -ne 0 ] || rc=$ops_rc
    errors="$(grep -E 'ERROR SUMMARY' "$out/memcheck.log" | tail -1)"
    if [ $rc -eq 0 ]; then record memcheck ok "$errors"
    elif [ $rc -eq 124 ] || [ $ops_rc -eq 124 ]; then record memcheck TIMEOUT "killed after the budget; $errors"
    else record memcheck FAILED "rc $rc; $errors"; fi
  else
    record memcheck SKIPPED "compute-sanitizer or test binary missing"
  fi
fi

# ---- 4. training runs: llama_20m on the embedded corpus, cuda bf16 and fp32 vs the CPU ----
# The model is the llama_20m preset with the embedded corpus and llama_tiny's 4096-piece
# tokenizer (no C4 copy is needed). Its loss curve on the GPU must track the fp32 CPU run over
# the first steps: fp32 within 1e-3 relative per step, bf16 within 3e-2.
train_bin="$build/bin/gum_train"
train_config="$out/llama_20m_embedded.json"
make_corpus() {  # the kit's corpus on an offline machine (its sources are not there)
  if [ -f "$root/.device-kit/data/corpus/c4-train.00000-of-00001.json.gz" ]; then
    echo "gpu_check: corpus from .device-kit (copied to data/corpus by device_setup.sh)"
  else
    scripts/make_corpus.sh
  fi
}
if ! want train || ! begin train; then
  :  # not among GUM_GPU_STEPS, or no time left
elif [ ! -x "$train_bin" ]; then
  record train SKIPPED "gum_train binary missing in $build"
elif ! (cd "$root" && make_corpus && timed "$train_bin" prepare configs/llama_tiny.json) \
       > "$out/prepare.log" 2>&1; then
  record train FAILED "corpus or prepare failed: see prepare.log"
else
  "$python" - "$root/configs/llama_tiny.json" "$train_config" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
config["model"] = {"preset": "llama_20m", "vocab_size": config["model"]["vocab_size"]}
config["training"].update({"seq_len": 256, "batch_size": 32})
config["eval"] = {"every_steps": 0, "max_tokens": 65536}
config["checkpoint"] = {"every_steps": 0, "at_end": False}
json.dump(config, open(sys.argv[2], "w"), indent=2)
PY
  cpu_steps=10
  compare_losses() {  # compare_losses REFERENCE_RUN_DIR RUN_DIR TOLERANCE: "ok ..." or "FAILED ..."
    "$python" - "$1/metrics.jsonl" "$2/metrics.jsonl" "$3" <<'PY'
import json, sys
def losses(path):
    return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if "loss" in r and "val_loss" not in r}
ref, got, tol = losses(sys.argv[1]), losses(sys.argv[2]), float(sys.argv[3])
common = sorted(set(ref) & set(got))
worst = max(abs(got[s] - ref[s]) / abs(ref[s]) for s in common) if common else float("inf")
last = max(got)
print(("ok" if common and worst <= tol else "FAILED") +
      f" max rel. loss diff over {len(common)} steps {worst:.2e} (tol {tol}); step {last} loss {got[last]:.4f}")
PY
  }
  # record_run_failure NAME LOG RC: TIMEOUT when the run was killed for time, else FAILED with the log's last line.
  record_run_failure() {
    if [ "$3" -eq 124 ]; then record "$1" TIMEOUT "killed after the budget: see $(basename "$2")"
    else record "$1" FAILED "$(tail -1 "$2" | cut -c1-110)"; fi
  }
  run_train() {  # run_train NAME STEPS ARGS...
    local name="$1" n="$2"; shift 2
    (cd "$root" && timed "$@" "$train_config" --set training.max_steps="$n" --set logging.every_steps=1 \
       --set logging.run_dir="$out/train_$name" --resume never) > "$out/train_$name.log" 2>&1
  }
  if run_train cpu_fp32 "$cpu_steps" "$train_bin" --set training.backend=cpu; then
    # fp32 with training.allow_tf32=false: TF32 GEMMs (the cuda default) would not hold 1e-3.
    for precision in fp32 bf16; do
      if run_train "cuda_$precision" "$steps" "$train_bin" --set training.backend=cuda \
           --set training.precision=$precision --set training.allow_tf32=false; then
        tolerance=$([ "$precision" = fp32 ] && echo 1e-3 || echo 3e-2)
        verdict="$(compare_losses "$out/train_cpu_fp32" "$out/train_cuda_$precision" "$tolerance")"
        if [ "$precision" = bf16 ] && grep -q 'this run computes in fp32' "$out/train_cuda_bf16.log"; then
          record train_bf16 SKIPPED "this build computes precision bf16 in fp32 (trainer warning): not a bf16 check"
        else
          record "train_$precision" "${verdict%% *}" "${verdict#* }"
        fi
      else
        record_run_failure "train_$precision" "$out/train_cuda_$precision.log" $?
      fi
    done
    # World size 1 through NCCL: the data-parallel path on one GPU. Each layer's gradients are
    # all-reduced asynchronously (an event orders the NCCL stream after backward's kernels, no
    # host sync), waited for once after backward; sharded state reduces each gradient to its
    # owner instead; the fused update waits for layer l + 1 while layer l's reduction runs.
    # The first two must track the CPU run like the plain cuda run; fused must equal unfused.
    mpirun_1=(mpirun --allow-run-as-root -np 1 "$train_bin" --set training.backend=cuda)
    nccl_run() {  # nccl_run NAME RECORD_AS REFERENCE_RUN TOLERANCE ARGS...
      local name="$1" as="$2" ref="$3" tol="$4"; shift 4
      if ! run_train "$name" 20 "${mpirun_1[@]}" "$@"; then
        record_run_failure "$as" "$out/train_$name.log" $?
      elif ! grep -q 'on 1 x cuda (nccl communicator)' "$out/train_$name.log"; then
        record "$as" FAILED "the run did not use the nccl communicator: see train_$name.log"
      else
        local verdict
        verdict="$(compare_losses "$out/train_$ref" "$out/train_$name" "$tol")"
        record "$as" "${verdict%% *}" "${verdict#* }"
      fi
    }
    nccl_run nccl_1 nccl_1gpu cpu_fp32 1e-3 --set training.allow_tf32=false
    nccl_run nccl_1_sharded nccl_sharded cpu_fp32 1e-3 --set training.allow_tf32=false --set optimizer.shard_states=true
    if run_train nccl_1_noclip 20 "${mpirun_1[@]}" --set training.grad_clip=0; then
      nccl_run nccl_1_fused nccl_fused nccl_1_noclip 1e-5 --set training.grad_clip=0 --set training.fused_update=true
    else
      record_run_failure nccl_fused "$out/train_nccl_1_noclip.log" $?
    fi
  else
    record_run_failure train "$out/train_cpu_fp32.log" $?
  fi
fi
if want nccl && begin nccl_tests; then
  (cd "$build" && timed ctest -R 'nccl' --output-on-failure --timeout 300) > "$out/ctest_nccl.log" 2>&1
  record_ctest nccl_tests "$out/ctest_nccl.log" $?
fi

# ---- 5. benchmark ----
if ! want bench || ! begin bench; then
  :  # not among GUM_GPU_STEPS (or GUM_GPU_SKIP_BENCH=1), or no time left
elif GUM_BENCH_BUILD_DIR="$build" timed "$root/scripts/bench_gpu.sh" "$out/bench" > "$out/bench.log" 2>&1; then
  record bench ok "$(ls "$out"/bench/*.json 2>/dev/null | head -1)"
elif [ $? -eq 124 ]; then
  record bench TIMEOUT "killed after the budget: see bench.log"
else
  record bench FAILED "$(grep -E 'rows failed|failed:' "$out/bench.log" | tail -1 | cut -c1-110) (see bench.log)"
fi

# ---- summary (printed last; gpu_check.json is already written) ----
failed=0
echo
echo "gpu_check summary (${device}; commit ${commit})"
printf '%-12s %-8s %s\n' step state note
printf '%-12s %-8s %s\n' ------------ -------- ----
for i in "${!names[@]}"; do
  printf '%-12s %-8s %s\n' "${names[$i]}" "${states[$i]}" "${notes[$i]}"
  case "${states[$i]}" in FAILED | TIMEOUT) failed=1 ;; esac
done
if [ -f "$out/bench/summary.txt" ]; then echo; cat "$out/bench/summary.txt"; fi
echo "results: $out/gpu_check.json"
exit $failed

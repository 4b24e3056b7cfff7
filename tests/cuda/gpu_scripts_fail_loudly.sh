#!/usr/bin/env bash
# scripts/bench_gpu.sh and scripts/gpu_check.sh must fail loudly, without a GPU too: a broken
# config makes every gum_train row of the benchmark fail, so the benchmark exits non-zero and
# names the error, gpu_check records its bench step FAILED in gpu_check.json and exits non-zero;
# a call whose time budget is spent records its steps as not run and fails.
# Usage: gpu_scripts_fail_loudly.sh SOURCE_DIR BUILD_DIR SCRATCH_DIR
set -uo pipefail
src="$1" build="$2" scratch="$3"
rm -rf "$scratch" && mkdir -p "$scratch"
fail() { echo "FAIL: $*" >&2; exit 1; }
export GUM_BENCH_MODELS=llama_20m GUM_BENCH_SKIP_TORCH=1 GUM_BENCH_PREPARE=0
export GUM_BENCH_SET="training.max_stpes=1"  # a misspelt key: gum_train exits 2 naming it

GUM_BENCH_BUILD_DIR="$build" "$src/scripts/bench_gpu.sh" "$scratch/bench" > "$scratch/bench.log" 2>&1
rc=$?
cat "$scratch/bench.log"
[ $rc -eq 1 ] || fail "bench_gpu.sh exited $rc with every row failed (expected 1)"
grep -q "2 of 2 rows failed" "$scratch/bench.log" || fail "bench_gpu.sh did not count the failed rows"
[ "$(grep -c "failed (exit 2): gum_train: usage error: --set training.max_stpes=1: unknown key" \
     "$scratch/bench/summary.txt")" -eq 2 ] || fail "the summary does not name the config error in both rows"

GUM_GPU_BUILD_DIR="$build" GUM_GPU_STEPS=bench "$src/scripts/gpu_check.sh" "$scratch/check" > "$scratch/check.log" 2>&1
rc=$?
cat "$scratch/check.log"
[ $rc -ne 0 ] || fail "gpu_check.sh exited 0 although the benchmark failed"
python3 - "$scratch/check/gpu_check.json" <<'PY' || fail "gpu_check.json does not record the failed bench step"
import json, sys
steps = {s["name"]: s for s in json.load(open(sys.argv[1]))["steps"]}
assert steps["bench"]["state"] == "FAILED", steps
assert "rows failed" in steps["bench"]["note"], steps
PY

GUM_GPU_BUDGET_S=0 GUM_GPU_BUILD_DIR="$build" GUM_GPU_STEPS=tests,bench "$src/scripts/gpu_check.sh" "$scratch/spent" \
  > "$scratch/spent.log" 2>&1
rc=$?
cat "$scratch/spent.log"
[ $rc -ne 0 ] || fail "gpu_check.sh exited 0 with no time to run its steps"
python3 - "$scratch/spent/gpu_check.json" <<'PY' || fail "gpu_check.json does not record the steps left unrun"
import json, sys
steps = json.load(open(sys.argv[1]))["steps"]
assert [(s["name"], s["state"]) for s in steps] == [("cuda_tests", "FAILED"), ("bench", "FAILED")], steps
assert all("not run" in s["note"] for s in steps), steps
PY
echo "ok: bench_gpu.sh and gpu_check.sh fail loudly"

#!/usr/bin/env bash
# Plants bugs, one at a time, in a copy of the CUDA backend's sources and runs the emulated CUDA
# tests against each (docs/cuda_verification.md): a planted bug the suite does not fail on is a
# hole in the tests or in the emulator. The sources in src/ are never touched: the emulated backend
# is built from the copy (GUM_CUDA_EMU_SOURCE_DIR) in its own build folder.
# Usage: scripts/cuda_mutation_check.sh [NAME...]   (default: every mutation below)
#   GUM_MUTATION_BUILD_DIR  build folder (default: build-mutation); extra cmake arguments in
#   GUM_MUTATION_CMAKE_ARGS (e.g. ccache launchers).
# Prints a table (mutation, caught or missed, the first failing test or the emulator's error);
# exits non-zero when fewer than 9 mutations are caught.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${GUM_MUTATION_BUILD_DIR:-$root/build-mutation}"
work="$build/mutated"
mkdir -p "$build"

# name ^ file under src/backend ^ exact text (must occur once) ^ replacement. "\n" is a newline.
mutations=(
  "block_sum: second barrier removed^cuda/device_utils.cuh^  if (lane == 0) scratch[warp] = v;\n  __syncthreads();\n  if (warp == 0) {\n    T total^  if (lane == 0) scratch[warp] = v;\n  if (warp == 0) {\n    T total"
  "warp_sum: butterfly starts at offset 8^cuda/device_utils.cuh^  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync^  for (int offset = 8; offset > 0; offset >>= 1) v += __shfl_xor_sync"
  "block_max_sum: barrier inside if (warp == 0)^cuda/device_utils.cuh^    if (lane == 0) scratch[0] = total;\n  }\n  __syncthreads();\n  return scratch[0];\n}\n\n}^    if (lane == 0) scratch[0] = total;\n    __syncthreads();\n  }\n  __syncthreads();\n  return scratch[0];\n}\n\n}"
  "flash forward: lane 31 leaves before the warp reductions^cuda/attention.cu^  if (!query_row_of_warp(s, q_row)) return;\n  const int lane = threadIdx.x & 31;\n  const int t = q_row.t, h = q_row.h, kv = q_row.kv;\n  const int64_t b = q_row.b, row = q_row.index;\n  const int64_t W = s.width();\n  const int start^  if (!query_row_of_warp(s, q_row) || (threadIdx.x & 31) == 31) return;\n  const int lane = threadIdx.x & 31;\n  const int t = q_row.t, h = q_row.h, kv = q_row.kv;\n  const int64_t b = q_row.b, row = q_row.index;\n  const int64_t W = s.width();\n  const int start"
  "embedding backward: off-by-one in the ballot prefix^cuda/embedding.cu^__popc(ballot & ((1u << lane) - 1u))^__popc(ballot & ((2u << lane) - 1u))"
  "embedding backward: list barrier removed^cuda/embedding.cu^    list_size += total;\n    __syncthreads();^    list_size += total;"
  "rmsnorm forward: reads one access past the row^cuda/rmsnorm.cu^  for (int64_t c = int64_t(threadIdx.x) * V; c < C; c += int64_t(blockDim.x) * V) {\n      float v[V];\n      load_vec(v, x, base + c);^  for (int64_t c = int64_t(threadIdx.x) * V; c <= C; c += int64_t(blockDim.x) * V) {\n      float v[V];\n      load_vec(v, x, base + c);"
  "add_rmsnorm: the sum is normalised before rounding to the storage type^cuda/rmsnorm.cu^v[k] = to_float(from_float<T>(v[k] + d[k]));^v[k] = v[k] + d[k];"
  "rmsnorm backward: a block's dweight partial keeps only its last row^cuda/rmsnorm.cu^dweight_sum[c + k] += g[k] * xv[k] * rf;^dweight_sum[c + k] = g[k] * xv[k] * rf;"
  "load_vec: a pack's elements in reverse order^cuda/device_utils.cuh^for (int k = 0; k < V; ++k) out[k] = to_float(packed.v[k]);^for (int k = 0; k < V; ++k) out[k] = to_float(packed.v[V - 1 - k]);"
  "swiglu backward: dup written over dgate^cuda/swiglu.cu^store_vec(dgate_up, n * 2 * F + F + f, du);^store_vec(dgate_up, n * 2 * F + f, du);"
  "rope: every pair of a pack rotates by the first pair's sine^cuda/rope.cu^sin_a = inverse ? -cs[2 * k + 1] : cs[2 * k + 1];^sin_a = inverse ? -cs[1] : cs[1];"
  "cross_entropy_fused: target logit read after the barrier (in-place writes may precede it)^cuda/cross_entropy.cu^store(losses, n, logf(stats.sum) + stats.max - target_logit);^store(losses, n, logf(stats.sum) + stats.max - to_float(logits[base + target]));"
  "cross_entropy: one-hot subtracted at the pack's first element only^cuda/cross_entropy.cu^(j + k == target ? 1.0f : 0.0f)^(j == target ? 1.0f : 0.0f)"
  "add: the tail's last element skipped^cuda/elementwise.cu^  if (tail < n) out[tail]^  if (tail + 1 < n) out[tail]"
  "transpose: barrier between tile write and read removed^cuda/linalg.cu^  }\n  __syncthreads();\n  for (int k = threadIdx.y; k < 32; k += blockDim.y) {^  }\n  for (int k = threadIdx.y; k < 32; k += blockDim.y) {"
  "svd_sign: arg-max reduction starts at a quarter of the block^cuda/linalg.cu^int stride = blockDim.x / 2;^int stride = blockDim.x / 4;"
  "gemm: wrong leading dimension of B^cuda/gemm.cpp^checked_int(ldb, op, \"ldb\"), a, cuda_type(a_type, op)^checked_int(lda, op, \"ldb\"), a, cuda_type(a_type, op)"
  "attention backward: dqkv not zeroed before accumulation^cuda/attention.cu^  GUM_CUDA_CHECK(cudaMemsetAsync(dqkv.data, 0, dqkv.nbytes(), stream_));\n^"
  "flash_wmma forward: the running output is not rescaled by the new maximum^cuda/attention_wmma.cu^    for (int d = me.half * kDp / 2; d < (me.half + 1) * kDp / 2; ++d) sh.o[row * kDp + d] *= correction;\n^"
  "flash_wmma forward: barrier between loading K/V and reading them removed^cuda/attention_wmma.cu^W, keys, s.D);\n    __syncthreads();\n    rows_times_tile_t<kChunks>(scores, q, sh.k);^W, keys, s.D);\n    rows_times_tile_t<kChunks>(scores, q, sh.k);"
  "flash_wmma dq: delta not subtracted from dP^cuda/attention_wmma.cu^(dprobs[me.row * kScoreLd + col] - sh.delta[row])^(dprobs[me.row * kScoreLd + col])"
  "flash_wmma dk/dv: a query does not attend to its own key^cuda/attention_wmma.cu^sh.start[col] <= u && u <= t;^sh.start[col] <= u && u < t;"
  "copy_to_host: no stream synchronisation before the host reads^cuda/cuda_backend.cpp^src.nbytes(), cudaMemcpyDeviceToHost, stream_));\n  synchronize();^src.nbytes(), cudaMemcpyDeviceToHost, stream_));\n  check_device_status();"
)

selected=("$@")
wanted() {
  [ ${#selected[@]} -eq 0 ] && return 0
  for s in "${selected[@]}"; do [ "$s" = "$1" ] && return 0; done
  return 1
}

# The copy keeps the sources' times, so only a mutated file (restored with a fresh time) rebuilds.
# A file mutated by an earlier run was last built mutated: it is listed in $mutated_files and
# touched here, so it rebuilds from the restored copy.
rm -rf "$work"
mkdir -p "$work/backend"
cp -rp "$root/src/backend/cuda" "$root/src/backend/op_checks.h" "$work/backend/"
mutated_files="$build/mutated_files"
if [ -f "$mutated_files" ]; then
  sort -u "$mutated_files" | while read -r f; do touch "$work/backend/$f"; done
fi

# apply FILE OLD NEW: replaces the one occurrence of OLD ("\n" = newline); fails when not exactly one.
apply() {
  python3 - "$work/backend/$1" "$2" "$3" <<'EOF'
import sys
path, old, new = sys.argv[1], sys.argv[2].replace("\\n", "\n"), sys.argv[3].replace("\\n", "\n")
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"{path}: the text to mutate occurs {text.count(old)} times (must be once)")
open(path, "w").write(text.replace(old, new))
EOF
}

# shellcheck disable=SC2086
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGUM_CUDA_EMULATION=ON \
  -DGUM_CUDA_EMU_SOURCE_DIR="$work/backend/cuda" ${GUM_MUTATION_CMAKE_ARGS:-} > "$build/configure.log" 2>&1 ||
  { cat "$build/configure.log"; exit 1; }
targets=(gum_test_ops gum_test_cuda gum_test_train gum_train_app)
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" > "$build/build.log" 2>&1 ||
  { tail -n 30 "$build/build.log"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# The fast op tests (the op table and tests/cuda) first, then model, decoder and training; forward,
# then reverse schedule.
suites=("-R ^(ops:cpu.vs.cuda|cuda:) -E Llama" "-R ^cuda:Llama|backend.cuda")
(cd "$build" && ctest -R "^(ops:cpu.vs.cuda|cuda:)|backend.cuda" -j "$(nproc)" > "$build/baseline.log" 2>&1) ||
  { echo "cuda_mutation_check: the unmutated suite fails (see $build/baseline.log)"; exit 1; }

results=()
caught=0
total=0
for m in "${mutations[@]}"; do
  IFS='^' read -r name file old new <<< "$m"
  wanted "$name" || continue
  total=$((total + 1))
  echo "$file" >> "$mutated_files"
  apply "$file" "$old" "$new"
  log="$build/mutation_${total}.log"
  verdict="missed"
  detail="all emulated CUDA tests pass"
  if ! cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" > "$log" 2>&1; then
    verdict="caught"
    detail="does not build"
  else
    for schedule in forward reverse; do
      for suite in "${suites[@]}"; do
        # shellcheck disable=SC2086
        if ! (cd "$build" && GUM_CUDA_EMU_SCHEDULE=$schedule ctest $suite -j "$(nproc)" --output-on-failure \
              --stop-on-failure >> "$log" 2>&1); then
          verdict="caught"
          first="$(grep -m1 -E 'Test +#[0-9]+: .*\*\*\*' "$log" | sed -E 's/.*Test +#[0-9]+: //; s/ \.+.*//' || true)"
          error="$(grep -m1 -oE 'gum_cuda_emu: .*|AddressSanitizer: [a-z-]+|cuBLAS [^)]*' "$log" | cut -c1-160 || true)"
          detail="$schedule: ${first:-?}${error:+; $error}"
          break 2
        fi
      done
    done
  fi
  cp "$root/src/backend/$file" "$work/backend/$file"
  [ "$verdict" = caught ] && caught=$((caught + 1))
  results+=("| $name | $verdict | $detail |")
  echo "cuda_mutation_check: $name: $verdict ($detail)"
done

echo
echo "| planted bug | result | first evidence |"
echo "|---|---|---|"
printf '%s\n' "${results[@]}"
echo
echo "cuda_mutation_check: $caught of $total planted bugs caught"
[ "$total" -lt 10 ] || [ "$caught" -ge 9 ]

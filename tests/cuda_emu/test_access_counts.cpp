// The emulator's per-launch traffic counts (tools/cuda_emu/src/access.cpp) on kernels whose bytes
// are known by hand: sectors moved per block, distinct bytes required per launch, shared memory
// and fiber stacks left out, tensor-core FLOPs from wmma::mma_sync. This file is compiled with the
// access instrumentation, as the backend's kernels are.
#include <mma.h>

#include <catch2/catch.hpp>
#include <vector>

#include "emu_test_util.h"

namespace {

using namespace gum_emu_test;

constexpr int kRows = 4, kCols = 64;  // a row of 64 floats: 256 bytes, 8 sectors

// y[r] = x[r] * w, one block per row; `passes` reads of x (a two-pass kernel rereads its row).
__global__ void scale_rows_kernel(float* y, const float* x, const float* w, int passes) {
  const float* row = x + blockIdx.x * kCols;
  for (int c = threadIdx.x; c < kCols; c += blockDim.x) {
    float v = 0.0f;
    for (int p = 0; p < passes; ++p) v += row[c];
    y[blockIdx.x * kCols + c] = v * w[c];
  }
}

// Reads and writes the same floats: both count (an instrumentation that drops a store to an
// address it just checked for a load would undercount every in-place update).
__global__ void double_in_place_kernel(float* x) { x[threadIdx.x] = 2.0f * x[threadIdx.x]; }

// Thread t reads element 8 t: every float sits in a sector of its own.
__global__ void strided_read_kernel(float* out, const float* x) { out[threadIdx.x] = x[8 * threadIdx.x]; }

// Stages its input through shared memory and a local array; only the global accesses count.
__global__ void staged_copy_kernel(float* out, const float* x) {
  __shared__ float tile[32];
  float local[2];
  local[threadIdx.x & 1] = x[threadIdx.x];
  tile[threadIdx.x] = local[threadIdx.x & 1];
  __syncthreads();
  out[threadIdx.x] = tile[31 - threadIdx.x];
}

__global__ void one_mma_kernel(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b) {
  using namespace nvcuda;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
  wmma::fill_fragment(fc, 0.0f);
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(d, fc, 16, wmma::mem_row_major);
}

// Counts the accesses of the launches of `kernel` between its construction and counts().
class Counted {
 public:
  explicit Counted(const char* kernel) : kernel_(kernel) {
    gum_emu::set_access_counting(true);
    before_ = totals();
  }
  ~Counted() { gum_emu::set_access_counting(false); }
  gum_emu::AccessCount counts() const {
    REQUIRE(launch_error().first == cudaSuccess);
    const gum_emu::AccessCount after = totals();
    return {after.moved_bytes - before_.moved_bytes, after.read_bytes - before_.read_bytes,
            after.written_bytes - before_.written_bytes, after.tensor_flops - before_.tensor_flops};
  }

 private:
  gum_emu::AccessCount totals() const {
    const gum_emu::Stats s = gum_emu::stats();
    const auto it = s.kernels.find(kernel_);
    return it == s.kernels.end() ? gum_emu::AccessCount{} : it->second.accesses;
  }
  const char* kernel_;
  gum_emu::AccessCount before_;
};

}  // namespace

TEST_CASE("emulator: launches count the sectors each block moves and the distinct bytes they require") {
  if (!gum_emu::accesses_instrumented()) {
    WARN("this build does not instrument kernel accesses (AddressSanitizer or not GCC)");
    return;
  }
  DeviceBuffer<float> x(kRows * kCols), w(kCols), y(kRows * kCols);
  x.upload(std::vector<float>(kRows * kCols, 1.0f));
  w.upload(std::vector<float>(kCols, 2.0f));
  for (int passes : {1, 2}) {
    const Counted counted("scale_rows_kernel");
    LAUNCH(scale_rows_kernel, kRows, 32)(y.data, x.data, w.data, passes);
    const gum_emu::AccessCount c = counted.counts();
    // Each block: its row of x, all of w and its row of y, 8 sectors each; a reread is free.
    CHECK(c.moved_bytes == kRows * 3 * 8 * 32);
    CHECK(c.read_bytes == (kRows + 1) * kCols * 4);
    CHECK(c.written_bytes == kRows * kCols * 4);
  }
  CHECK(y.host() == std::vector<float>(kRows * kCols, 4.0f));

  const Counted counted_in_place("double_in_place_kernel");
  LAUNCH(double_in_place_kernel, 1, 64)(w.data);
  const gum_emu::AccessCount in_place = counted_in_place.counts();
  CHECK(in_place.read_bytes == kCols * 4);
  CHECK(in_place.written_bytes == kCols * 4);
  CHECK(in_place.moved_bytes == 2 * 8 * 32);

  DeviceBuffer<float> out(32);
  const Counted counted_strided("strided_read_kernel");
  LAUNCH(strided_read_kernel, 1, 32)(out.data, x.data);
  const gum_emu::AccessCount strided = counted_strided.counts();
  CHECK(strided.read_bytes == 32 * 4);
  CHECK(strided.moved_bytes == 32 * 32 + 4 * 32);  // a sector per float read; 128 bytes stored
  CHECK(strided.written_bytes == 32 * 4);

  const Counted counted_staged("staged_copy_kernel");
  LAUNCH(staged_copy_kernel, 1, 32)(out.data, x.data);
  const gum_emu::AccessCount staged = counted_staged.counts();
  CHECK(staged.read_bytes == 32 * 4);
  CHECK(staged.written_bytes == 32 * 4);
  CHECK(staged.moved_bytes == 8 * 32);
}

TEST_CASE("emulator: accesses are counted only when asked for (GUM_CUDA_EMU_STATS, set_access_counting)") {
  gum_emu::set_access_counting(false);
  DeviceBuffer<float> x(256), out(32);
  const auto moved = [] { return gum_emu::stats().kernels["strided_read_kernel"].accesses.moved_bytes; };
  const auto before = moved();
  LAUNCH(strided_read_kernel, 1, 32)(out.data, x.data);
  CHECK(moved() == before);
}

TEST_CASE("emulator: wmma::mma_sync counts 2 M N K tensor-core FLOPs per warp") {
  if (!gum_emu::accesses_instrumented()) return;
  DeviceBuffer<__nv_bfloat16> a(256), b(256);
  a.upload(std::vector<__nv_bfloat16>(256, __float2bfloat16(1.0f)));
  b.upload(std::vector<__nv_bfloat16>(256, __float2bfloat16(1.0f)));
  DeviceBuffer<float> d(256);
  const Counted counted("one_mma_kernel");
  LAUNCH(one_mma_kernel, 2, 32)(d.data, a.data, b.data);
  const gum_emu::AccessCount c = counted.counts();
  CHECK(c.tensor_flops == 2 * 2.0 * 16 * 16 * 16);
  CHECK(c.read_bytes == 2 * 256 * 2);
  CHECK(c.written_bytes == 256 * 4);
  CHECK(d.host() == std::vector<float>(256, 16.0f));
}
